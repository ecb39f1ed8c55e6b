"""The server's Prometheus metrics, on a registry private to each server instance.

No module-level state: two servers (or two tests) in one process never share a
counter, and ``GET /metrics`` shows only its own server. Names start with
``chatcap_`` and carry their unit (``_seconds``, ``_bytes``, ``_total``).

Hot-path cost: the per-codec children are bound once at construction, so counting a
frame is one ``.inc()`` on a child, with no label lookup::

    codec_metrics = metrics.by_codec["json"]          # once per connection
    codec_metrics.frames_in.inc()                     # per frame
    codec_metrics.bytes_in.inc(len(frame))

The ``*_by_codec`` dicts hold the same children, one metric at a time.

The three histograms of the write path (``ack_latency``, ``batch_size``,
``store_commit_latency``) are :class:`LoopHistogram`: an ``observe`` is one ``bisect``
and two additions on plain Python numbers (no lock: only the event loop's thread
records), turned into the same Prometheus families (``_bucket``, ``_count``, ``_sum``)
when scraped. A ``prometheus_client.Histogram`` takes a lock and scans its bounds on
every observation, about 5 µs per Ack on the hot path.

**A Send's stages** (``chatcap_send_stage_seconds{stage}``, :attr:`Metrics.send_stages`:
one :class:`LoopHistogram` family, a child per stage bound once, so an observation is
still one ``bisect`` and two additions) split the ack latency of a fresh Send, every
reading on the server's one clock (:mod:`server.clock`):

* ``ingress`` — the frame read (``t_in``, before decoding) → the moment the Send is handed
  to ``writer.submit``: decode, frame middleware (rate limiter), membership and size
  checks, injected CPU burn, the idempotency lookup. Observed for Sends the write queue
  accepted (not for refusals, retries answered from the cache, or ``overloaded``);
* ``queue`` — ``submit`` → the batch holding the Send is cut (the write queue's wait);
* ``commit`` — the batch cut → its futures settled with their rows: the pool wait, the
  commit turn, injected latency and the commit itself. ``queue`` and ``commit`` are
  observed once per message of a batch that committed (a batch refused or failed
  observes neither);
* ``fanout`` — :meth:`server.hub.Hub.fan_out` in :meth:`server.session.Session.after_commit`
  (messages that were fanned out: not the duplicates the store recognised);
* ``ack`` — encoding and writing the Ack in :meth:`server.session.Session.ack`, the span
  that ends where ``chatcap_ack_latency_seconds`` is observed (every Ack it counts,
  a retry answered from the idempotency cache included).

What the stages leave out of the ack latency — the loop turns between a batch settling
and its ``after_commit`` callback (and the few µs between stages) — has no histogram:
an analysis takes it as the ack latency's mean less the sum of the stages' means (each
mean is Δ ``_sum`` ÷ Δ ``_count`` of the stage's series). The bounds
(:data:`STAGE_BUCKETS_S`) reach down to 1 µs: most stages take tens of µs.

**The garbage collector's pauses** (``chatcap_gc_pause_seconds{generation}``, a
:class:`LoopHistogram` with a child per generation 0, 1, 2): CPython's cyclic collector
stops the whole interpreter — the event loop too — while it runs; a young collection
every ~700 net container allocations (tens to hundreds of µs), an older one every tenth
of those (about a millisecond), a full one when the long-lived heap grew by a quarter
(tens of ms with many connections). They are part of a Send's latency that no stage
names: the model charges them as measured parts (``bench calibrate``). Timed by a
``gc.callbacks`` hook (:class:`GcTimer`): two ``perf_counter`` reads per collection,
none per message. The hook is installed while the server runs (:meth:`Metrics.watch_gc`
and :meth:`Metrics.unwatch_gc`); a collection on any thread holds the interpreter lock,
so the histogram, written only by the hook, needs no lock of its own.
"""

from __future__ import annotations

import gc
import math
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.utils import floatToGoString

from chatcap.pipeline.stages import GC_GENERATIONS, SEND_STAGES
from chatcap.policy.breaker import TRANSITIONS, BreakerState, Transition
from chatcap.scenario import CODEC_NAMES

