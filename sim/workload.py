"""Who is in which room, with which codec, and when sends happen: the offered load.

Pure functions of the scenario and a seed, so the model (and, later, the load generator,
which may import this module) lay a workload out identically:

* **codecs** — users get codecs in exact proportion to ``workload.codec_mix`` (largest
  remainder, so 200 users at 1:1 are 100 + 100), shuffled by the seed;
* **rooms** — room sizes are drawn from ``workload.room_size`` (``fixed``: ``size``;
  ``uniform``: ``min..max``; ``zipf``: ``min - 1 + Zipf(zipf_s)`` capped at ``max``);
  members are dealt from shuffled decks of all users, so memberships spread evenly and
  no user is in a room twice. Users left without a room (fewer memberships than users)
  join rooms round-robin, so every user can send — those rooms grow past their drawn
  size. A user sends each message to one of its rooms, chosen uniformly;
* **replay** — :func:`load_replay` reads the send times of a measured ``requests.csv``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chatcap.scenario import CODEC_NAMES, WorkloadConfig

__all__ = ["Layout", "Replay", "ReplayError", "build_layout", "codec_counts", "load_replay"]


class ReplayError(ValueError):
    """A replay log is unreadable or does not fit the scenario; the message says why."""


@dataclass(frozen=True)
class Layout:
    """The static workload: each user's codec and rooms, each room's members."""

    user_codec: np.ndarray  # codec index (into CODEC_NAMES) per user
    room_members: tuple[np.ndarray, ...]  # user indices per room
    user_rooms: tuple[tuple[int, ...], ...]  # room indices per user

    @property
    def users(self) -> int:
        return len(self.user_codec)

    @property
    def rooms(self) -> int:
        return len(self.room_members)


def codec_counts(mix: dict[str, float], users: int) -> list[int]:
    """Users per codec (in ``CODEC_NAMES`` order), proportional to the weights, summing
    to ``users`` (largest remainder; ties go to the earlier codec)."""
    weights = np.array([mix.get(c, 0.0) for c in CODEC_NAMES], dtype=float)
    exact = weights / weights.sum() * users
    counts = np.floor(exact).astype(int)
    short = users - int(counts.sum())
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:short]] += 1
    return [int(c) for c in counts]


def build_layout(workload: WorkloadConfig, rng: np.random.Generator) -> Layout:
    """Lay out codecs and rooms for ``workload`` from ``rng`` (deterministic per seed)."""
    users = workload.users
    counts = codec_counts(workload.codec_mix, users)
    user_codec = rng.permutation(np.repeat(np.arange(len(CODEC_NAMES), dtype=np.int8), counts))
    sizes = _room_sizes(workload, rng)
    members = _deal_members(sizes, users, rng)
    return Layout(user_codec, tuple(members), _rooms_of_users(members, users))


def _room_sizes(workload: WorkloadConfig, rng: np.random.Generator) -> np.ndarray:
    rs, rooms = workload.room_size, workload.rooms
    if rs.distribution == "fixed":
        return np.full(rooms, rs.size, dtype=np.int64)
    if rs.distribution == "uniform":
        return rng.integers(rs.min, rs.max + 1, size=rooms)
    return np.minimum(rs.max, rs.min - 1 + rng.zipf(rs.zipf_s, size=rooms))


def _deal_members(sizes: np.ndarray, users: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Deal members from consecutive shuffled decks of all users (see module docstring)."""
    total = int(sizes.sum())
    decks = max(1, -(-total // users))
    stream = np.concatenate([rng.permutation(users) for _ in range(decks)])
    edges = np.concatenate(([0], np.cumsum(sizes)))
    members = []
    for room in range(len(sizes)):
        chunk = stream[edges[room] : edges[room + 1]]
        if edges[room] // users != (edges[room + 1] - 1) // users:  # spans two decks
            chunk = _without_repeats(chunk, users, rng)
        members.append(chunk)
    if total < users:  # the rest of the first deck has no room yet
        for i, user in enumerate(stream[total:users]):
            room = i % len(members)
            members[room] = np.append(members[room], user)
    return members


def _without_repeats(chunk: np.ndarray, users: int, rng: np.random.Generator) -> np.ndarray:
    """Replace repeated users of a room that spans two decks by users not yet in it."""
    unique = list(dict.fromkeys(chunk.tolist()))
    missing = len(chunk) - len(unique)
    if missing:
        taken = set(unique)
        spare = [u for u in rng.permutation(users).tolist() if u not in taken]
        unique += spare[:missing]
    return np.array(unique, dtype=chunk.dtype)


def _rooms_of_users(members: list[np.ndarray], users: int) -> tuple[tuple[int, ...], ...]:
    flat_users = np.concatenate(members)
    flat_rooms = np.repeat(np.arange(len(members)), [len(m) for m in members])
    order = np.argsort(flat_users, kind="stable")
    starts = np.searchsorted(flat_users[order], np.arange(users + 1))
    rooms_sorted = flat_rooms[order].tolist()
    return tuple(tuple(rooms_sorted[starts[u] : starts[u + 1]]) for u in range(users))


# ---------------------------------------------------------------------------- replay


@dataclass(frozen=True)
class Replay:
    """Sends of a script or a measured run, in time order.

    Without ``message`` every entry is a message's first attempt (the model makes its
    own retries). With it, entries that share a ``message`` id are attempts of one
    message, in order: the first is new, each later one is its next attempt (the same
    ``client_msg_id``, deduplicated by the server) — a script of explicit retries, as
    the server-vs-model differential test sends them."""

    intended_s: list[float]
    user: list[int]
    room: list[int]
    codec: list[int]  # index into CODEC_NAMES
    message: list[int] | None = None

    def __len__(self) -> int:
        return len(self.intended_s)


def load_replay(source: str | Path | pd.DataFrame, workload: WorkloadConfig) -> Replay:
    """Read a ``requests.csv`` (or such a DataFrame): columns ``intended_s``, ``user``,
    ``room``, ``codec``; with an ``attempt`` column only first attempts are kept (the
    model makes its own retries). Users and rooms must exist in ``workload``."""
    frame = _read_frame(source)
    missing = [c for c in ("intended_s", "user", "room", "codec") if c not in frame.columns]
    if missing:
        raise ReplayError(f"replay: missing column(s) {', '.join(missing)}")
    if "attempt" in frame.columns:
        frame = frame[frame["attempt"] == 1]
    frame = frame.sort_values("intended_s", kind="stable")
    try:
        times = frame["intended_s"].to_numpy(dtype=float)
        user = frame["user"].to_numpy(dtype=np.int64)
        room = frame["room"].to_numpy(dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise ReplayError(f"replay: a column is not numeric ({exc})") from None
    codec_names = frame["codec"].astype(str).to_numpy()
    _check_replay(times, user, room, codec_names, workload)
    index = {name: i for i, name in enumerate(CODEC_NAMES)}
    return Replay(
        times.tolist(), user.tolist(), room.tolist(), [index[c] for c in codec_names.tolist()]
    )


def _read_frame(source: str | Path | pd.DataFrame) -> pd.DataFrame:
    if isinstance(source, pd.DataFrame):
        return source
    try:
        return pd.read_csv(source)
    except FileNotFoundError:
        raise ReplayError(f"replay: {source}: no such file") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ReplayError(f"replay: {source}: cannot read ({exc})") from None


def _check_replay(
    times: np.ndarray, user: np.ndarray, room: np.ndarray, codecs: Any, w: WorkloadConfig
) -> None:
    if len(times) and (not np.all(np.isfinite(times)) or times[0] < 0):
        raise ReplayError("replay: intended_s must be finite and ≥ 0")
    bad_users = user[(user < 0) | (user >= w.users)]
    if len(bad_users):
        raise ReplayError(f"replay: user {int(bad_users[0])} outside workload.users ({w.users})")
    bad_rooms = room[(room < 0) | (room >= w.rooms)]
    if len(bad_rooms):
        raise ReplayError(f"replay: room {int(bad_rooms[0])} outside workload.rooms ({w.rooms})")
    unknown = sorted(set(codecs.tolist()) - set(CODEC_NAMES))
    if unknown:
        raise ReplayError(f"replay: unknown codec(s) {', '.join(unknown)}")
