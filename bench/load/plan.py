"""What each simulated chat user does, derived from the scenario: pure, seeded, testable.

The Locust users (:mod:`bench.load.users`) ask this module four questions, all answered
from a :class:`LoadPlan` (the scenario's ``[workload]`` and ``[client]`` tables with the
command line's overrides applied) and the user's position ``(worker, n)`` — the Locust
worker index and the n-th user that worker started (0, 1, 2, …):

* **who** — :func:`user_name`: ``u{worker}-{n}``, unique across workers;
* **which codec** — :class:`CodecPlan`: the ``--chat-codec`` choice, or with ``mix``
  the scenario's ``workload.codec_mix`` dealt in turn (weighted round robin), so each
  room holds both codecs in those shares;
* **which room** — :class:`RoomPlan`: rooms are filled one after another to their size,
  so user n of worker w joins room ``r{w}-{k}`` where k counts the rooms before it. With
  ``room_size.distribution = "fixed"`` that is simply ``k = n // size``: 200 users and
  rooms of 10 give 20 full rooms, as the scenario says. ``uniform`` and ``zipf`` draw each
  room's size in turn from the seeded RNG. Rooms never span workers, so a room's whole
  fan-out is observed by one process (and the Locust user count, ``-u``, decides how many
  rooms there are — ``workload.users`` and ``workload.rooms`` are the model's figures);
* **when to send** — :func:`send_gaps`: the gaps between intended send times, open loop:
  ``poisson`` (exponential gaps, mean 1/rate) or ``constant`` (1/rate, the first gap a
  random phase so that users do not send in lock-step). ``closed`` uses think times
  instead (see :attr:`LoadPlan.closed_loop`).

Every random choice comes from ``random.Random`` seeded with a string built from the
plan's seed and the user's position, so a run is reproducible from scenario + seed.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from chatcap.scenario import CODEC_MIX, CODEC_NAMES, ClientConfig, RoomSizeConfig, Scenario

__all__ = [
    "CODEC_CHOICES",
    "CodecPlan",
    "LoadPlan",
    "RoomPlan",
    "backlog_until",
    "body_text",
    "count_backlog",
    "resolve_plan",
    "send_gaps",
    "user_name",
    "user_rng",
]

CODEC_CHOICES = (CODEC_MIX, *CODEC_NAMES)
"""``--chat-codec``: ``mix`` follows ``workload.codec_mix``; the others fix the codec."""


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """The resolved settings the chat users follow."""

    scenario: str
    seed: int
    codec: str
    codec_mix: Mapping[str, float]
    room_size: RoomSizeConfig
    send_rate_per_user_per_s: float
    arrival: str
    think_time_s: float
    body_bytes: int
    client: ClientConfig

    @property
    def closed_loop(self) -> bool:
        """True: send, wait for the answer (or timeout), think, send again."""
        return self.arrival == "closed"

    @property
    def ack_timeout_s(self) -> float:
        """How long a sender waits for an Ack before the attempt counts as a timeout."""
        return self.client.ack_timeout_ms / 1000.0

    def codecs(self) -> CodecPlan:
        """The codec of each user, in turn (a fresh sequence per process)."""
        if self.codec != CODEC_MIX:
            return CodecPlan({self.codec: 1.0})
        return CodecPlan(self.codec_mix)

    def describe(self) -> dict[str, Any]:
        """The plan as plain data, for the results file."""
        return {
            "scenario": self.scenario,
            "seed": self.seed,
            "codec": self.codec,
            "codec_mix": dict(self.codec_mix),
            "room_size": {
                "distribution": self.room_size.distribution,
                "size": self.room_size.size,
                "min": self.room_size.min,
                "max": self.room_size.max,
                "zipf_s": self.room_size.zipf_s,
            },
            "send_rate_per_user_per_s": self.send_rate_per_user_per_s,
            "arrival": self.arrival,
            "think_time_s": self.think_time_s,
            "body_bytes": self.body_bytes,
            "ack_timeout_ms": self.client.ack_timeout_ms,
            "max_attempts": self.client.retry.max_attempts,
        }


def resolve_plan(
    scenario: Scenario,
    *,
    codec: str = CODEC_MIX,
    room_size: int | None = None,
    send_rate_per_user_per_s: float | None = None,
    body_bytes: int | None = None,
    seed: int | None = None,
    arrival: str | None = None,
) -> LoadPlan:
    """The scenario with the command line's overrides, validated by the scenario loader.

    ``room_size`` sets a fixed room size (and raises ``workload.users`` to at least that,
    since the Locust user count, not the scenario's, decides the population).
    """
    if codec not in CODEC_CHOICES:
        raise ValueError(f"codec {codec!r}: expected one of {', '.join(CODEC_CHOICES)}")
    overrides: dict[str, Any] = {}
    if room_size is not None:
        overrides["workload.room_size.distribution"] = "fixed"
        overrides["workload.room_size.size"] = room_size
        overrides["workload.users"] = max(scenario.workload.users, room_size)
    if send_rate_per_user_per_s is not None:
        overrides["workload.send_rate_per_user_per_s"] = float(send_rate_per_user_per_s)
    if body_bytes is not None:
        overrides["workload.body_bytes"] = body_bytes
    if seed is not None:
        overrides["seed"] = seed
    if arrival is not None:
        overrides["workload.arrival"] = arrival
    s = scenario.with_overrides(overrides) if overrides else scenario
    w = s.workload
    return LoadPlan(
        scenario=s.name,
        seed=s.seed,
        codec=codec,
        codec_mix=dict(w.codec_mix),
        room_size=w.room_size,
        send_rate_per_user_per_s=w.send_rate_per_user_per_s,
        arrival=w.arrival,
        think_time_s=w.think_time_s,
        body_bytes=w.body_bytes,
        client=s.client,
    )


def user_name(worker: int, n: int) -> str:
    """The login of user ``n`` of ``worker``: unique across the workers of one run."""
    return f"u{worker}-{n}"


def user_rng(seed: int, worker: int, n: int, purpose: str = "schedule") -> random.Random:
    """The user's own random source for one ``purpose`` (``schedule``, ``retry``, …).

    One source per purpose keeps the send schedule the same from run to run, however
    many retries (drawing jitter) happened in between.
    """
    return random.Random(f"{seed}:{purpose}:{worker}:{n}")


class RoomPlan:
    """Fills rooms one after another; :meth:`room_of` maps a user to its room's name."""

    __slots__ = ("_bounds", "_cfg", "_rng", "_worker")

    def __init__(self, cfg: RoomSizeConfig, seed: int, worker: int) -> None:
        self._cfg = cfg
        self._worker = worker
        self._rng = random.Random(f"{seed}:rooms:{worker}")
        self._bounds: list[int] = []  # _bounds[k] = users in rooms 0..k together

    def room_of(self, n: int) -> str:
        """The room of user ``n`` of this worker."""
        if self._cfg.distribution == "fixed":
            return self.name(n // self._cfg.size)
        while not self._bounds or self._bounds[-1] <= n:
            before = self._bounds[-1] if self._bounds else 0
            self._bounds.append(before + self._draw_size())
        return self.name(bisect.bisect_right(self._bounds, n))

    def name(self, k: int) -> str:
        """The name of this worker's k-th room."""
        return f"r{self._worker}-{k}"

    def _draw_size(self) -> int:
        cfg, rng = self._cfg, self._rng
        if cfg.distribution == "uniform":
            return rng.randint(cfg.min, cfg.max)
        sizes = range(cfg.min, cfg.max + 1)  # zipf over min..max, P(k) ∝ k^-s
        weights = [k**-cfg.zipf_s for k in sizes]
        return rng.choices(sizes, weights)[0]


class CodecPlan:
    """Codecs dealt to users by smooth weighted round robin: shares exact within one user.

    With ``{json: 1, protobuf: 1}`` users alternate json, protobuf, json, …, so every room
    (filled by consecutive users) holds both codecs; with ``{json: 3, protobuf: 1}`` one
    user in four speaks Protobuf. Deterministic: no seed needed.
    """

    __slots__ = ("_credit", "_dealt", "_weights")

    def __init__(self, weights: Mapping[str, float]) -> None:
        self._weights = {name: float(w) for name, w in sorted(weights.items()) if w > 0}
        if not self._weights:
            raise ValueError("codec weights must not all be 0")
        self._credit = dict.fromkeys(self._weights, 0.0)
        self._dealt: list[str] = []

    def codec_of(self, n: int) -> str:
        """The codec of user ``n`` (0, 1, 2, …)."""
        total = sum(self._weights.values())
        while len(self._dealt) <= n:
            for name, weight in self._weights.items():
                self._credit[name] += weight
            pick = max(self._credit, key=lambda name: self._credit[name])
            self._credit[pick] -= total
            self._dealt.append(pick)
        return self._dealt[n]


def send_gaps(arrival: str, rate_per_s: float, rng: random.Random) -> Iterator[float]:
    """Seconds between intended sends, forever (open loop: ``poisson`` or ``constant``)."""
    if rate_per_s <= 0:
        raise ValueError(f"rate_per_s must be > 0, got {rate_per_s!r}")
    if arrival == "poisson":
        while True:
            yield rng.expovariate(rate_per_s)
    elif arrival == "constant":
        gap = 1.0 / rate_per_s
        yield rng.uniform(0.0, gap)  # a random phase, then a steady beat
        while True:
            yield gap
    else:
        raise ValueError(f"arrival {arrival!r} has no open-loop schedule (poisson, constant)")


def backlog_until(now_ns: int, stopping_ns: int | None) -> int:
    """Until when a stopping user counts its due, unsent sends: the moment the stop began
    (``stopping_ns``, Locust's ``test_stopping``), not ``now_ns``. Locust stops users one
    after another; a send that falls due while it does is the stop's doing, not a
    lagging generator's. No stop under way (a ramp-down): ``now_ns``."""
    return now_ns if stopping_ns is None else min(now_ns, stopping_ns)


def count_backlog(
    next_send_ns: float, until_ns: int, gaps_s: Iterator[float], limit: int = 1_000_000
) -> int:
    """How many intended sends fall at or before ``until_ns``, the next one being due at
    ``next_send_ns`` and the ones after it ``gaps_s`` apart (at most ``limit``)."""
    due, intended = 0, next_send_ns
    while intended <= until_ns and due < limit:
        due += 1
        intended += int(next(gaps_s) * 1e9)
    return due


_FILLER = "chatcap load message, the quick brown fox jumps over the lazy dog. "


def body_text(body_bytes: int) -> str:
    """An ASCII message body of exactly ``body_bytes`` bytes."""
    if body_bytes < 0:
        raise ValueError(f"body_bytes must be >= 0, got {body_bytes!r}")
    return (_FILLER * (body_bytes // len(_FILLER) + 1))[:body_bytes]