__all__ = [
    "BATCH_SIZE_BUCKETS",
    "BREAKER_STATE_VALUES",
    "GC_GENERATIONS",
    "LATENCY_BUCKETS_S",
    "SEND_STAGES",
    "STAGE_BUCKETS_S",
    "CodecMetrics",
    "GcTimer",
    "LoopHistogram",
    "LoopHistogramChild",
    "Metrics",
    "SendStages",
    "Unrecorded",
]

_R10 = (1.0, 1.25, 1.6, 2.0, 2.5, 3.15, 4.0, 5.0, 6.3, 8.0)  # Renard's R10', ×1.26 apart
LATENCY_BUCKETS_S: tuple[float, ...] = (
    *(round(m * 10.0**e, 12) for e in range(-5, 0) for m in _R10 if m * 10.0**e >= 50e-6),
    1.0, 2.0, 5.0, 10.0,
)  # fmt: skip
"""50 µs … 1 s ten per decade (Renard's R10' series, each bound ×1.25–1.27 the one
before: a quantile interpolated inside a bucket is off by ±13 % at most), then 2, 5 and
10 s; upper bounds in seconds. Fine enough to hold sub-millisecond latencies against the
model; an observation scans about a dozen bounds."""

STAGE_BUCKETS_S: tuple[float, ...] = (
    *(round(m * 10.0**e, 12) for e in range(-6, 0) for m in _R10),
    1.0, 2.0, 5.0, 10.0,
)  # fmt: skip
"""1 µs … 1 s ten per decade (the same R10' series as :data:`LATENCY_BUCKETS_S`), then 2, 5
and 10 s: the stages of a Send mostly take µs, below the ack latency's first bound."""


BATCH_SIZE_BUCKETS: tuple[float, ...] = tuple(float(2**k) for k in range(11))
"""1, 2, 4, … 1024 messages per store commit."""

BREAKER_STATE_VALUES: dict[BreakerState, int] = {
    BreakerState.CLOSED: 0,
    BreakerState.OPEN: 1,
    BreakerState.HALF_OPEN: 2,
}
"""The value ``chatcap_breaker_state`` takes in each state."""


@dataclass(frozen=True, slots=True)
class CodecMetrics:
    """The per-codec children of one codec, bound once."""

    connections: Gauge
    connections_opened: Counter
    frames_in: Counter
    frames_out: Counter
    bytes_in: Counter
    bytes_out: Counter


# Prometheus's own spelling of a bucket bound (``0.002``, ``+Inf``), as Histogram writes it.
_le_label = cast(Callable[[float], str], floatToGoString)


class LoopHistogramChild:
    """One series of a :class:`LoopHistogram`: bucket counts and a sum, recorded on the
    event loop's thread only (no lock). A labelled family hands these out, one per label
    value, bound once (:meth:`LoopHistogram.labels`)."""

    __slots__ = ("_bounds", "_counts", "_sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self._counts = [0] * len(bounds)
        self._sum = 0.0

    def observe(self, amount: float) -> None:
        """Count one observation of ``amount``: one ``bisect`` and two additions."""
        self._counts[bisect_left(self._bounds, amount)] += 1
        self._sum += amount

    def observe_many(self, amount: float, n: int) -> None:
        """Count ``n`` observations of the same ``amount`` (a batch's messages) at the cost
        of one: one ``bisect``, two additions and a product."""
        self._counts[bisect_left(self._bounds, amount)] += n
        self._sum += amount * n

    @property
    def count(self) -> int:
        """Observations so far."""
        return sum(self._counts)

    @property
    def sum(self) -> float:
        """The sum of every observation so far."""
        return self._sum

    def _buckets(self) -> list[tuple[str, float]]:
        """Cumulative ``(le, count)`` pairs, as a Prometheus histogram exposes them."""
        cumulative, buckets = 0, []
        for bound, count in zip(self._bounds, self._counts, strict=True):
            cumulative += count
            buckets.append((_le_label(bound), float(cumulative)))
        return buckets


class LoopHistogram(LoopHistogramChild):
    """A histogram recorded on the event loop's thread only, exposed as a Prometheus
    histogram family (a collector of its registry); see the module docstring.

    Bucket semantics are Prometheus's: an observation counts in the first bucket whose
    upper bound is ``>=`` it (cumulative in the exposition), ``+Inf`` catches the rest.

    Without ``labelnames`` the family is its own one series (``observe`` on it). With
    them, observations go to children (:meth:`labels`, bound once, each as cheap as the
    unlabelled series); ``observe`` on the family itself is then a ValueError.
    """

    def __init__(
        self, name: str, doc: str, buckets: Iterable[float], labelnames: Iterable[str] = ()
    ) -> None:
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
        super().__init__(tuple(bounds))
        self.name, self.doc = name, doc
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], LoopHistogramChild] = {}
        if self.labelnames:
            # shadow the inherited methods on this instance only: the unlabelled family's
            # observe stays the plain one, with no check per observation
            self.observe = self._observe_refused  # type: ignore[method-assign]
            self.observe_many = self._observe_many_refused  # type: ignore[method-assign]

    def _observe_refused(self, amount: float) -> None:
        raise self._labelled_error()

    def _observe_many_refused(self, amount: float, n: int) -> None:
        raise self._labelled_error()

    def _labelled_error(self) -> ValueError:
        return ValueError(
            f"{self.name} has labels {self.labelnames}: observe on a child, .labels(...)"
        )

    def labels(self, *values: str) -> LoopHistogramChild:
        """The child series of one label value per label name (made on first use; bind it
        once and observe on it)."""
        if len(values) != len(self.labelnames):
            raise ValueError(
                f"{self.name} takes {len(self.labelnames)} label value(s) "
                f"{self.labelnames}, got {len(values)}: {values!r}"
            )
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = LoopHistogramChild(self._bounds)
        return child

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)]

    def collect(self) -> Iterable[Metric]:
        if not self.labelnames:
            return [
                HistogramMetricFamily(
                    self.name, self.doc, buckets=self._buckets(), sum_value=self._sum
                )
            ]
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)
        for values, child in self._children.items():
            family.add_metric(list(values), child._buckets(), child._sum)
        return [family]


