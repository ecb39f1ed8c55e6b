"""Idempotency: the same ``(user, client_msg_id)`` gets the same answer, never a second
message.

Theory of operation. A key moves through three states::

    unknown ──begin(handle)──► in flight ──settle(handle, ack)──► stored
       ▲                          │                                  │
       └────────fail(handle)──────┘          evicted (LRU) / discard ┘──► unknown

and a Send whose key is known gets, instead of a new write:

=============  ==========  ============================================================
state          answer      what the driver does
=============  ==========  ============================================================
unknown        ``NEW``     submit a write; ``begin(key, handle)`` with its handle
in flight      ``JOIN``    wait on :meth:`DedupTable.in_flight`'s handle: the first
                           attempt's outcome is this one's too
stored         ``REPLAY``  answer at once with :meth:`DedupTable.stored`'s ack (same seq,
                           same ts), no commit
=============  ==========  ============================================================

* A failed (or cancelled) first attempt is forgotten, so a retry is tried afresh.
* ``settle`` and ``fail`` act only if the entry is still the handle they name: a key
  evicted and begun again by a newer attempt is not touched by the old one's outcome.
* With ``max_entries`` the table is LRU-bounded (a hit refreshes its key); a key that
  fell out — or one from before a restart — reaches the store, whose unique index on
  ``(sender, client_msg_id)`` is the durable backstop. ``None`` keeps every key until
  :meth:`DedupTable.discard` (the model drops a message once its client is done).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final, Generic, Literal, TypeVar, cast

__all__ = ["JOIN", "NEW", "REPLAY", "SERVER_DEDUP_ENTRIES", "Answer", "DedupTable", "Stored"]

SERVER_DEDUP_ENTRIES: Final = 50_000
"""The server's table holds this many keys (LRU). Until it is full every acked message
adds an entry the process keeps — the garbage collector's young generation fills and
collections follow; once full, each new key evicts an old one and the heap stops
growing (the model charges the collector by these two regimes: ``sim.calibration``)."""

K = TypeVar("K")
H = TypeVar("H")
A = TypeVar("A")

Answer = Literal["new", "join", "replay"]
NEW: Final = "new"
JOIN: Final = "join"
REPLAY: Final = "replay"


class Stored(Generic[A]):
    """The entry of a committed message: what its duplicate answer needs."""

    __slots__ = ("ack",)

    def __init__(self, ack: A) -> None:
        self.ack = ack


class _StoredMark:
    """The in-table mark of a stored key (its ack is kept beside, in ``_acks``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<stored>"


_STORED: Final = _StoredMark()


class DedupTable(Generic[K, H, A]):
    """``key -> in-flight handle | Stored(ack)``; see the module docstring.

    Kept as ``key -> handle | _STORED`` with the acks of stored keys in a second dict
    (``None`` acks implied, not kept), so settling allocates nothing. Unbounded, the
    entries are a plain ``dict`` (cheaper than an ``OrderedDict`` on every call);
    bounded, an ``OrderedDict`` keeps the LRU order."""

    __slots__ = ("_acks", "_entries", "_lru", "hits", "max_entries")

    def __init__(self, max_entries: int | None = None) -> None:
        if max_entries is not None and max_entries < 1:
            raise ValueError(f"max_entries must be >= 1 or None, got {max_entries!r}")
        self.max_entries = max_entries
        self.hits = 0  # Sends that found their key known (JOIN or REPLAY)
        lru: OrderedDict[K, H | _StoredMark] | None = None
        if max_entries is not None:
            lru = OrderedDict()
        self._lru = lru  # the same mapping as _entries when bounded, else None
        self._entries: dict[K, H | _StoredMark] = {} if lru is None else lru
        # the acks of keys marked _STORED, but for a None ack (implicit: the model's)
        self._acks: dict[K, A] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def answer(self, key: K) -> Answer:
        """What a Send with ``key`` gets: ``NEW``, ``JOIN`` or ``REPLAY``."""
        entry = self._entries.get(key)
        if entry is None:
            return NEW
        self.hits += 1
        if self._lru is not None:
            self._lru.move_to_end(key)
        return REPLAY if entry is _STORED else JOIN

    def in_flight(self, key: K) -> H:
        """The handle of ``key``'s first attempt (after ``JOIN``); KeyError otherwise."""
        entry = self._entries[key]
        if entry is _STORED:
            raise KeyError(f"{key!r} is stored, not in flight")
        return cast(H, entry)

    def stored(self, key: K) -> A:
        """The ack of ``key``'s stored message (after ``REPLAY``); KeyError otherwise."""
        if self._entries[key] is not _STORED:
            raise KeyError(f"{key!r} is in flight, not stored")
        return cast(A, self._acks.get(key))

    def begin(self, key: K, handle: H) -> None:
        """``key``'s first attempt is in flight as ``handle``."""
        acks = self._acks
        if acks:  # begun over a stored key: its ack goes
            acks.pop(key, None)
        self._entries[key] = handle
        lru = self._lru
        if lru is not None:
            lru.move_to_end(key)
            limit = cast(int, self.max_entries)
            while len(lru) > limit:
                evicted, entry = lru.popitem(last=False)
                if entry is _STORED and acks:
                    acks.pop(evicted, None)

    def settle(self, key: K, handle: H, ack: A) -> bool:
        """``handle`` committed: keep only ``ack``. False if the entry moved on."""
        entries = self._entries
        if entries.get(key) is not handle:
            return False
        entries[key] = _STORED
        if ack is not None:
            self._acks[key] = ack
        return True

    def fail(self, key: K, handle: H) -> bool:
        """``handle`` failed: forget ``key`` so a retry is new. False if it moved on."""
        entries = self._entries
        if entries.get(key) is not handle:
            return False
        del entries[key]
        return True

    def discard(self, key: K) -> None:
        """Forget ``key`` whatever its state (no error if unknown)."""
        if self._entries.pop(key, None) is _STORED and self._acks:
            self._acks.pop(key, None)
