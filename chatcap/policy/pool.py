"""Connection pool *rules* in HikariCP's manner: which connection to hand out, when to
open, retire or report one. Decisions only; the waiting belongs to the runtime (an
asyncio condition in the server, ``simpy.Resource`` in the model).

How a runtime drives the ledger:

* ``checkout(now)`` -> ``Checkout``: ``reuse`` an idle connection (the most recently
  used, like HikariCP's LIFO-ish bag), ``create`` a new one (the ledger has already
  counted it as borrowed; report ``created(id, now)`` when it is open, or ``discard(id)``
  if opening failed), or ``wait`` until ``deadline_s`` and then ask again (after a
  ``checkin`` or ``discard``, or fail at the deadline). ``retire`` lists idle
  connections found past ``max_lifetime_s`` on the way: close them.
* ``checkin(id, now)`` -> ``"keep"`` or ``"retire"`` (past ``max_lifetime_s``: close it).
* ``housekeep(now)`` (HikariCP runs it every 30 s) -> idle connections to close, leaks to
  report and how many connections to open to get back to ``min_idle``; open each with
  ``add_idle(now)`` then ``created(id, now)``.
* ``discard(id)`` forgets a broken connection, wherever it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from chatcap.policy._checks import check_non_negative, check_whole

__all__ = ["Checkout", "Housekeeping", "PoolLedger", "PoolRules"]


@dataclass(frozen=True, slots=True)
class PoolRules:
    """Pool settings; the defaults are HikariCP's.

    =====================  ================  ==========================================
    field                  HikariCP          meaning
    =====================  ================  ==========================================
    ``size``               maximumPoolSize   most connections, idle and in use (10)
    ``min_idle``           minimumIdle       idle connections kept; None = ``size``
    ``acquire_timeout_s``  connectionTimeout wait for a connection (30 s); 0 = forever
    ``idle_timeout_s``     idleTimeout       close idle ones beyond ``min_idle`` (10 min)
    ``max_lifetime_s``     maxLifetime       retire connections this old (30 min); 0 = never
    ``leak_detection_s``   leakDetection…    report a borrow held this long; 0 = off
    =====================  ================  ==========================================

    Validation is permissive where HikariCP only warns and substitutes a value, so a
    model can run on scaled time: HikariCP raises ``connectionTimeout`` below 250 ms to
    30 s, ``idleTimeout`` below 10 s to 10 min, a ``maxLifetime`` below 30 s to 30 min, and
    turns leak detection below 2 s (or above ``maxLifetime``) off; here these are kept as
    given. Like HikariCP, ``idle_timeout_s`` has no effect on a fixed-size pool
    (``min_idle == size``) — see ``idle_eviction_active``. Impossible values raise ValueError.
    HikariCP shortens each connection's lifetime by up to 2.5 % at random to avoid mass
    retirement; the ledger is deterministic and does not.
    """

    size: int = 10
    min_idle: int | None = None
    acquire_timeout_s: float = 30.0
    idle_timeout_s: float = 600.0
    max_lifetime_s: float = 1800.0
    leak_detection_s: float = 0.0

    def __post_init__(self) -> None:
        check_whole("size", self.size, 1)
        object.__setattr__(self, "size", int(self.size))  # 10.0 from TOML -> 10
        if self.min_idle is not None and not (
            isinstance(self.min_idle, int) and 0 <= self.min_idle <= self.size
        ):
            raise ValueError(
                f"min_idle must be an int in [0, size={self.size}] or None, got {self.min_idle!r}"
            )
        check_non_negative("acquire_timeout_s", self.acquire_timeout_s)
        check_non_negative("idle_timeout_s", self.idle_timeout_s)
        check_non_negative("max_lifetime_s", self.max_lifetime_s)
        check_non_negative("leak_detection_s", self.leak_detection_s)

    @property
    def effective_min_idle(self) -> int:
        """``min_idle``, or ``size`` when unset (HikariCP's default)."""
        return self.size if self.min_idle is None else self.min_idle

    @property
    def idle_eviction_active(self) -> bool:
        """Whether idle connections beyond ``min_idle`` are ever closed.

        As HikariCP: only when ``idle_timeout_s > 0`` and the pool is not fixed-size.
        (HikariCP also turns it off when ``idleTimeout`` is within 1 s of ``maxLifetime``;
        a 1 s margin means nothing on scaled time, and an idle timeout at or beyond the
        lifetime never fires first anyway, so the ledger needs no such rule.)
        """
        return self.idle_timeout_s > 0 and self.effective_min_idle < self.size


@dataclass(frozen=True, slots=True)
class Checkout:
    """Answer to ``checkout``: reuse ``conn_id``, create ``conn_id``, or wait until
    ``deadline_s``. ``retire`` lists idle connections found expired: close them."""

    action: Literal["reuse", "create", "wait"]
    conn_id: int | None = None
    deadline_s: float | None = None
    retire: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Housekeeping:
    """Answer to ``housekeep``: connections to close, leaks to report, how many to open."""

    retire: tuple[int, ...] = ()
    leaks: tuple[int, ...] = ()
    create: int = 0


_OPENING, _IDLE, _BORROWED = "opening", "idle", "borrowed"


class _Connection:
    __slots__ = ("borrowed_at_s", "created_at_s", "last_used_at_s", "leak_reported", "status")

    def __init__(self, now: float, status: str) -> None:
        self.created_at_s = now
        self.last_used_at_s = now
        self.borrowed_at_s = now if status == _BORROWED else -math.inf
        self.leak_reported = False
        self.status = status


class PoolLedger:
    """Tracks the pool's connections by id and decides what happens to them."""

    def __init__(self, rules: PoolRules | None = None) -> None:
        self.rules = rules if rules is not None else PoolRules()
        self._connections: dict[int, _Connection] = {}
        self._idle: list[int] = []  # least recently used first; reuse pops from the end
        self._next_id = 1
        self._in_use = 0

    # -- counters -----------------------------------------------------------------

    @property
    def in_use(self) -> int:
        """Connections borrowed (including ones being opened for a borrower)."""
        return self._in_use

    @property
    def idle(self) -> int:
        """Connections open and ready to hand out."""
        return len(self._idle)

    @property
    def total(self) -> int:
        """All connections counted against ``size``, opening ones included."""
        return len(self._connections)

    @property
    def opening(self) -> int:
        """Connections being opened for the pool by ``add_idle``."""
        return self.total - self.in_use - self.idle

    # -- borrowing ----------------------------------------------------------------

    def checkout(self, now: float) -> Checkout:
        """Hand out the most recently used idle connection, open a new one, or wait."""
        expired: list[int] = []
        while self._idle:
            conn_id = self._idle.pop()
            conn = self._connections[conn_id]
            if self._expired(conn, now):
                del self._connections[conn_id]
                expired.append(conn_id)
                continue
            self._borrow(conn, now)
            return Checkout("reuse", conn_id, retire=tuple(expired))
        if self.total < self.rules.size:
            conn_id = self._new_connection(now, _BORROWED)
            self._in_use += 1
            return Checkout("create", conn_id, retire=tuple(expired))
        timeout_s = self.rules.acquire_timeout_s
        deadline_s = now + timeout_s if timeout_s > 0 else math.inf
        return Checkout("wait", deadline_s=deadline_s, retire=tuple(expired))

    def created(self, conn_id: int, now: float) -> None:
        """A connection finished opening at ``now``: its lifetime starts now, and one
        opened by ``add_idle`` becomes idle (ready to hand out)."""
        conn = self._get(conn_id)
        conn.created_at_s = now
        if conn.status == _OPENING:
            conn.status = _IDLE
            conn.last_used_at_s = now
            self._idle.append(conn_id)

    def checkin(self, conn_id: int, now: float) -> Literal["keep", "retire"]:
        """Take a borrowed connection back; ``retire`` means close it (too old)."""
        conn = self._get(conn_id)
        if conn.status != _BORROWED:
            raise RuntimeError(f"connection {conn_id} is {conn.status}, not checked out")
        self._in_use -= 1
        if self._expired(conn, now):
            del self._connections[conn_id]
            return "retire"
        conn.status = _IDLE
        conn.last_used_at_s = now
        self._idle.append(conn_id)
        return "keep"

    def discard(self, conn_id: int) -> None:
        """Forget a broken connection (or one that failed to open), wherever it is."""
        conn = self._get(conn_id)
        if conn.status == _BORROWED:
            self._in_use -= 1
        elif conn.status == _IDLE:
            self._idle.remove(conn_id)
        del self._connections[conn_id]

    # -- upkeep -------------------------------------------------------------------

    def add_idle(self, now: float) -> int | None:
        """Reserve a slot for a connection the pool opens for itself (to keep
        ``min_idle``); None when the pool is already full. Confirm with ``created``."""
        if self.total >= self.rules.size:
            return None
        return self._new_connection(now, _OPENING)

    def housekeep(self, now: float) -> Housekeeping:
        """Retire idle connections that are too old or idle too long (beyond
        ``min_idle``), report new leaks, and say how many to open for ``min_idle``."""
        retire = self._retire_expired_idle(now)
        retire += self._retire_long_idle(now)
        leaks = self._new_leaks(now)
        rules = self.rules
        wanted = rules.effective_min_idle - self.idle - self.opening
        create = max(0, min(rules.size - self.total, wanted))
        return Housekeeping(tuple(retire), tuple(leaks), create)

    # -- internals ----------------------------------------------------------------

    def _retire_expired_idle(self, now: float) -> list[int]:
        expired = [i for i in self._idle if self._expired(self._connections[i], now)]
        for conn_id in expired:
            self._idle.remove(conn_id)
            del self._connections[conn_id]
        return expired

    def _retire_long_idle(self, now: float) -> list[int]:
        rules = self.rules
        if not rules.idle_eviction_active:
            return []
        spare = len(self._idle) - rules.effective_min_idle
        retired: list[int] = []
        for conn_id in list(self._idle):  # least recently used first
            if len(retired) >= spare:
                break
            if now - self._connections[conn_id].last_used_at_s > rules.idle_timeout_s:
                retired.append(conn_id)
        for conn_id in retired:
            self._idle.remove(conn_id)
            del self._connections[conn_id]
        return retired

    def _new_leaks(self, now: float) -> list[int]:
        threshold_s = self.rules.leak_detection_s
        if threshold_s <= 0:
            return []
        leaks = []
        for conn_id, conn in self._connections.items():
            held_s = now - conn.borrowed_at_s
            if conn.status == _BORROWED and not conn.leak_reported and held_s >= threshold_s:
                conn.leak_reported = True
                leaks.append(conn_id)
        return leaks

    def _expired(self, conn: _Connection, now: float) -> bool:
        lifetime_s = self.rules.max_lifetime_s
        return lifetime_s > 0 and now - conn.created_at_s >= lifetime_s

    def _borrow(self, conn: _Connection, now: float) -> None:
        conn.status = _BORROWED
        conn.borrowed_at_s = now
        conn.last_used_at_s = now
        conn.leak_reported = False
        self._in_use += 1

    def _new_connection(self, now: float, status: str) -> int:
        conn_id = self._next_id
        self._next_id += 1
        self._connections[conn_id] = _Connection(now, status)
        return conn_id

    def _get(self, conn_id: int) -> _Connection:
        try:
            return self._connections[conn_id]
        except KeyError:
            raise ValueError(
                f"unknown connection id {conn_id!r} (never issued, or already retired)"
            ) from None