class Unrecorded:
    """A stage recorder that keeps nothing: ``server.stage_metrics = false``, or a
    writer nobody asked for stage times (:class:`server.writer.Writer`)."""

    __slots__ = ()

    def observe(self, amount: float) -> None:
        pass

    def observe_many(self, amount: float, n: int) -> None:
        pass


@dataclass(frozen=True, slots=True)
class SendStages:
    """The children of ``chatcap_send_stage_seconds``, one per stage, bound once (see
    the module docstring for what each one times)."""

    ingress: LoopHistogramChild
    queue: LoopHistogramChild
    commit: LoopHistogramChild
    fanout: LoopHistogramChild
    ack: LoopHistogramChild


class _ProcessCpuCollector:
    """``chatcap_process_cpu_seconds_total`` from ``time.process_time()`` at each scrape.

    Stands in for ``ProcessCollector`` where it sees nothing (no ``/proc``).
    """

    name = "chatcap_process_cpu_seconds"

    def describe(self) -> Iterable[Metric]:
        return [CounterMetricFamily(self.name, "CPU time of this process (user + system)")]

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(self.name, "CPU time of this process (user + system)")
        family.add_metric([], time.process_time())
        return [family]


class GcTimer:
    """A ``gc.callbacks`` hook that times each collection into its generation's child of a
    :class:`LoopHistogram` (see the module docstring). :meth:`install` adds it to the
    interpreter's list, :meth:`uninstall` takes it out (both idempotent)."""

    __slots__ = ("_by_generation", "_clock", "_started")

    def __init__(
        self,
        by_generation: Iterable[LoopHistogramChild],
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._by_generation = tuple(by_generation)
        self._clock = clock
        self._started = math.nan

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = self._clock()
            return
        started, self._started = self._started, math.nan
        generation = info.get("generation", -1)
        if started == started and 0 <= generation < len(self._by_generation):  # not NaN
            self._by_generation[generation].observe(self._clock() - started)

    @property
    def installed(self) -> bool:
        """Whether the hook is in ``gc.callbacks`` now."""
        return any(cb is self for cb in gc.callbacks)

    def install(self) -> None:
        if not self.installed:
            gc.callbacks.append(self)

    def uninstall(self) -> None:
        gc.callbacks[:] = [cb for cb in gc.callbacks if cb is not self]


class Metrics:
    """All the server's metrics; one instance per server, with its own registry."""

    def __init__(self, codecs: Iterable[str] = CODEC_NAMES, *, stages: bool = True) -> None:
        """``stages`` false (``server.stage_metrics``): no stage is timed and the
        collector is not watched; both families stay on ``/metrics``, at 0."""
        self.registry = CollectorRegistry(auto_describe=True)
        self._codecs = tuple(codecs)
        self._stages_on = stages
        self._add_connection_metrics()
        self._add_pipeline_metrics()
        self._add_pool_and_breaker_metrics()
        self._add_rejection_metrics()
        self.http_requests = self._counter(
            "http_requests", "HTTP requests answered, by route and status", ("route", "status")
        )
        self._add_process_metrics()
        self.by_codec = {codec: self._bind_codec(codec) for codec in self._codecs}
        self._tallies: dict[str, list[int]] = {}
        self._add_codec_dicts()

    # -- construction -----------------------------------------------------------------

    def _counter(self, name: str, doc: str, labels: Iterable[str] = ()) -> Counter:
        return Counter(f"chatcap_{name}", doc, tuple(labels), registry=self.registry)

    def _gauge(self, name: str, doc: str, labels: Iterable[str] = ()) -> Gauge:
        return Gauge(f"chatcap_{name}", doc, tuple(labels), registry=self.registry)

    def _histogram(self, name: str, doc: str, buckets: Iterable[float]) -> Histogram:
        return Histogram(f"chatcap_{name}", doc, buckets=tuple(buckets), registry=self.registry)

    def _loop_histogram(
        self, name: str, doc: str, buckets: Iterable[float], labels: Iterable[str] = ()
    ) -> LoopHistogram:
        histogram = LoopHistogram(f"chatcap_{name}", doc, buckets, labels)
        self.registry.register(histogram)
        return histogram

    def _add_connection_metrics(self) -> None:
        codec = ("codec",)
        self.connections = self._gauge("connections", "open WebSocket connections", codec)
        self.connections_total = self._counter(
            "connections_opened", "WebSocket connections accepted", codec
        )
        self.frames_in = self._counter("frames_received", "WebSocket frames received", codec)
        self.frames_out = self._counter("frames_sent", "WebSocket frames sent", codec)
        self.bytes_in = self._counter("received_bytes", "payload bytes of frames received", codec)
        self.bytes_out = self._counter("sent_bytes", "payload bytes of frames sent", codec)

    def _add_pipeline_metrics(self) -> None:
        self.ack_latency = self._loop_histogram(
            "ack_latency_seconds",
            "server-side time from a Send frame received to its Ack sent",
            LATENCY_BUCKETS_S,
        )
        self.write_queue_depth = self._gauge(
            "write_queue_depth", "messages waiting in the bounded write queue"
        )
        self.batch_size = self._loop_histogram(
            "write_batch_messages", "messages per store commit batch", BATCH_SIZE_BUCKETS
        )
        self.store_commit_latency = self._loop_histogram(
            "store_commit_seconds", "time of one store commit (one batch)", LATENCY_BUCKETS_S
        )
        self.send_stage = self._loop_histogram(
            "send_stage_seconds",
            "time of one stage of a Send, by stage (ingress, queue, commit, fanout, ack)",
            STAGE_BUCKETS_S,
            ("stage",),
        )
        # every stage shows (at 0) from the start; bound once, observed on the hot path
        children = {stage: self.send_stage.labels(stage) for stage in SEND_STAGES}
        if not self._stages_on:
            children = {stage: cast(LoopHistogramChild, Unrecorded()) for stage in children}
        self.send_stages = SendStages(**children)
        self.gc_pause = self._loop_histogram(
            "gc_pause_seconds",
            "time the interpreter stood still for one garbage collection, by generation",
            STAGE_BUCKETS_S,
            ("generation",),
        )
        self._gc_timer = GcTimer(self.gc_pause.labels(g) for g in GC_GENERATIONS)

    def watch_gc(self) -> None:
        """Time the garbage collector's pauses from now on (``chatcap_gc_pause_seconds``;
        not with ``stages`` false)."""
        if self._stages_on:
            self._gc_timer.install()

    def unwatch_gc(self) -> None:
        """Stop timing them (the server stopped): the hook leaves ``gc.callbacks``."""
        self._gc_timer.uninstall()

    def _add_pool_and_breaker_metrics(self) -> None:
        self.pool_in_use = self._gauge("pool_connections_in_use", "store connections lent out")
        self.pool_idle = self._gauge("pool_connections_idle", "store connections idle in the pool")
        self.pool_waiting = self._gauge("pool_waiting", "callers waiting for a store connection")
        self.pool_acquire_timeouts = self._counter(
            "pool_acquire_timeouts", "store connection waits that timed out"
        )
        self.breaker_state = self._gauge(
            "breaker_state", "store circuit breaker: 0 closed, 1 open, 2 half-open"
        )
        self.breaker_transitions = self._counter(
            "breaker_transitions", "store circuit breaker state changes", ("from", "to")
        )
        for old, new in sorted({(old.value, new.value) for (old, _), new in TRANSITIONS.items()}):
            self.breaker_transitions.labels(old, new)  # every legal pair shows, at 0

    def _add_rejection_metrics(self) -> None:
        self.rate_limited = self._counter("rate_limited", "Sends refused by the rate limiter")
        self.dedup_hits = self._counter(
            "dedup_hits", "Sends answered from the idempotency cache (retries)"
        )
        self.errors_sent = self._counter("errors_sent", "Error frames sent, by code", ("code",))
        self.slow_consumers_dropped = self._counter(
            "slow_consumers_dropped", "connections closed because their outbound queue was full"
        )
        self.bad_frames = self._counter(
            "bad_frames", "frames that failed to decode or validate, by kind", ("reason",)
        )

    def _add_process_metrics(self) -> None:
        collector = ProcessCollector(namespace="chatcap", registry=None)
        if any(metric.name == _ProcessCpuCollector.name for metric in collector.collect()):
            self.registry.register(collector)  # CPU, RSS, open fds … from /proc
        else:
            self.registry.register(_ProcessCpuCollector())

    def _bind_codec(self, codec: str) -> CodecMetrics:
        return CodecMetrics(
            connections=self.connections.labels(codec),
            connections_opened=self.connections_total.labels(codec),
            frames_in=self.frames_in.labels(codec),
            frames_out=self.frames_out.labels(codec),
            bytes_in=self.bytes_in.labels(codec),
            bytes_out=self.bytes_out.labels(codec),
        )

    def _add_codec_dicts(self) -> None:
        """``frames_in_by_codec["json"]`` etc.: the children of ``by_codec``, per metric."""
        by_codec = self.by_codec
        self.connections_by_codec = {c: m.connections for c, m in by_codec.items()}
        self.connections_total_by_codec = {c: m.connections_opened for c, m in by_codec.items()}
        self.frames_in_by_codec = {c: m.frames_in for c, m in by_codec.items()}
        self.frames_out_by_codec = {c: m.frames_out for c, m in by_codec.items()}
        self.bytes_in_by_codec = {c: m.bytes_in for c, m in by_codec.items()}
        self.bytes_out_by_codec = {c: m.bytes_out for c, m in by_codec.items()}

    # -- hot-path tallies ---------------------------------------------------------------

    def tally(self, codec: str) -> list[int]:
        """Plain counters ``[frames_in, bytes_in, frames_out, bytes_out]`` for one codec.

        Incrementing a list slot costs a fraction of a Prometheus ``inc()`` (which takes
        a lock); :meth:`flush_tallies` adds them to the real counters before a scrape.
        """
        return self._tallies.setdefault(codec, [0, 0, 0, 0])

    def flush_tallies(self) -> None:
        for codec, slots in self._tallies.items():
            bound = self.by_codec[codec]
            for value, counter in zip(
                slots,
                (bound.frames_in, bound.bytes_in, bound.frames_out, bound.bytes_out),
                strict=True,
            ):
                if value:
                    counter.inc(value)
            slots[:] = [0, 0, 0, 0]

    # -- events -------------------------------------------------------------------------

    def breaker_listener(self, transition: Transition) -> None:
        """A ``CircuitBreaker`` listener: set the state gauge, count the transition."""
        self.breaker_state.set(BREAKER_STATE_VALUES[transition.to_state])
        self.breaker_transitions.labels(
            transition.from_state.value, transition.to_state.value
        ).inc()

    # -- exposition ---------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition (format 0.0.4) and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4

    def names(self) -> Iterator[str]:
        """Every metric family name this registry exposes (for tests and docs)."""
        for metric in self.registry.collect():
            yield metric.name
