"""Read the reference server's ``GET /metrics`` (Prometheus text) into the figures a run needs.

The run orchestrator (:mod:`bench.run`) scrapes the server before, during and after each
load point and works with differences: a counter's growth over the measured window is
what the server did in it. This module parses one scrape into a :class:`Scrape` (every
sample, keyed by name and labels; ``*_created`` timestamps dropped) and offers:

* the named figures — :attr:`Scrape.cpu_s` (``chatcap_process_cpu_seconds_total``),
  :attr:`Scrape.acks` (``chatcap_ack_latency_seconds_count``), frames received / sent
  (per codec or all), :attr:`Scrape.connections`, :meth:`Scrape.errors_by_code`
  (``chatcap_errors_sent_total{code}``), :meth:`Scrape.breaker_transitions`
  (``chatcap_breaker_transitions_total{from,to}``), :meth:`Scrape.rate_limited`;
* :meth:`Scrape.minus` — after − before: counters and histogram series subtract, gauges
  keep the later value;
* :meth:`Scrape.mean` — a histogram's mean over a difference, Δ ``_sum`` ÷ Δ ``_count``
  (exact, unlike a quantile), of the whole family or of one labelled series: the stages
  of a Send, ``chatcap_send_stage_seconds{stage}`` (:data:`SEND_STAGE`);
* :meth:`Scrape.buckets` and :func:`histogram_quantile` — a histogram's cumulative
  buckets and a quantile estimated as Prometheus's ``histogram_quantile()`` does
  (linear interpolation inside the bucket that holds the rank). The server's bounds
  (``server.metrics.LATENCY_BUCKETS_S``) are ten per decade up to 1 s, so the estimate
  is within about ±13 % of the true quantile there; above 1 s, "between the bounds".

Pure apart from :func:`fetch` (an HTTP GET with a timeout; over https the caller passes
the context that trusts the server, :meth:`bench._support.servers.ServerProc.client_context`);
no clock reads.
"""

from __future__ import annotations

import math
import ssl
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "ACK_LATENCY",
    "GC_PAUSE",
    "SEND_STAGE",
    "Scrape",
    "fetch",
    "fetch_text",
    "histogram_quantile",
    "parse",
]

ACK_LATENCY = "chatcap_ack_latency_seconds"
"""The server's own Send-received → Ack-sent histogram (seconds)."""

SEND_STAGE = "chatcap_send_stage_seconds"
GC_PAUSE = "chatcap_gc_pause_seconds"
"""The garbage collector's pauses, a histogram labelled ``generation`` ("0", "1", "2")."""
"""The server's per-stage times of a Send (seconds), one series per ``stage`` label value
(``server.metrics.SEND_STAGES``)."""

Labels = tuple[tuple[str, str], ...]
Key = tuple[str, Labels]


