"""Synthetic measured run folders for the notebook tests, in the results schema.

The figures are made up but shaped like a server: goodput follows the offered load up to
``capacity_per_s`` and falls short above it, latency grows as the load nears it. Written
with ``chatcap.results.write_run``, so they pass the same validation as a real run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench._support.histo import HistogramSet
from chatcap.results import new_manifest, write_run
from chatcap.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]


def measured_run(
    run_dir: Path,
    *,
    loads: Sequence[float] = (50.0, 100.0, 200.0, 400.0),
    codecs: Sequence[str] = ("json", "protobuf"),
    replications: int = 2,
    capacity_per_s: float = 300.0,
    scenario_file: str = "scenarios/baseline.toml",
    server_side: bool = True,
    histograms: bool = True,
    samples: bool = False,
    points_in_manifest: bool = True,
    stages: bool = False,
) -> Path:
    """Write a measured run folder and return it; ``stages``: the rows carry the server's
    ack mean and its stages of a Send (``server_stage_*_ms``), :data:`STAGE_SHARES` of it."""
    scenario = load_scenario(ROOT / scenario_file)
    rate = scenario.workload.send_rate_per_user_per_s
    rows: list[dict[str, Any]] = []
    points: list[dict[str, Any]] = []
    for rep in range(replications):
        for load in loads:
            for codec in codecs:
                users = max(1, round(load / rate))
                name = f"{codec}-{load:g}-r{rep}"
                points.append(
                    {"point": name, "codec": codec, "replication": rep, "seed": rep,
                     "offered_per_s": load, "users": users,
                     "send_rate_per_user_per_s": load / users}
                )  # fmt: skip
                rows.append(_row(run_dir.name, codec, load, rep, capacity_per_s, server_side))
                if stages:
                    rows[-1].update(_stages(rows[-1]["server_ack_p50_ms"] * 1.1))
                pdir = run_dir / "points" / name
                if histograms:
                    _chat_json(pdir, codec, rows[-1])
                if samples:
                    _samples(pdir, rows[-1]["acked_per_s"])
    manifest = new_manifest(
        run_dir.name,
        ["python", "-m", "bench", "run", "--scenario", scenario_file],
        "2026-11-26T00:00:00+00:00",
        scenario=scenario.to_dict(),
        seed=scenario.seed,
        codecs=list(codecs),
        loads=list(loads),
        repeat=replications,
        duration_s=6.0,
        warmup_s=1.0,
        points=points if points_in_manifest else None,
    )
    return write_run(run_dir, manifest, rows)


def _row(
    run_id: str, codec: str, load: float, rep: int, capacity: float, server_side: bool
) -> dict[str, Any]:
    rho = min(load / capacity, 0.99)
    slow = 1.2 if codec == "json" else 1.0
    p50 = slow * 0.5 / (1 - rho) + 0.01 * rep
    row: dict[str, Any] = {
        "run_id": run_id, "scenario": "baseline", "source": "measured", "codec": codec,
        "replication": rep, "seed": rep, "offered_per_s": load,
        "acked_per_s": min(load, capacity) * (1 - 0.001 * rep),
        "delivered_per_s": min(load, capacity) * 9, "ack_mean_ms": p50 * 1.2,
        "ack_p50_ms": p50 + 1.0, "ack_p99_ms": 5 * p50 + 2.0,
        "deliver_p50_ms": p50 + 0.8, "deliver_p99_ms": 5 * p50 + 1.5,
        "error_rate": 0.0 if load < capacity else 0.05,
        "server_cpu_us_per_msg": 70.0 * slow, "bytes_per_msg": 300.0 if codec == "json" else 200.0,
        "generator_bound": False,
    }  # fmt: skip
    if server_side:
        row["server_ack_p50_ms"] = p50
        row["server_ack_p99_ms"] = 5 * p50
    return row


STAGE_SHARES = {"ingress": 0.1, "queue": 0.15, "commit": 0.4, "fanout": 0.15, "ack": 0.05}
"""Each stage's share of the synthetic server's ack mean (the rest: 15 %)."""


def _stages(ack_mean_ms: float) -> dict[str, float]:
    out = {f"server_stage_{s}_ms": share * ack_mean_ms for s, share in STAGE_SHARES.items()}
    return out | {"server_ack_mean_ms": ack_mean_ms}


def _chat_json(pdir: Path, codec: str, row: dict[str, Any]) -> None:
    hists = HistogramSet()
    for name, p50 in (("ack", row["ack_p50_ms"]), ("deliver", row["deliver_p50_ms"])):
        for i in range(200):  # an exponential-ish spread around the median
            q = (i + 0.5) / 200
            hists.record_us(name, codec, 1000 * p50 * -math.log(1 - q) / math.log(2))
    pdir.mkdir(parents=True, exist_ok=True)
    (pdir / "chat.json").write_text(json.dumps({"histograms": hists.to_json()}))


def _samples(pdir: Path, acked_per_s: float) -> None:
    pdir.mkdir(parents=True, exist_ok=True)
    lines = ["t_s,server_cpu_s,acks,frames_received,connections"]
    acks = frames = 0.0
    for t in range(31):  # a counter that stops growing during the outage (12 s to 20 s)
        acks += 0.0 if 12 < t <= 20 else acked_per_s
        frames += acked_per_s
        lines.append(f"{t}.0,{0.1 * t},{acks},{frames},100")
    (pdir / "samples.csv").write_text("\n".join(lines) + "\n")
