"""Per-operation CPU and store costs that the model charges: the calibration file.

``python -m bench calibrate`` measures these on the machine and writes them as JSON;
``[sim] calibration = "path.json"`` points the model at such a file (relative paths are
read from the working directory); without one the model uses :data:`DEFAULT_COSTS`,
figures of the order of ``docs/anchors.md`` (a 2-core machine, Python 3.11).

The JSON document (``schema_version`` 1), all times per operation:

=========================  =====================================================
key                        meaning
=========================  =====================================================
``schema_version``         1
``host``                   machine the figures were measured on
``created_utc``            ISO-8601 time of the measurement
``decode_us``              ``{codec: µs}`` to decode one ``Send`` frame
``encode_ack_us``          ``{codec: µs}`` to encode one ``Ack`` (also charged for
                           an ``Error``, which is as small)
``encode_deliver_us``      ``{codec: µs}`` to encode one ``Deliver`` (once per codec
                           per message and process: the hub encodes once per codec)
``per_send_fixed_us``      everything else the loop spends on one incoming ``Send``:
                           the WebSocket read, the pipeline's Python code
``per_recipient_send_us``  one frame written to one connection (each Deliver, Ack
                           and Error)
``per_batch_loop_us``      what the loop spends per writer batch beyond the per-send
                           costs: handing the batch to the store thread, waking on its
                           result, the event-loop turn a lone message costs (optional;
                           0 when absent — files older than this key)
``per_batch_thread_us``    CPU a store thread spends per batch outside SQLite's own
                           commit (the executor hand-off, Python around the call): it
                           holds the interpreter lock, so the model charges it to the
                           loop (optional; 0 when absent)
``per_batch_wait_ms``      wall time a writer batch spends beyond its commit and the
                           loop's CPU: the hand-off to a store thread and the loop's
                           wake-up on the result (optional; 0 when absent)
``per_batch_wait_samples_ms``  optional: that wait's distribution (quantiles); when
                           present the model draws each batch's wait from it
``cold_penalty_us_by_gap_ms``  optional ``{idle gap ms: µs}``: what a unit of work
                           costs the loop beyond its warm cost when the loop had been
                           idle for that long before it (the cold path: CPU idle
                           states, the VM's wake-up, cold caches); the model charges
                           :class:`ColdPath` of it to work that finds its loop idle
                           (absent or empty: no penalty)
``fanout_us_by_gap_ms``    optional ``{idle gap ms: µs}``: one Deliver frame written
                           to a member who, like the loop, was idle for that long (the
                           cold fan-out: wall time on the loop, the reader's wake-up in
                           it); the model charges :class:`ColdPath` of it per local
                           recipient, the gap since its loop's last fan-out, in place of
                           ``per_recipient_send_us`` (absent: that figure alone)
``ingress_stage_us``       optional: the part of ``per_send_fixed_us`` between the
                           frame's arrival stamp and the write queue beyond the decode
                           (limiter, checks, dedup): the server's ``ingress`` stage
``post_submit_us``         optional: the part of ``per_send_fixed_us`` after the submit,
                           before the writer's turn on an idle loop (the rest of the
                           frame's read): its ``queue`` stage when nothing else waits.
                           ``per_send_fixed_us`` less both comes before the stamp
                           (the WebSocket read); all three cost the loop alike
``background_us_per_s``    optional: CPU the server spends per second with nothing to
                           do and no connection (its timers); charged to the loop in
                           ticks (0 when absent)
``ping_us``                optional: CPU of one keepalive ping (``server.ping_interval_s``)
                           — the background cost of an open connection; the model
                           charges one per connection per interval (0 when absent)
``scrape_us``              optional: CPU of one ``GET /metrics``; the model charges one
                           every ``sim.scrape_interval_s`` (0 when absent)
``gc_pauses_per_msg``      optional ``[gen 0, gen 1, gen 2]``: the garbage collector's
                           collections per message in a room of one, by generation
``gc_pauses_per_recipient``  optional ``[gen 0, 1, 2]``: collections added per message
                           by each further member of its room (the fan-out's garbage)
``gc_pauses_per_msg_full``, ``gc_pauses_per_recipient_full``  optional, the same once
                           the server's idempotency table is full
                           (``chatcap.pipeline.dedup.SERVER_DEDUP_ENTRIES`` messages in:
                           each new key evicts an old one, the heap stops growing and
                           collections come far apart); absent: as while it fills
``gc_pause_us``            optional ``[gen 0, 1, 2]``: a collection's mean pause with no
                           connection held, µs; the model holds the loop a pause on the
                           message that crosses each count (:class:`GcPauses`) and
                           takes the mean out of every message's loop costs, which hold
                           it on average already (absent: no pauses)
``gc_pause_us_per_connection``  optional ``[gen 0, 1, 2]``: µs a pause grows by per open
                           connection (the heap it walks); the model adds it per
                           connection of the loop's process
``gc_thresholds``          optional ``[t0, t1, t2]``: the server interpreter's
                           ``gc.get_threshold()``. With them the model triggers
                           collections at the measured rate of all generations together
                           and lets CPython's rule pick each one's generation (the
                           oldest whose count of younger collections exceeds its
                           threshold: with (700, 10, 10) 121 young, 11 middle and one
                           full collection in 133) instead of counting each generation
                           on its own — a generation measured only a few times (the full
                           one) then comes as often as the young ones dictate. Absent:
                           each generation at its own measured rate
``store_stall_every_rows``  optional: rows committed per store stall (SQLite's WAL
                           checkpoint, every ~1,000 pages written), from a sustained run
``store_stall_ms``         optional: a stall's time beyond a commit's; the model adds
                           it to the commit that crosses each ``store_stall_every_rows``
                           (0 when absent: no stalls)
``store_commit_fixed_ms``  measured mean commit of a batch of one message
``store_commit_per_msg_ms``  measured extra per further message in a batch
``store_commit_in_server_fixed_ms``  optional: a batch of one as the server itself
                           commits it over its lone calibration points
                           (``chatcap_store_commit_seconds``), one row's share of the
                           checkpoints out — SQLite between the loop's work, its caches
                           cold (0: not measured); ``bench`` prefers it to the isolated
                           ``store_commit_fixed_ms``
``store_commit_ms_by_batch``  optional ``{batch size: mean ms}`` table as measured
``commit_samples_ms``      optional raw commit times (batch of one) — the shape of
                           ``[sim] store_service = "empirical"``
``git_sha``                optional: the checkout the figures were measured with
``python``                 optional: the Python version
``packages``               optional ``{package: version or null}``
``notes``                  optional: how the figures were obtained (free text)
``details``                optional: the raw points and fits behind the figures
                           (free-form object; the model never reads it)
=========================  =====================================================

The optional keys are provenance only; files without them load as before.

The store's *mean* in the model always comes from the scenario (``[sim]
store_service_ms`` and ``store_per_msg_ms``, so a sweep can vary it); the measured
store figures are there for ``bench`` to suggest those values, and the samples give
the empirical distribution its shape (rescaled to the scenario's mean).
"""

