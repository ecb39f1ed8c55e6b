"""From a finished simulation to frames and results-schema summary rows.

* :func:`requests_frame` — one row per send attempt, the columns of
  ``chatcap.results.REQUEST_COLUMNS`` (``source = "sim"``);
* :func:`deliveries_frame` — one row per (message, process, receiving codec): the
  first recipient's delivery time and latency, the step between recipients and the
  count; the k-th recipient (k = 0 …) has latency ``first_ms + k × step_ms``;
* :func:`timeseries_frame` — the sampled state plus per-interval rates;
* :func:`summary_rows` — ``SUMMARY_COLUMNS`` rows, the warm-up cut from every figure.

The measured window is ``[warmup_s, duration_s)``: rates count events (acks by their
time, deliveries by the first recipient's time, attempts by send time) inside it and
divide by its length; latencies are those of messages *intended* inside it, however
late their answer came (no survivor bias); ``error_rate`` is the share of attempts sent
inside it that were not acked.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from chatcap.protocol import CODECS, Deliver
from chatcap.results import OUTCOMES
from chatcap.scenario import CODEC_NAMES, Scenario
from sim.parts import Delivery

__all__ = [
    "deliver_bytes",
    "deliveries_frame",
    "delivery_quantiles",
    "requests_frame",
    "summary_rows",
    "timeseries_frame",
]

_EXPAND_MAX = 5_000_000  # deliveries expanded one by one for percentiles up to this many
_ACKED = OUTCOMES.index("acked")


@functools.lru_cache(maxsize=64)
def deliver_bytes(body_bytes: int) -> dict[str, int]:
    """Size of a real ``Deliver`` frame with a ``body_bytes`` body, per codec."""
    frame = Deliver(
        room="room-00042",
        seq=1_234_567,
        sender="user-000042",
        body="x" * body_bytes,
        ts_us=1_767_225_600_000_000,
        client_msg_id="u000042-m0001234",
        sent_at_us=1_767_225_599_998_000,
    )
    return {name: len(CODECS[name].encode(frame)) for name in CODEC_NAMES}


# ---------------------------------------------------------------------------- frames


def requests_frame(attempts: list[Any], offered_per_s: float, replication: int) -> pd.DataFrame:
    """One row per attempt, in the order sent (``REQUEST_COLUMNS``)."""
    n = len(attempts)
    codec = np.fromiter((a.msg.codec for a in attempts), np.int8, n)
    outcome = np.fromiter((a.outcome for a in attempts), np.int8, n)
    intended = np.fromiter((a.msg.intended_s for a in attempts), float, n)
    done = np.fromiter((a.done_s for a in attempts), float, n)
    acked = outcome == _ACKED
    ack_ms = np.where(acked, (done - intended) * 1000.0, np.nan)
    t_in = np.fromiter((a.t_in_s for a in attempts), float, n)
    server_ack_ms = np.where(acked, (done - t_in) * 1000.0, np.nan)
    return pd.DataFrame(
        {
            "run_id": "",
            "source": "sim",
            "codec": np.array(CODEC_NAMES)[codec],
            "replication": np.full(n, replication, dtype=np.int64),
            "offered_per_s": np.full(n, offered_per_s),
            "user": np.fromiter((a.msg.user for a in attempts), np.int64, n),
            "room": np.fromiter((a.msg.room for a in attempts), np.int64, n),
            "msg": np.fromiter((a.msg.index for a in attempts), np.int64, n),
            "attempt": np.fromiter((a.n for a in attempts), np.int64, n),
            "intended_s": intended,
            "sent_s": np.fromiter((a.sent_s for a in attempts), float, n),
            "done_s": done,
            "outcome": np.array(OUTCOMES)[outcome],
            "ack_ms": ack_ms,
            "server_ack_ms": server_ack_ms,
        }
    )


def deliveries_frame(deliveries: list[Delivery], step_s: float) -> pd.DataFrame:
    """One row per (message, process, receiving codec) delivery group."""
    n = len(deliveries)
    # one pass: the field columns of the records, by name
    fields = Delivery._fields
    columns = dict(
        zip(fields, zip(*deliveries, strict=True) if n else [()] * len(fields), strict=True)
    )
    msgs = columns["msg"]
    codec = np.array(columns["codec"], np.int8)
    return pd.DataFrame(
        {
            "user": np.fromiter((m.user for m in msgs), np.int64, n),
            "msg": np.fromiter((m.index for m in msgs), np.int64, n),
            "t_first_s": np.array(columns["t_first_s"], float),
            "first_ms": np.array(columns["latency_s"], float) * 1000.0,
            "step_ms": np.full(n, step_s * 1000.0),
            "count": np.array(columns["recipients"], np.int64),
            "codec": np.array(CODEC_NAMES)[codec],
            "process": np.array(columns["proc"], np.int64),
        }
    )


def timeseries_frame(
    samples: dict[str, list[float]],
    requests: pd.DataFrame,
    deliveries: pd.DataFrame,
    interval_s: float,
) -> pd.DataFrame:
    """One row per interval ``(t_s − interval_s, t_s]``:

    ``in_system`` (attempts sent and not yet answered, at ``t_s``), ``in_system_mean``
    (their exact time average over the interval: Little's ``L``), ``queue_depth``
    (writes waiting for a batch), ``batches_in_flight``, ``pool_in_use``,
    ``pool_waiting`` (batches waiting for a connection), ``breaker_state`` (worst over
    processes: 0 closed, 1 half-open, 2 open), ``loop_util_p<i>`` (share of the
    interval process ``i``'s loop was busy), and the rates ``offered_per_s`` (first
    attempts), ``sent_per_s`` (all attempts), ``acked_per_s`` and ``errors_per_s`` (by
    answer time), ``delivered_per_s``. Sums over processes where there are several.
    """
    frame = pd.DataFrame({k: v for k, v in samples.items() if not k.startswith("loop_busy_s")})
    if frame.empty:
        return frame
    for key, busy in samples.items():
        if key.startswith("loop_busy_s_"):
            worked = np.diff(np.asarray(busy), prepend=0.0)
            frame["loop_util_" + key.removeprefix("loop_busy_s_")] = worked / interval_s
    edges = np.concatenate(([0.0], frame["t_s"].to_numpy()))
    sent = requests["sent_s"].to_numpy()
    first = requests["attempt"].to_numpy() == 1
    done = requests["done_s"].to_numpy()
    acked = requests["outcome"].to_numpy() == "acked"

    def per_s(times: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        counts, _ = np.histogram(times, bins=edges, weights=weights)
        return counts / np.diff(edges)

    frame["offered_per_s"] = per_s(sent[first])
    frame["sent_per_s"] = per_s(sent)
    frame["acked_per_s"] = per_s(done[acked])
    frame["errors_per_s"] = per_s(done[~acked])
    frame["delivered_per_s"] = per_s(
        deliveries["t_first_s"].to_numpy(), deliveries["count"].to_numpy().astype(float)
    )
    return frame


# ---------------------------------------------------------------------------- percentiles


def delivery_quantiles(
    first_ms: np.ndarray, count: np.ndarray, step_ms: float, qs: list[float]
) -> list[float]:
    """Quantiles (``qs`` in [0, 1]) of every recipient's latency: group ``i`` holds
    ``first_ms[i] + k × step_ms`` for ``k < count[i]``. Exact (numpy's linear method)
    up to a few million deliveries; beyond, the inverted CDF found by bisection."""
    total = int(count.sum())
    if total == 0:
        return [float("nan")] * len(qs)
    if total <= _EXPAND_MAX:
        starts = np.cumsum(count) - count
        k = np.arange(total) - np.repeat(starts, count)
        latencies = np.repeat(first_ms, count) + k * step_ms
        return [float(v) for v in np.quantile(latencies, qs)]
    return [_bisect_quantile(first_ms, count, step_ms, q, total) for q in qs]


def _bisect_quantile(
    first_ms: np.ndarray, count: np.ndarray, step_ms: float, q: float, total: int
) -> float:
    rank = max(1, int(np.ceil(q * total)))
    low = float(first_ms.min())
    high = float((first_ms + (count - 1) * step_ms).max())

    def at_most(x: float) -> int:
        if step_ms <= 0:
            return int(count[first_ms <= x].sum())
        k = np.floor((x - first_ms) / step_ms) + 1
        return int(np.clip(k, 0, count).sum())

    for _ in range(100):
        mid = (low + high) / 2
        if mid in (low, high):
            break
        if at_most(mid) >= rank:
            high = mid
        else:
            low = mid
    return high


# ---------------------------------------------------------------------------- summary


def summary_rows(
    scenario: Scenario,
    seed: int,
    requests: pd.DataFrame,
    deliveries: pd.DataFrame,
    cpu_window_s: float,
    cpu_by_codec_s: list[float],
    users_by_codec: list[int],
    *,
    run_id: str = "",
    replication: int = 0,
    open_loop: bool = True,
    stage_means_ms: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Summary rows (``SUMMARY_COLUMNS``): ``mix`` plus one per codec when the users
    have both codecs, else one row for the one codec. A codec's row covers sends *by*
    its users and deliveries *to* them. ``stage_means_ms`` (the server's stages of a
    Send, ``sim.model.STAGES``, over all codecs) fill ``server_stage_*_ms`` of every row;
    ``server_ack_*_ms`` are the requests' ``server_ack_ms`` (from the arrival stamp)."""
    w = scenario.workload
    present = [c for c, n in enumerate(users_by_codec) if n > 0]
    groups: list[tuple[str, list[int]]] = [(CODEC_NAMES[c], [c]) for c in present]
    if len(present) > 1:
        groups.insert(0, ("mix", present))
    sizes = deliver_bytes(w.body_bytes)
    rows = []
    for name, codecs in groups:
        row = _group_row(
            scenario, requests, deliveries, codecs, sizes, cpu_window_s, cpu_by_codec_s,
            users_by_codec, open_loop,
        )  # fmt: skip
        row.update(run_id=run_id, scenario=scenario.name, source="sim", codec=name)
        row.update(replication=replication, seed=seed)
        if stage_means_ms:
            row.setdefault("server_ack_mean_ms", row["ack_mean_ms"])
            for stage, ms in stage_means_ms.items():
                row[f"server_stage_{stage}_ms"] = ms
        if name != "mix" and len(present) > 1:
            row["note"] = f"sends by and deliveries to the {name} users of a codec mix"
        rows.append(row)
    return rows


def _group_row(
    s: Scenario,
    requests: pd.DataFrame,
    deliveries: pd.DataFrame,
    codecs: list[int],
    sizes: dict[str, int],
    cpu_window_s: float,
    cpu_by_codec_s: list[float],
    users_by_codec: list[int],
    open_loop: bool,
) -> dict[str, Any]:
    w = s.workload
    t0, t1 = w.warmup_s, w.duration_s
    span_s = t1 - t0
    names = [CODEC_NAMES[c] for c in codecs]
    req = requests[requests["codec"].isin(names)]
    sent = req["sent_s"].to_numpy()
    done = req["done_s"].to_numpy()
    acked = (req["outcome"] == "acked").to_numpy()
    in_window = (sent >= t0) & (sent < t1)
    acked_in_window = acked & (done >= t0) & (done < t1)
    intended = req["intended_s"].to_numpy()
    judged = acked & (intended >= t0) & (intended < t1)
    latencies = req["ack_ms"].to_numpy()[judged]
    server_side = (
        req["server_ack_ms"].to_numpy()[judged] if "server_ack_ms" in req else np.array([])
    )
    server_side = server_side[np.isfinite(server_side)]
    dl = deliveries[deliveries["codec"].isin(names)]
    t_first = dl["t_first_s"].to_numpy()
    dl_in = (t_first >= t0) & (t_first < t1)
    count = dl["count"].to_numpy()[dl_in]
    step_ms = float(deliveries["step_ms"].iloc[0]) if len(deliveries) else 0.0
    d50, d99 = delivery_quantiles(dl["first_ms"].to_numpy()[dl_in], count, step_ms, [0.5, 0.99])
    acked_total = int(acked_in_window.sum())
    sent_total = int(in_window.sum())
    cpu_s = cpu_window_s if len(codecs) > 1 else cpu_by_codec_s[codecs[0]]
    if open_loop:
        offered = sum(users_by_codec[c] for c in codecs) * w.send_rate_per_user_per_s
    else:
        offered = float(((req["attempt"] == 1).to_numpy() & in_window).sum()) / span_s
    a_mean, a50, a99, a999 = _ack_stats(latencies)
    return {
        "offered_per_s": offered,
        "acked_per_s": acked_total / span_s,
        "delivered_per_s": float(count.sum()) / span_s,
        "ack_mean_ms": a_mean,
        "ack_p50_ms": a50,
        "ack_p99_ms": a99,
        "deliver_p50_ms": d50,
        "deliver_p99_ms": d99,
        "error_rate": float((~acked[in_window]).mean()) if sent_total else float("nan"),
        "server_cpu_us_per_msg": cpu_s / acked_total * 1e6 if acked_total else float("nan"),
        "bytes_per_msg": _bytes_per_msg(dl, dl_in, names, sizes),
        "duration_s": span_s,
        "sent_total": sent_total,
        "acked_total": acked_total,
        "ack_p999_ms": a999,
        **(
            {
                "server_ack_mean_ms": float(server_side.mean()),
                "server_ack_p50_ms": float(np.percentile(server_side, 50)),
                "server_ack_p99_ms": float(np.percentile(server_side, 99)),
            }
            if len(server_side)
            else {}
        ),
    }


def _ack_stats(latencies: np.ndarray) -> tuple[float, float, float, float]:
    if not len(latencies):
        nan = float("nan")
        return nan, nan, nan, nan
    p50, p99, p999 = np.percentile(latencies, [50, 99, 99.9])
    return float(latencies.mean()), float(p50), float(p99), float(p999)


def _bytes_per_msg(
    dl: pd.DataFrame, dl_in: np.ndarray, names: list[str], sizes: dict[str, int]
) -> float:
    """A Deliver's size; for a mix, weighted by the deliveries each codec received."""
    if len(names) == 1:
        return float(sizes[names[0]])
    received = dl[dl_in].groupby("codec")["count"].sum()
    weights = np.array([float(received.get(n, 0)) for n in names])
    if weights.sum() == 0:
        weights = np.ones(len(names))
    return float(np.dot(weights, [sizes[n] for n in names]) / weights.sum())
