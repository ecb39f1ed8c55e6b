"""In-memory idempotency: the same ``(user, client_msg_id)`` gets the same answer.

A client that retries a Send (same ``client_msg_id``) while the first attempt is still
queued or committing must not produce a second message, and one that retries after the
ack was lost must get the same ack. The lifecycle — in flight, stored, duplicate
answer; a failure forgets; LRU-bounded — is :class:`chatcap.pipeline.dedup.DedupTable`'s,
shared with the model. :class:`Deduper` carries it out with asyncio futures: the handle
of an attempt in flight is its write future, settled into the table by a callback.

* A failed (or cancelled) first attempt is forgotten, so the retry is tried again.
* A key that fell out of the LRU bound, or one from before a restart, reaches the
  store, whose unique index on ``(sender, client_msg_id)`` is the durable backstop (it
  answers with the stored row and ``duplicate=True``).

Several attempts may wait on one future: await it through ``asyncio.shield`` so that a
client that disconnects cancels only its own wait, not the write others wait for.
"""

from __future__ import annotations

import asyncio

from chatcap.pipeline.dedup import JOIN, NEW, SERVER_DEDUP_ENTRIES, DedupTable
from server.store import StoredMessage

__all__ = ["Deduper"]

Key = tuple[str, str]
Entry = asyncio.Future[StoredMessage] | StoredMessage


class Deduper:
    """``(user, client_msg_id) -> in-flight future | StoredMessage``, LRU-bounded."""

    def __init__(self, max_entries: int = SERVER_DEDUP_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries!r}")
        self.max_entries = max_entries
        self.hits = 0  # lookups that found the first attempt (in flight or stored)
        self._table: DedupTable[Key, asyncio.Future[StoredMessage], StoredMessage] = DedupTable(
            max_entries
        )

    def __len__(self) -> int:
        return len(self._table)

    def lookup(self, user: str, client_msg_id: str) -> Entry | None:
        """The first attempt's future (still in flight) or its message; None if unknown.

        A hit counts in ``hits`` and makes the key most recently used.
        """
        key = (user, client_msg_id)
        answer = self._table.answer(key)
        if answer == NEW:
            return None
        if answer == JOIN:
            fut = self._table.in_flight(key)
            if not fut.done():
                self.hits += 1
                return fut
            # Settled, but its callback has not run yet (callbacks run on the next loop
            # turn): settle the entry here so a failed attempt never answers a retry.
            self._settle(key, fut)
            if self._table.answer(key) == NEW:
                return None
        self.hits += 1
        return self._table.stored(key)

    def remember(self, user: str, client_msg_id: str, fut: asyncio.Future[StoredMessage]) -> None:
        """Record the first attempt of ``(user, client_msg_id)``."""
        key = (user, client_msg_id)
        self._table.begin(key, fut)
        fut.add_done_callback(lambda done: self._settle(key, done))

    def _settle(self, key: Key, fut: asyncio.Future[StoredMessage]) -> None:
        """Keep the message of a success (not the future); forget a failure. The table
        ignores an attempt whose key was evicted or begun again by a newer attempt."""
        if fut.cancelled() or fut.exception() is not None:
            self._table.fail(key, fut)
            return
        # Keep what an Ack needs, not the body: entries live until evicted.
        r = fut.result()
        slim = StoredMessage(
            r.room, r.seq, r.sender, r.client_msg_id, "", r.ts_us, r.sent_at_us, r.duplicate
        )
        self._table.settle(key, fut, slim)
