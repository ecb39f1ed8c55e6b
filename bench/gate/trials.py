"""The gate's measurements: trials into a run folder (``trials.csv`` + ``manifest.json``).

A **trial** (:func:`run_trial`) starts a fresh server (``python -m server``, the scenario
with :data:`bench._support.servers.SCENARIO_OVERRIDES`, then ``--set``) and measures, in
an order rotated by the trial index, with one run of the machine-speed probe
(:mod:`bench.gate.probe`) before each server case and one after:

* ``echo_<codec>_cpu_us_per_msg`` — server CPU per message, one connection (Send → Ack);
* ``fanout_<codec>_cpu_us_per_delivery`` — server CPU per delivery, a room of
  :data:`ROOM_SIZE`;
* ``deliver_<codec>_bytes`` — our encoded chat ``Deliver`` (deterministic);
* ``<codec>_encode_ratio`` / ``<codec>_decode_ratio`` — our codec's time over the bare
  library path of the same format (:mod:`bench.micro.codec_bench`), measured side by side.

**CPU sets** (:mod:`bench._support.cpus`, ``--server-cpus`` / ``--generator-cpus``): the
server runs on the server's set, and so do the probe and the codec timings (this process
pinned there meanwhile: they time the server's CPUs and the server's work); each load
client runs on the generator's (this process pinned there while it runs, so the client
inherits the set). The manifest records both sets (``cpus``) and, per trial, each side's
CPU while the clients ran (``cpu_use``: % of one core).

The server figures come from the machinery of ``bench server-overhead``
(:mod:`bench.micro.loadclient` reads the server's CPU from ``/proc``). A fresh server per
trial makes the trials independent, as the test assumes: one long-lived process would
carry its own memory layout and state into every trial.
"""

from __future__ import annotations

import resource
import statistics
import time
import timeit
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._support.clients import run_case
from bench._support.cpus import CpuPlan, pinned, plan_cpus
from bench._support.procstat import process_cpu_s
from bench._support.servers import (
    SCENARIO_OVERRIDES,
    bench_scenario,
    start_our_server,
    stop_server,
)
from bench.gate.metrics import (
    METRICS,
    PROBES_PER_GAP,
    ROOM_SIZE,
    TRIAL_COLUMNS,
    TRIALS_FILE,
)
from bench.gate.probe import REFERENCE_CPU_S, probe_once
from bench.micro import codec_bench
from bench.micro.codec_bench import sample_envelopes
from chatcap.protocol.codec import CODECS
from chatcap.protocol.messages import Envelope
from chatcap.results import (
    new_manifest,
    write_manifest,
    write_table,
)
from chatcap.scenario import CODEC_NAMES, to_toml


@dataclass(frozen=True)
class TrialSizes:
    echo_messages: int = 10_000
    fanout_messages: int = 2_500
    codec_repeat: int = 7
    codec_target_s: float = 0.005
    timeout_s: float = 60.0


QUICK_SIZES = TrialSizes(
    echo_messages=1_000, fanout_messages=100, codec_repeat=1, codec_target_s=0.001
)
SERVER_CASES = tuple((case, c) for case in ("echo", "fanout") for c in CODEC_NAMES)


