"""In-memory idempotency: the same ``(user, client_msg_id)`` gets the same answer.

A client that retries a Send (same ``client_msg_id``) while the first attempt is still
queued or committing must not produce a second message, and one that retries after the
ack was lost must get the same ack. :class:`Deduper` remembers, per key, the future of
the first attempt while it is in flight and its :class:`StoredMessage` once it succeeded.

* A failed (or cancelled) first attempt is forgotten, so the retry is tried again.
* The map is LRU-bounded; a key that fell out, or one from before a restart, reaches the
  store, whose unique index on ``(sender, client_msg_id)`` is the durable backstop (it
  answers with the stored row and ``duplicate=True``).

Several attempts may wait on one future: await it through ``asyncio.shield`` so that a
client that disconnects cancels only its own wait, not the write others wait for.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from server.store import StoredMessage

__all__ = ["Deduper"]

Key = tuple[str, str]
Entry = asyncio.Future[StoredMessage] | StoredMessage


class Deduper:
    """An LRU map ``(user, client_msg_id) -> in-flight future | StoredMessage``."""

    def __init__(self, max_entries: int = 50_000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries!r}")
        self.max_entries = max_entries
        self.hits = 0
        self._entries: OrderedDict[Key, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, user: str, client_msg_id: str) -> Entry | None:
        """The first attempt's future (still in flight) or its message; None if unknown.

        A hit counts in ``hits`` and makes the key most recently used.
        """
        key = (user, client_msg_id)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if isinstance(entry, asyncio.Future) and entry.done():
            # Settled, but its callback has not run yet (callbacks run on the next loop
            # turn): settle the entry here so a failed attempt never answers a retry.
            self._settle(key, entry)
            entry = self._entries.get(key)
            if entry is None:
                return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def remember(self, user: str, client_msg_id: str, fut: asyncio.Future[StoredMessage]) -> None:
        """Record the first attempt of ``(user, client_msg_id)``."""
        key = (user, client_msg_id)
        self._entries[key] = fut
        self._entries.move_to_end(key)
        fut.add_done_callback(lambda done: self._settle(key, done))
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def _settle(self, key: Key, fut: asyncio.Future[StoredMessage]) -> None:
        """Keep the message of a success (not the future); forget a failure."""
        if self._entries.get(key) is not fut:  # evicted, or replaced by a newer attempt
            return
        if fut.cancelled() or fut.exception() is not None:
            del self._entries[key]
        else:
            # Keep what an Ack needs, not the body: entries live until evicted.
            r = fut.result()
            self._entries[key] = StoredMessage(
                r.room, r.seq, r.sender, r.client_msg_id, "", r.ts_us, r.sent_at_us, r.duplicate
            )
