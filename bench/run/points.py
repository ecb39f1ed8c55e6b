"""A run's points: (replication, offered load, codec), the load shape that offers it.

:func:`load_shape` turns an offered load into users and a per-user rate (see
:mod:`bench.run`, *Offered load → users*); :func:`deliver_bytes` is the encoded size of
one Deliver frame, the codec mix weighted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bench._support.args import BadInput
from bench.load.plan import body_text
from chatcap.protocol import Deliver, get_codec
from chatcap.scenario import CODEC_MIX, CODEC_NAMES, Scenario

CODECS = (*CODEC_NAMES, CODEC_MIX)
NAN = math.nan


class PointFailed(RuntimeError):
    """A point could not be measured; the reason goes into its row's note."""


@dataclass(frozen=True)
class LoadShape:
    """How an offered load is generated: users × per-user rate, and how fast they spawn."""

    offered_per_s: float
    users: int
    send_rate_per_user_per_s: float
    spawn_rate_per_s: float
    note: str = ""

    @property
    def spawn_s(self) -> float:
        return self.users / self.spawn_rate_per_s


def load_shape(offered_per_s: float, scenario: Scenario, max_users: int) -> LoadShape:
    """Keep the scenario's per-user rate, scale the users (see the module docstring)."""
    if offered_per_s <= 0:
        raise BadInput(f"offered load {offered_per_s:g}: must be > 0")
    rate = scenario.workload.send_rate_per_user_per_s
    users = max(1, round(offered_per_s / rate))
    notes = []
    if users > max_users:
        users = max_users
        notes.append(f"users capped at {max_users}, so the per-user rate rose")
    per_user = offered_per_s / users
    limit = scenario.server.rate_limit
    if limit.algorithm != "none" and per_user > limit.rate_per_s:
        notes.append(
            f"{per_user:g} sends/s per user exceeds the server's rate limit "
            f"({limit.rate_per_s:g}/s): expect rate_limited"
        )
    spawn = float(min(users, scenario.server.handshake_rate_per_s))
    return LoadShape(offered_per_s, users, per_user, spawn, "; ".join(notes))


@dataclass(frozen=True)
class Point:
    """One measurement: a codec at an offered load, in one replication."""

    index: int
    total: int
    codec: str
    shape: LoadShape
    replication: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.codec}-{self.shape.offered_per_s:g}-r{self.replication}"

    def describe(self) -> dict[str, Any]:
        """The point as plain data (manifest, ``point.json``)."""
        shape = self.shape
        return {
            "point": self.name,
            "codec": self.codec,
            "replication": self.replication,
            "seed": self.seed,
            "offered_per_s": shape.offered_per_s,
            "users": shape.users,
            "send_rate_per_user_per_s": shape.send_rate_per_user_per_s,
            "spawn_rate_per_s": shape.spawn_rate_per_s,
            "shape_note": shape.note,
        }


def deliver_bytes(codec: str, body_bytes: int, codec_mix: Mapping[str, float]) -> float:
    """Encoded size of a representative Deliver with a ``body_bytes`` body.

    Ids, seq and times at the magnitudes a run produces (16-digit µs stamps, a
    ``client_msg_id`` like the generator's). ``mix``: the codec mix's weighted mean.
    """
    if codec == CODEC_MIX:
        total = sum(codec_mix.values())
        return sum(
            w / total * deliver_bytes(name, body_bytes, codec_mix) for name, w in codec_mix.items()
        )
    frame = Deliver(
        room="r0-12",
        seq=123_456,
        sender="u0-123",
        body=body_text(body_bytes),
        ts_us=1_795_000_000_000_000,
        client_msg_id="19ac4e5f2b1.123.4567",
        sent_at_us=1_795_000_000_000_000,
    )
    return float(len(get_codec(codec).encode(frame)))
