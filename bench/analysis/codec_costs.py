"""JSON against Protobuf: :func:`envelope_sizes`, :func:`deliver_sizes`, :func:`codec_costs`,
:func:`latency_histograms`, :func:`latency_figures`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from bench.analysis.loading import CODECS
from bench.analysis.paths import repo_root, resolve
from chatcap.results import read_manifest


def envelope_sizes() -> pd.DataFrame:
    """Encoded bytes of the codec benchmark's envelopes (``bench.micro.codec_bench``), per codec."""
    from bench.micro.codec_bench import sample_envelopes
    from chatcap.protocol import CODECS as WIRE

    records = [
        {"envelope": name, "codec": codec, "bytes": len(WIRE[codec].encode(msg))}
        for name, msg in sample_envelopes().items()
        for codec in CODECS
    ]
    return pd.DataFrame.from_records(records)


def deliver_sizes(body_bytes: Iterable[int]) -> pd.DataFrame:
    """Encoded bytes of a chat ``Deliver`` per body size and codec (the model's figure)."""
    from sim.stats import deliver_bytes

    records = [
        {"body_bytes": int(b), "codec": codec, "bytes": size}
        for b in body_bytes
        for codec, size in deliver_bytes(int(b)).items()
    ]
    return pd.DataFrame.from_records(records)


def codec_costs(codecs_csv: str | Path | None, *, repeat: int = 3) -> tuple[pd.DataFrame, str]:
    """Our codecs' ns per encode and decode per envelope: from a ``codecs.csv`` of
    ``python -m bench codecs`` when given, else timed here (``repeat`` short repeats).
    Returns the rows (``envelope``, ``format``, ``bytes``, ``encode_ns``, ``decode_ns``)
    and where they come from."""
    cols = ["envelope", "format", "bytes", "encode_ns", "decode_ns"]
    if codecs_csv is not None:
        path = resolve(codecs_csv)
        frame = pd.read_csv(path)
        ours = frame[frame["is_ours"].astype(str).str.lower() == "true"]
        return ours[cols].reset_index(drop=True), _shown(path)
    from bench.micro.codec_bench import measure_codecs

    rows = [r for r in measure_codecs("notebook", repeat, 0.002) if r["is_ours"]]
    return pd.DataFrame(rows)[cols], f"timed now ({repeat} repeats of ~2 ms each)"


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (for text in notebooks)."""
    try:
        return str(path.relative_to(repo_root()))
    except ValueError:
        return str(path)


def latency_histograms(run_dir: str | Path, name: str = "ack") -> pd.DataFrame:
    """The ``name`` HdrHistograms (``ack``, ``deliver``, …) of a measured run's points
    (``points/*/chat.json``), merged over replications per (codec, offered load): one row
    per non-empty bucket, ``value_ms`` and ``count``. Empty when there are none."""
    from bench._support.histo import LatencyHistogram

    path = resolve(run_dir)
    names = {p["point"]: p for p in read_manifest(path).get("points", [])}
    merged: dict[tuple[str, float], LatencyHistogram] = {}
    for doc_path in sorted(path.glob("points/*/chat.json")):
        point = names.get(doc_path.parent.name)
        if point is None:
            continue
        doc = json.loads(doc_path.read_text())
        for codec, text in doc.get("histograms", {}).get(name, {}).items():
            key = (codec, float(point["offered_per_s"]))
            merged.setdefault(key, LatencyHistogram()).merge(LatencyHistogram.decode(text))
    records = [
        {"codec": codec, "offered_per_s": load, "value_ms": us / 1000.0, "count": count}
        for (codec, load), hist in sorted(merged.items())
        for us, count in hist.buckets()
    ]
    return pd.DataFrame.from_records(
        records, columns=["codec", "offered_per_s", "value_ms", "count"]
    )