def run_trial(
    run_id: str,
    index: int,
    scenario_path: Path,
    workdir: Path,
    sizes: TrialSizes,
    cpus: CpuPlan | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One trial (see the module docstring): a row of ``trials.csv``, and each side's CPU
    over its server cases (:class:`CpuMeter`) for the manifest."""
    cpus = cpus or plan_cpus()
    row: dict[str, Any] = {"run_id": run_id, "trial": index}
    row["started_utc"] = datetime.now(UTC).isoformat(timespec="seconds")
    probes: list[float] = []
    server = start_our_server(scenario_path, workdir, f"{run_id}-t{index}", cpus=cpus.server)
    meter = CpuMeter(server.pid)
    try:
        shift = index % len(SERVER_CASES)
        for case, codec in SERVER_CASES[shift:] + SERVER_CASES[:shift]:
            with pinned(cpus.server):  # the probe times the server's CPUs
                probes += [probe_once() for _ in range(PROBES_PER_GAP)]
            room = 1 if case == "echo" else ROOM_SIZE
            count = sizes.echo_messages if case == "echo" else sizes.fanout_messages
            tag = f"t{index}-{case}-{codec}"  # a fresh server per trial: unique enough
            with pinned(cpus.generator), meter:  # the load client inherits this set
                outcome = run_case(server, codec, room, count, sizes.timeout_s, tag)
            cpu_us = float(outcome["server_cpu_s"]) * 1e6
            if case == "echo":
                row[f"echo_{codec}_cpu_us_per_msg"] = cpu_us / int(outcome["messages"])
            else:
                row[f"fanout_{codec}_cpu_us_per_delivery"] = cpu_us / int(outcome["deliveries"])
        with pinned(cpus.server):
            probes += [probe_once() for _ in range(PROBES_PER_GAP)]
    finally:
        stop_server(server)
    with pinned(cpus.server):  # our codecs are the server's work
        row.update(codec_figures(sizes))
    row["probe_cpu_ms"] = statistics.median(probes) * 1e3
    row["speed_factor"] = statistics.median(probes) / REFERENCE_CPU_S
    return row, {"trial": index, **meter.use()}


class CpuMeter:
    """Each side's CPU while the load clients run (a ``with`` block each): the server
    process's (``/proc``) and the load clients' (this process's reaped children), and
    the wall time, so :meth:`use` gives each as % of one core."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.wall_s = self.server_cpu_s = self.client_cpu_s = 0.0

    def __enter__(self) -> None:
        self._start = (time.monotonic(), process_cpu_s(self.server_pid), _children_cpu_s())

    def __exit__(self, *exc: object) -> None:
        wall, server, client = self._start
        self.wall_s += time.monotonic() - wall
        self.server_cpu_s += process_cpu_s(self.server_pid) - server
        self.client_cpu_s += _children_cpu_s() - client

    def use(self) -> dict[str, float | None]:
        if self.wall_s <= 0:
            return {"server_cpu_pct": None, "client_cpu_pct": None}
        return {
            "server_cpu_pct": round(100.0 * self.server_cpu_s / self.wall_s, 1),
            "client_cpu_pct": round(100.0 * self.client_cpu_s / self.wall_s, 1),
        }


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def codec_figures(sizes: TrialSizes) -> dict[str, Any]:
    """Bytes of our chat ``Deliver`` per codec, and our encode/decode time over the bare
    library path of the same format (:data:`bench.micro.codec_bench.BARE_REFERENCE`).

    Timed in CPU seconds (``time.process_time``), ours and bare taking turns within each
    repeat; the figure is the median of the per-repeat ratios. On a shared machine wall
    clock loops vary by ±30 % when the core is taken away; CPU time by ~1 %.
    """
    msg = sample_envelopes()["deliver_chat"]
    impls = {impl.name: impl for impl in codec_bench._impls()}  # the benchmark's own rows
    out: dict[str, Any] = {}
    for fmt in CODEC_NAMES:
        out[f"deliver_{fmt}_bytes"] = len(CODECS[fmt].encode(msg))
        ours, bare = impls[f"ours {fmt}"], impls[codec_bench.BARE_REFERENCE[fmt]]
        for op in ("encode", "decode"):
            pair = [_op_timer(ours, op, msg), _op_timer(bare, op, msg)]
            loops = [codec_bench._loops_for(t, sizes.codec_target_s) for t in pair]
            ratios = []
            for _ in range(sizes.codec_repeat):
                ours_s, bare_s = (t.timeit(n) / n for t, n in zip(pair, loops, strict=True))
                ratios.append(ours_s / bare_s)
            out[f"{fmt}_{op}_ratio"] = statistics.median(ratios)
    return out


def _op_timer(impl: codec_bench.Impl, op: str, msg: Envelope) -> timeit.Timer:
    encode_input = impl.encode_input(msg)
    fn, arg = (
        (impl.encode, encode_input) if op == "encode" else (impl.decode, impl.encode(encode_input))
    )
    return timeit.Timer("fn(arg)", globals={"fn": fn, "arg": arg}, timer=time.process_time)


@dataclass
class Config:
    """One server configuration being measured: its scenario, where it runs, and the
    trial rows (and each trial's CPU use) so far."""

    name: str
    run_id: str
    sets: list[str]
    scenario_path: Path
    scenario: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    cpus: CpuPlan = field(default_factory=plan_cpus)
    cpu_use: list[dict[str, Any]] = field(default_factory=list)


def prepare_config(
    name: str,
    run_id: str,
    scenario_file: str,
    sets: Sequence[str],
    workdir: Path,
    cpus: CpuPlan | None = None,
) -> Config:
    """The scenario with the bench overrides and ``sets``, written for the server;
    ``cpus``: the server's and the load clients' CPU sets (default :func:`plan_cpus`)."""
    scenario = bench_scenario(scenario_file, sets)
    path = workdir / f"{run_id}.toml"
    path.write_text(to_toml(scenario, comments=False))
    return Config(name, run_id, list(sets), path, scenario.to_dict(), cpus=cpus or plan_cpus())


def run_interleaved(
    configs: Sequence[Config], trials: int, sizes: TrialSizes, workdir: Path
) -> None:
    """``trials`` trials of every config, taking turns, so drift hits them alike."""
    for index in range(trials):
        for config in configs:
            row, use = run_trial(
                config.run_id, index, config.scenario_path, workdir, sizes, config.cpus
            )
            config.rows.append(row)
            config.cpu_use.append(use)
            say(
                f"[regress] {config.name} trial {index + 1}/{trials}: echo "
                f"{row['echo_json_cpu_us_per_msg']:.1f}/{row['echo_protobuf_cpu_us_per_msg']:.1f}"
                f" µs/msg, fan-out {row['fanout_json_cpu_us_per_delivery']:.2f}/"
                f"{row['fanout_protobuf_cpu_us_per_delivery']:.2f} µs/delivery (json/protobuf), "
                f"speed factor {row['speed_factor']:.3f}"
            )


def write_run_folder(
    out: Path, config: Config, command: Sequence[str], created: datetime, sizes: TrialSizes
) -> None:
    """``manifest.json`` + ``trials.csv`` of one configuration."""
    manifest = new_manifest(
        config.run_id,
        list(command),
        created.isoformat(),
        scenario=config.scenario,
        seed=config.scenario.get("seed"),
        trials=len(config.rows),
        sizes=sizes.__dict__,
        room_size=ROOM_SIZE,
        scenario_overrides=SCENARIO_OVERRIDES,
        extra_overrides=config.sets,
        metrics={m.name: {"kind": m.kind, "unit": m.unit, "doc": m.doc} for m in METRICS},
        normalisation="cpu metrics ÷ speed_factor (bench/gate/probe.py); see bench/gate/",
        probe_reference_cpu_s=REFERENCE_CPU_S,
        cpus=config.cpus.describe() | {"server_cores": config.cpus.server_cores()},
        cpu_use=config.cpu_use,
    )
    write_manifest(out, manifest)
    write_table(out / TRIALS_FILE, config.rows, TRIAL_COLUMNS)


def cpus_line(cpus: CpuPlan) -> str:
    """``server on CPUs 1, load clients on CPUs 0`` (and why not isolated, if not)."""
    sets = cpus.describe()
    line = f"server on CPUs {sets['server_cpus']}, load clients on CPUs {sets['generator_cpus']}"
    return f"{line} ({cpus.note})" if cpus.note else line


def say(text: str) -> None:
    print(text, flush=True)
