"""Where the writer runs a store commit: on the event loop's own thread, or on a pool thread.

A commit on a pool thread costs two thread hops (loop → thread, then a wake-up of the
loop through its self-pipe) and a fight for the GIL while the thread runs Python around
SQLite. With ``synchronous = NORMAL`` (or ``OFF``) in WAL mode a commit does not fsync:
it writes the WAL in the page cache and returns within tens of µs, less than the hops
cost, so the writer commits on the loop. ``FULL`` and ``EXTRA`` fsync every commit
(milliseconds, the loop would stall for it), and several server processes on one file
can make a commit wait for another process's write lock (SQLite's busy handler sleeps):
those commit on a thread. The durability promise is the same either way — the Ack is
sent only after ``COMMIT`` returned.

The scenario's ``server.store.commit_on`` chooses (:data:`COMMIT_ON`):

* ``auto`` (default) — :func:`commit_place` decides by the rule above;
* ``loop`` / ``thread`` — as named, whatever the sync mode.

Pure: no I/O, no clock; the server and tools call :func:`commit_place` with the
scenario's values.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["COMMIT_ON", "LOOP_SYNCHRONOUS", "CommitPlace", "commit_place"]

CommitPlace = Literal["loop", "thread"]

COMMIT_ON: tuple[str, ...] = ("auto", "loop", "thread")
"""The values ``server.store.commit_on`` takes."""

LOOP_SYNCHRONOUS: tuple[str, ...] = ("OFF", "NORMAL")
"""SQLite ``synchronous`` modes without an fsync per commit: ``auto`` commits on the loop."""


def commit_place(commit_on: str, synchronous: str, processes: int = 1) -> CommitPlace:
    """Where commits run for ``server.store.commit_on`` = ``commit_on``, with SQLite's
    ``synchronous`` mode and ``processes`` server processes sharing the store.

    Raises ValueError, one line naming the key, the value and what is allowed, for a
    ``commit_on`` outside :data:`COMMIT_ON`.
    """
    if commit_on not in COMMIT_ON:
        raise ValueError(
            f"server.store.commit_on = {commit_on!r}: expected one of {', '.join(COMMIT_ON)}"
        )
    if commit_on == "loop":
        return "loop"
    if commit_on == "thread":
        return "thread"
    if synchronous.upper() in LOOP_SYNCHRONOUS and processes <= 1:
        return "loop"
    return "thread"