def _labels(labels: Mapping[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


@dataclass(frozen=True)
class Scrape:
    """One exposition's samples, ``{(sample name, sorted labels): value}``."""

    samples: Mapping[Key, float]
    gauges: frozenset[str] = field(default_factory=frozenset)
    """Sample names of gauge families (they do not subtract in :meth:`minus`)."""

    # -- generic access -------------------------------------------------------------------

    def total(self, name: str, **labels: str) -> float:
        """Sum of every sample called ``name`` whose labels include ``labels`` (0 if none)."""
        want = set(labels.items())
        return sum(v for (n, lab), v in self.samples.items() if n == name and want <= set(lab))

    def by_label(self, name: str, label: str) -> dict[str, float]:
        """``{label value: sum}`` of the samples called ``name``."""
        out: dict[str, float] = {}
        for (n, lab), value in self.samples.items():
            if n == name:
                key = dict(lab).get(label, "")
                out[key] = out.get(key, 0.0) + value
        return out

    def minus(self, before: Scrape) -> Scrape:
        """``self − before``: counters and histogram series subtract, gauges stay as in self.

        A series missing from ``before`` counts from 0 (labelled counters appear on
        first use, e.g. the first Error frame of a code).
        """
        delta = {
            key: value if key[0] in self.gauges else value - before.samples.get(key, 0.0)
            for key, value in self.samples.items()
        }
        return Scrape(delta, self.gauges)

    # -- histograms -----------------------------------------------------------------------

    def buckets(self, histogram: str) -> list[tuple[float, float]]:
        """``[(upper bound, cumulative count), …]`` ascending, ``+Inf`` last."""
        rows = [
            (float(dict(lab)["le"]), value)
            for (n, lab), value in self.samples.items()
            if n == histogram + "_bucket"
        ]
        return sorted(rows)

    def mean(self, histogram: str, **labels: str) -> float:
        """``histogram``'s mean, ``_sum`` ÷ ``_count`` of the series whose labels include
        ``labels`` (on a difference: the window's observations); NaN without any."""
        count = self.total(histogram + "_count", **labels)
        if count <= 0:
            return math.nan
        return self.total(histogram + "_sum", **labels) / count

    def quantile(self, histogram: str, q: float) -> float:
        """:func:`histogram_quantile` of ``histogram``'s buckets (NaN when empty)."""
        return histogram_quantile(q, self.buckets(histogram))

    # -- the server's figures -------------------------------------------------------------

    @property
    def cpu_s(self) -> float:
        """Server process CPU time (user + system), s."""
        return self.total("chatcap_process_cpu_seconds_total")

    @property
    def acks(self) -> float:
        """Acks sent (every observation of the ack latency histogram)."""
        return self.total(ACK_LATENCY + "_count")

    @property
    def connections(self) -> float:
        """Open WebSocket connections, all codecs (a gauge, refreshed at each scrape)."""
        return self.total("chatcap_connections")

    def frames_received(self, codec: str | None = None) -> float:
        """WebSocket frames received (Send, Join, …), one codec or all."""
        name = "chatcap_frames_received_total"
        return self.total(name, codec=codec) if codec else self.total(name)

    def frames_sent(self, codec: str | None = None) -> float:
        """Frames the server counts as sent (its Acks: fan-out copies are not counted)."""
        name = "chatcap_frames_sent_total"
        return self.total(name, codec=codec) if codec else self.total(name)

    def errors_by_code(self) -> dict[str, float]:
        """Error frames sent, ``{code: count}`` (codes never used are absent)."""
        return self.by_label("chatcap_errors_sent_total", "code")

    def breaker_transitions(self) -> dict[tuple[str, str], float]:
        """``{(from, to): count}`` for every legal breaker transition."""
        out: dict[tuple[str, str], float] = {}
        for (n, lab), value in self.samples.items():
            if n == "chatcap_breaker_transitions_total":
                labels = dict(lab)
                out[(labels["from"], labels["to"])] = value
        return out

    @property
    def rate_limited(self) -> float:
        """Sends refused by the per-user rate limiter."""
        return self.total("chatcap_rate_limited_total")


def parse(text: str) -> Scrape:
    """Parse Prometheus text exposition (format 0.0.4) into a :class:`Scrape`."""
    samples: dict[Key, float] = {}
    gauges: set[str] = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue  # creation timestamps: not figures
            if family.type == "gauge":
                gauges.add(sample.name)
            key = (sample.name, _labels(sample.labels))
            samples[key] = samples.get(key, 0.0) + float(sample.value)
    return Scrape(samples, frozenset(gauges))


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """The ``q`` quantile (0..1) of cumulative ``buckets``, as Prometheus estimates it.

    The rank ``q × total`` falls in one bucket; the value is interpolated linearly
    between that bucket's lower bound (the previous upper bound, 0 for the first) and
    its upper bound. A rank in the ``+Inf`` bucket answers the highest finite bound.
    NaN when the histogram is empty.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be in 0..1, got {q!r}")
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return math.nan
    total = ordered[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for upper, cumulative in ordered:
        if cumulative >= rank and cumulative > below:
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - below) / (cumulative - below)
        lower, below = upper, cumulative
    return lower


def fetch_text(base_url: str, timeout_s: float = 5.0, context: ssl.SSLContext | None = None) -> str:
    """``GET {base_url}/metrics`` as text (raises ``OSError`` on failure); ``context``
    verifies an https server."""
    url = base_url.rstrip("/") + "/metrics"
    with urllib.request.urlopen(url, timeout=timeout_s, context=context) as resp:
        body: bytes = resp.read()
    return body.decode("utf-8")


def fetch(base_url: str, timeout_s: float = 5.0, context: ssl.SSLContext | None = None) -> Scrape:
    """Scrape and parse the server at ``base_url`` (``http(s)://127.0.0.1:PORT``)."""
    return parse(fetch_text(base_url, timeout_s, context))