from __future__ import annotations

import json
import math
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from chatcap.scenario import CODEC_NAMES

__all__ = [
    "DEFAULT_COSTS",
    "GC_GENERATION_COUNT",
    "SCHEMA_VERSION",
    "CalibrationError",
    "ColdPath",
    "Costs",
    "GcPauses",
    "load_costs",
    "save_costs",
]

SCHEMA_VERSION = 1
GC_GENERATION_COUNT = 3  # CPython's collector: generations 0, 1, 2
GC_KEYS = (
    "gc_pauses_per_msg",
    "gc_pauses_per_recipient",
    "gc_pauses_per_msg_full",
    "gc_pauses_per_recipient_full",
    "gc_pause_us",
    "gc_pause_us_per_connection",
)
CODECS = CODEC_NAMES  # the codecs a calibration gives figures for: every codec


class CalibrationError(ValueError):
    """A calibration file is missing, unreadable or malformed; the message says where."""


@dataclass(frozen=True)
class Costs:
    """Per-operation costs (see the module docstring for each field)."""

    decode_us: dict[str, float] = field(default_factory=lambda: {"json": 0.3, "protobuf": 1.3})
    encode_ack_us: dict[str, float] = field(default_factory=lambda: {"json": 0.2, "protobuf": 0.9})
    encode_deliver_us: dict[str, float] = field(
        default_factory=lambda: {"json": 0.25, "protobuf": 1.2}
    )
    per_send_fixed_us: float = 12.0
    per_recipient_send_us: float = 5.0
    per_batch_loop_us: float = 0.0
    per_batch_thread_us: float = 0.0
    per_batch_wait_ms: float = 0.0
    per_batch_wait_samples_ms: tuple[float, ...] = ()
    cold_penalty_us_by_gap_ms: dict[float, float] = field(default_factory=dict)
    fanout_us_by_gap_ms: dict[float, float] = field(default_factory=dict)
    store_stall_every_rows: float = 0.0
    store_stall_ms: float = 0.0
    gc_pauses_per_msg: tuple[float, ...] = ()
    gc_pauses_per_recipient: tuple[float, ...] = ()
    gc_pauses_per_msg_full: tuple[float, ...] = ()
    gc_pauses_per_recipient_full: tuple[float, ...] = ()
    gc_pause_us: tuple[float, ...] = ()
    gc_pause_us_per_connection: tuple[float, ...] = ()
    gc_thresholds: tuple[int, ...] = ()
    ingress_stage_us: float = 0.0
    post_submit_us: float = 0.0
    background_us_per_s: float = 0.0
    ping_us: float = 0.0
    scrape_us: float = 0.0
    store_commit_fixed_ms: float = 0.04
    store_commit_per_msg_ms: float = 0.015
    store_commit_in_server_fixed_ms: float = 0.0
    store_commit_ms_by_batch: dict[int, float] = field(default_factory=dict)
    commit_samples_ms: tuple[float, ...] = ()
    host: str = "built-in defaults"
    created_utc: str = ""
    git_sha: str = ""
    python: str = ""
    packages: dict[str, str | None] = field(default_factory=dict)
    notes: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def zero_cpu(self) -> Costs:
        """The same costs with every CPU figure 0 (``[sim] cpu = false``)."""
        zero = {c: 0.0 for c in CODECS}
        return replace(
            self,
            decode_us=dict(zero),
            encode_ack_us=dict(zero),
            encode_deliver_us=dict(zero),
            per_send_fixed_us=0.0,
            per_recipient_send_us=0.0,
            per_batch_loop_us=0.0,
            per_batch_thread_us=0.0,
            cold_penalty_us_by_gap_ms={},
            fanout_us_by_gap_ms={},
            gc_pause_us=(),
            gc_pause_us_per_connection=(),
            ingress_stage_us=0.0,
            post_submit_us=0.0,
            background_us_per_s=0.0,
            ping_us=0.0,
            scrape_us=0.0,
        )

    def slowed(self, factor: float) -> Costs:
        """The same costs with every CPU figure × ``factor`` (≥ 1: the loop gets only
        ``1 / factor`` of its core, the rest taken by other work on it — ``[sim]
        competing_cpu_share``). Wall times (the hand-off's wait) and the store's own
        figures stay: the model scales a commit on the loop itself."""
        if factor < 1 or not math.isfinite(factor):
            raise ValueError(f"Costs.slowed factor = {factor!r}: must be finite, ≥ 1")

        def each(table: dict[str, float]) -> dict[str, float]:
            return {k: v * factor for k, v in table.items()}

        def times(values: tuple[float, ...]) -> tuple[float, ...]:
            return tuple(v * factor for v in values)

        return replace(
            self,
            decode_us=each(self.decode_us),
            encode_ack_us=each(self.encode_ack_us),
            encode_deliver_us=each(self.encode_deliver_us),
            per_send_fixed_us=self.per_send_fixed_us * factor,
            per_recipient_send_us=self.per_recipient_send_us * factor,
            per_batch_loop_us=self.per_batch_loop_us * factor,
            per_batch_thread_us=self.per_batch_thread_us * factor,
            cold_penalty_us_by_gap_ms={
                k: v * factor for k, v in self.cold_penalty_us_by_gap_ms.items()
            },
            fanout_us_by_gap_ms={k: v * factor for k, v in self.fanout_us_by_gap_ms.items()},
            store_stall_ms=self.store_stall_ms * factor,
            gc_pause_us=times(self.gc_pause_us),
            gc_pause_us_per_connection=times(self.gc_pause_us_per_connection),
            ingress_stage_us=self.ingress_stage_us * factor,
            post_submit_us=self.post_submit_us * factor,
            background_us_per_s=self.background_us_per_s * factor,
            ping_us=self.ping_us * factor,
            scrape_us=self.scrape_us * factor,
        )

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-ready data, ``schema_version`` first."""
        data = asdict(self)
        data["store_commit_ms_by_batch"] = {
            str(k): v for k, v in sorted(self.store_commit_ms_by_batch.items())
        }
        data["commit_samples_ms"] = list(self.commit_samples_ms)
        data["per_batch_wait_samples_ms"] = list(self.per_batch_wait_samples_ms)
        for name in GC_KEYS:
            data[name] = list(getattr(self, name))
        data["gc_thresholds"] = list(self.gc_thresholds)
        for name in ("cold_penalty_us_by_gap_ms", "fanout_us_by_gap_ms"):
            data[name] = {_gap_key(k): v for k, v in sorted(getattr(self, name).items())}
        return {"schema_version": SCHEMA_VERSION, **data}


def _gap_key(gap_ms: float) -> str:
    """A gap as a JSON key: ``"0"``, ``"0.3"``, ``"10"`` (no trailing ``.0``)."""
    return f"{gap_ms:g}"


class ColdPath:
    """The cold-path penalty as a function of the loop's idle gap: ``penalty_s(gap_s)``.

    Built from ``cold_penalty_us_by_gap_ms``: between two measured gaps the penalty is
    interpolated linearly; below the smallest measured gap it is the smallest gap's
    value, above the largest the largest's. The measured values are made non-decreasing
    (a running maximum over increasing gaps): a longer idle spell lets the CPU sink into
    deeper idle states, never shallower ones, so a dip is measurement noise. Pure.
    """

    __slots__ = ("_gaps_s", "_values_s")

    def __init__(self, table: dict[float, float]) -> None:
        if not table:
            raise ValueError("ColdPath needs at least one (gap, penalty) point")
        gaps = sorted(table)
        values: list[float] = []
        for gap in gaps:
            v = table[gap]
            if gap < 0 or v < 0 or not (math.isfinite(gap) and math.isfinite(v)):
                raise ValueError(f"cold-path point ({gap!r} ms, {v!r} µs): must be finite, ≥ 0")
            values.append(max(v, values[-1]) if values else v)
        self._gaps_s = [g / 1000.0 for g in gaps]
        self._values_s = [v / 1e6 for v in values]

    @property
    def max_s(self) -> float:
        """The penalty after the longest measured gap (and any longer one)."""
        return self._values_s[-1]

    def penalty_s(self, gap_s: float) -> float:
        """The penalty (s) of work that finds the loop idle for ``gap_s`` seconds."""
        gaps, values = self._gaps_s, self._values_s
        if gap_s <= gaps[0]:
            return values[0]
        if gap_s >= gaps[-1]:
            return values[-1]
        i = bisect_right(gaps, gap_s)  # gaps[i - 1] < gap_s < gaps[i]
        g0, g1 = gaps[i - 1], gaps[i]
        v0, v1 = values[i - 1], values[i]
        return v0 + (v1 - v0) * (gap_s - g0) / (g1 - g0)


class GcPauses:
    """The garbage collector's pauses on a loop, per message: ``charge(due, members)``.

    Built from ``gc_pauses_per_msg``, ``gc_pauses_per_recipient`` and ``gc_pause_us``
    (one figure per generation). A message whose room holds ``members`` other members
    adds ``per_msg[g] + per_recipient[g] × members`` collections of generation ``g`` to
    its loop's running count ``due[g]``; each whole collection the count crosses pauses
    the loop ``pause_us[g]``. The collections come at the measured mean spacing, not at
    random: the collector is triggered by a count of allocations, and so is this. The
    loop costs (``per_send_fixed_us`` …) were measured with the pauses in them, so
    :meth:`charge` also returns the message's mean pause, which the caller takes out of
    its costs: on average nothing is counted twice, the pauses come in lumps. A pause
    walks the heap, which grows with the connections open: ``pause_us[g] +
    per_connection_us[g] × connections``, for the loop's process. Pure.

    With ``thresholds`` (``gc.get_threshold()``, ``gc_thresholds``) the generations are
    not counted apart: every collection is a trigger (the allocation count passing
    ``t0``), so ``due[0]`` counts triggers at the sum of the generations' rates, and
    CPython's rule names each trigger's generation: the oldest ``g ≥ 1`` whose count
    ``due[g]`` — collections of generation ``g − 1`` since its own last one — exceeds
    ``thresholds[g]``, else 0; collecting ``g`` adds one to ``due[g + 1]`` and zeroes the
    counts below it. (CPython also skips a full collection while the objects that
    survived into the oldest generation since the last one are under a quarter of it;
    while the server's heap grows — connections, the idempotency table filling — they
    are not, and the model does not skip it.)
    """

    __slots__ = ("_cache", "_cascade", "_pause_s", "_per_msg", "_per_recipient")

    def __init__(
        self,
        per_msg: tuple[float, ...],
        per_recipient: tuple[float, ...],
        pause_us: tuple[float, ...],
        per_connection_us: tuple[float, ...] = (),
        connections: int = 0,
        thresholds: tuple[int, ...] = (),
    ) -> None:
        n = len(pause_us)
        if (
            n == 0
            or len(per_msg) != n
            or len(per_recipient) not in (0, n)
            or len(per_connection_us) not in (0, n)
            or len(thresholds) not in (0, n)
        ):
            raise ValueError(
                "GcPauses needs one collections-per-message figure and one pause per "
                f"generation: got {len(per_msg)}, {len(per_recipient)}, {n}, "
                f"{len(per_connection_us)} and {len(thresholds)} thresholds"
            )
        if connections < 0:
            raise ValueError(f"GcPauses connections = {connections}: must be ≥ 0")
        for v in (*per_msg, *per_recipient, *pause_us, *per_connection_us):
            if v < 0 or not math.isfinite(v):
                raise ValueError(f"GcPauses figure {v!r}: must be finite, ≥ 0")
        if any(t < 1 for t in thresholds):
            raise ValueError(f"GcPauses thresholds {thresholds!r}: must be ≥ 1")
        self._per_msg = tuple(per_msg)
        self._per_recipient = tuple(per_recipient) if per_recipient else (0.0,) * n
        grow = per_connection_us or (0.0,) * n
        self._pause_s = tuple(
            (v + c * connections) / 1e6 for v, c in zip(pause_us, grow, strict=True)
        )
        self._cascade = tuple(thresholds)
        self._cache: dict[int, tuple[tuple[float, ...], float]] = {}

    @property
    def cascades(self) -> bool:
        """True when CPython's rule picks each collection's generation (``thresholds``)."""
        return bool(self._cascade)

    @staticmethod
    def new_due(
        uniform: Callable[[], float] | None = None, generations: int = GC_GENERATION_COUNT
    ) -> list[float]:
        """A loop's running counts at the start, one per generation: drawn from
        ``uniform`` (a U[0, 1) source: a run starts at a random phase of the collector's
        cycle, as a server measured at some moment does), else half a collection each."""
        return [uniform() if uniform is not None else 0.5 for _ in range(generations)]

    def start(self, uniform: Callable[[], float] | None = None) -> list[float]:
        """A loop's counts at the start, for :meth:`charge`: :meth:`new_due`, or with
        ``thresholds`` a trigger's phase and, per older generation, a whole count of
        younger collections in ``0 … threshold + 1`` (the counts it takes in a cycle, each
        as likely)."""
        due = self.new_due(uniform, len(self._pause_s))
        if self._cascade:
            for g in range(1, len(due)):
                top = self._cascade[g] + 1
                due[g] = float(min(int(due[g] * (top + 1)), top))
        return due

    def rates(self, members: int) -> tuple[tuple[float, ...], float]:
        """``(collections per message by generation, mean pause s per message)`` for a
        message with ``members`` other members in its room."""
        cached = self._cache.get(members)
        if cached is None:
            rates = tuple(
                a + b * members for a, b in zip(self._per_msg, self._per_recipient, strict=True)
            )
            mean = sum(r * p for r, p in zip(rates, self._pause_s, strict=True))
            cached = self._cache[members] = (rates, mean)
        return cached

    def generation(self, due: Sequence[float]) -> int:
        """With ``thresholds``: the generation CPython collects at the next trigger, given
        the counts ``due`` (see the class docstring)."""
        for g in range(len(due) - 1, 0, -1):
            if due[g] > self._cascade[g]:
                return g
        return 0

    def charge(self, due: list[float], members: int) -> tuple[float, float]:
        """Count one message into ``due`` (updated in place); returns ``(pause_s,
        mean_s)``: the pauses it sets off (0 mostly) and its mean pause."""
        rates, mean = self.rates(members)
        pause = 0.0
        if self._cascade:
            count = due[0] + sum(rates)
            while count >= 1.0:
                count -= 1.0
                g = self.generation(due)
                pause += self._pause_s[g]
                for younger in range(1, g + 1):
                    due[younger] = 0.0
                if g + 1 < len(due):
                    due[g + 1] += 1.0
            due[0] = count
            return pause, mean
        for g, rate in enumerate(rates):
            count = due[g] + rate
            if count >= 1.0:
                whole = int(count)
                count -= whole
                pause += whole * self._pause_s[g]
            due[g] = count
        return pause, mean


DEFAULT_COSTS = Costs()
"""Built-in figures: codec costs measured for a ~120-byte chat body with this
package's codecs; the per-send and per-recipient figures from ``docs/anchors.md`` (echo
~12 µs per message, ~5 µs per broadcast delivery); SQLite WAL ``NORMAL`` commits."""


def load_costs(path: str | Path) -> Costs:
    """Read and validate a calibration file; raises :class:`CalibrationError`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CalibrationError(f"{path}: calibration file not found") from None
    except OSError as exc:
        raise CalibrationError(f"{path}: cannot read ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CalibrationError(f"{path}: not valid JSON ({exc})") from None
    return costs_from_data(data, str(path))


def save_costs(costs: Costs, path: str | Path) -> Path:
    """Write ``costs`` as a calibration file (creating the folder); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(costs.to_json(), indent=2) + "\n")
    return path


def costs_from_data(data: Any, source: str = "<data>") -> Costs:
    """Validate plain data (as from JSON) into :class:`Costs`; absent keys keep defaults."""
    if not isinstance(data, dict):
        raise CalibrationError(f"{source}: expected a JSON object")
    version = data.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise CalibrationError(
            f"{source}: schema_version {version!r}, this model reads {SCHEMA_VERSION}"
        )
    known = {f.name for f in fields(Costs)}
    unknown = sorted(set(data) - known - {"schema_version"})
    if unknown:
        raise CalibrationError(f"{source}: unknown key(s) {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name in ("decode_us", "encode_ack_us", "encode_deliver_us"):
        if name in data:
            values[name] = _codec_table(data[name], f"{source}: {name}")
    for name in (
        "per_send_fixed_us",
        "per_recipient_send_us",
        "per_batch_loop_us",
        "per_batch_thread_us",
        "per_batch_wait_ms",
        "store_stall_every_rows",
        "store_stall_ms",
        "ingress_stage_us",
        "post_submit_us",
        "background_us_per_s",
        "ping_us",
        "scrape_us",
        "store_commit_fixed_ms",
        "store_commit_per_msg_ms",
        "store_commit_in_server_fixed_ms",
    ):
        if name in data:
            values[name] = _number(data[name], f"{source}: {name}")
    if "store_commit_ms_by_batch" in data:
        values["store_commit_ms_by_batch"] = _batch_table(
            data["store_commit_ms_by_batch"], f"{source}: store_commit_ms_by_batch"
        )
    for name in ("cold_penalty_us_by_gap_ms", "fanout_us_by_gap_ms"):
        if name in data:
            values[name] = _gap_table(data[name], f"{source}: {name}")
    for name in ("commit_samples_ms", "per_batch_wait_samples_ms"):
        if name in data:
            values[name] = _samples(data[name], f"{source}: {name}")
    for name in GC_KEYS:
        if name in data:
            values[name] = _by_generation(data[name], f"{source}: {name}")
    if "gc_thresholds" in data:
        values["gc_thresholds"] = _thresholds(data["gc_thresholds"], f"{source}: gc_thresholds")
    for name in ("host", "created_utc", "git_sha", "python", "notes"):
        if name in data:
            if not isinstance(data[name], str):
                raise CalibrationError(f"{source}: {name} must be a string")
            values[name] = data[name]
    if "packages" in data:
        values["packages"] = _packages(data["packages"], f"{source}: packages")
    if "details" in data:
        if not isinstance(data["details"], dict):
            raise CalibrationError(f"{source}: details must be an object")
        values["details"] = data["details"]
    return Costs(**values)


def _packages(value: Any, where: str) -> dict[str, str | None]:
    ok = isinstance(value, dict) and all(
        isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in value.items()
    )
    if not ok:
        raise CalibrationError(f"{where}: must be an object {{package: version or null}}")
    return dict(value)


def _number(value: Any, where: str) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value < 0:
        raise CalibrationError(f"{where} = {value!r}: must be a finite number ≥ 0")
    return float(value)


def _codec_table(value: Any, where: str) -> dict[str, float]:
    if not isinstance(value, dict) or set(value) != set(CODECS):
        raise CalibrationError(f"{where}: must give exactly {', '.join(CODECS)}")
    return {codec: _number(value[codec], f"{where}.{codec}") for codec in CODECS}


def _batch_table(value: Any, where: str) -> dict[int, float]:
    if not isinstance(value, dict):
        raise CalibrationError(f"{where}: must be an object {{batch size: ms}}")
    table: dict[int, float] = {}
    for key, ms in value.items():
        try:
            size = int(key)
        except (TypeError, ValueError):
            raise CalibrationError(f"{where}: key {key!r} is not a batch size") from None
        if size < 1:
            raise CalibrationError(f"{where}: batch size {size} must be ≥ 1")
        table[size] = _number(ms, f"{where}[{key}]")
    return table


def _gap_table(value: Any, where: str) -> dict[float, float]:
    if not isinstance(value, dict):
        raise CalibrationError(f"{where}: must be an object {{idle gap ms: µs}}")
    table: dict[float, float] = {}
    for key, us in value.items():
        try:
            gap = float(key)
        except (TypeError, ValueError):
            raise CalibrationError(f"{where}: key {key!r} is not a gap in ms") from None
        if not math.isfinite(gap) or gap < 0:
            raise CalibrationError(f"{where}: gap {key!r} must be a finite number of ms ≥ 0")
        table[gap] = _number(us, f"{where}[{key}]")
    return table


def _thresholds(value: Any, where: str) -> tuple[int, ...]:
    ok = isinstance(value, list) and len(value) in (0, GC_GENERATION_COUNT)
    if ok:
        ok = all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    if not ok:
        raise CalibrationError(
            f"{where} = {value!r}: must be [] or {GC_GENERATION_COUNT} whole numbers ≥ 1 "
            "(gc.get_threshold())"
        )
    return tuple(value)


def _by_generation(value: Any, where: str) -> tuple[float, ...]:
    if not isinstance(value, list) or len(value) not in (0, GC_GENERATION_COUNT):
        raise CalibrationError(
            f"{where} = {value!r}: must be a list of {GC_GENERATION_COUNT} numbers ≥ 0 "
            "(generations 0, 1, 2) or empty"
        )
    return tuple(_number(v, f"{where}[{i}]") for i, v in enumerate(value))


def _samples(value: Any, where: str) -> tuple[float, ...]:
    if not isinstance(value, list):
        raise CalibrationError(f"{where}: must be a list of ms")
    samples = tuple(_number(v, f"{where}[{i}]") for i, v in enumerate(value))
    if samples and sum(samples) <= 0:
        raise CalibrationError(f"{where}: samples must not all be 0")
    return samples
