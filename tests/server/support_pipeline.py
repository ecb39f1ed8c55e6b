"""The server's real Send path under a script: manual clock, scripted store, every answer.

For the differential test (server against model): one script of sends and commit
outcomes drives the server's own objects — :class:`~server.session.Session`,
:class:`~server.writer.Writer`, :class:`~server.storepool.StorePool`,
:class:`~server.dedup.Deduper`, the scenario's send limiter and breaker, the fault
injector — wired as :class:`server.app.ChatServer` wires them, with two stand-ins:

* **the clock.** One :class:`ManualClock` is the server's clock (``SendPath.clock``, the
  writer's, the pool's, the breaker's and limiter's ``now``) *and* the event loop's
  ``time()``: the run happens on a :class:`VirtualTimeLoop` whose selector, instead of
  sleeping until the next timer, moves the clock there. Time passes only when every task
  is waiting, as in SimPy; nothing sleeps for real. Timers (the pool's acquire timeout,
  the commit deadline, injected latency, read throttling) fire at exact virtual times.
* **the store.** :class:`ScriptedStore` keeps rooms and seqs in memory (the same rules as
  SQLite's: one seq per room, a retried ``(sender, client_msg_id)`` answered with the
  stored row and ``duplicate=True``); its commit of batch *k* (0-based, in the order the
  writer commits) does what ``commits[k]`` says: succeed, raise ``StoreError``, and/or take
  ``delay_s`` seconds (:class:`Commit`). Batches past the script succeed at once. The pool
  runs store calls on :class:`ScriptedExecutor` (no threads): the call runs at once and
  its result is released ``delay_s`` later on the virtual clock. A commit over the
  scenario's ``store.call_timeout_s`` is answered as failed, and — like a real SQLite
  commit whose thread cannot be stopped — is still stored.

Connections are stand-ins too (:class:`ScriptedConnection`): frames reach the session
through its real ``run()`` loop (decode, middleware, read throttling) at the scripted
times; the hub writes through a recording ``broadcast``.

API::

    run = run_pipeline(
        sends=[(0.0, "ann", "c1", "r"), (0.001, "ann", "c1", "r")],  # (t_s, user, cid, room)
        commits=[Commit(delay_s=0.2), Commit(fails=True)],
        overrides={"server.store.batch_max": 4},        # scenario keys, as in scenarios/
        members={"r": ("ann", "bob")},                   # default: each room's senders
        horizon_s=60.0,                                  # give up on answers after this
    )
    run.outcomes[i]   # Outcome of send i: kind "ack" (seq, duplicate) or "error" (code,
                      # retry_after_ms); at_s = when answered; None if never answered
    run.frames["bob"] # [Frame(at_s, kind "deliver" | "ack" | "error", room, seq, cid)], in
                      # the order that connection was written to
    run.wire          # every Frame of every connection, in write order, with .user
    run.store.rows    # what the store holds, {room: [StoredMessage, ...]}

An answer is matched to its send exactly: one written while the session handles the
send's frame is that send's; a later one (after a commit) goes to the oldest send of the
same ``(user, client_msg_id)`` still waiting, which is the order the server answers them.
``duplicate`` is True for an Ack of a ``(user, client_msg_id)`` already acked before.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import selectors
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.protocol import State

from chatcap import wiring
from chatcap.protocol import CODECS, Ack, Deliver, Error, Send
from chatcap.scenario import Scenario, load_scenario
from server.clock import Clock
from server.dedup import Deduper
from server.hub import Client, Hub
from server.metrics import Metrics
from server.session import SendPath, Session
from server.store import PendingSend, StoredMessage, StoreError
from server.storepool import StorePool
from server.writer import Writer, start_write_path

__all__ = [
    "Commit",
    "Frame",
    "ManualClock",
    "Outcome",
    "PipelineRun",
    "ScriptedStore",
    "VirtualTimeLoop",
    "run_pipeline",
]

ROOT = Path(__file__).resolve().parents[2]
JSON = CODECS["json"]
SendEvent = tuple[float, str, str, str]  # (t_s, user, client_msg_id, room)


# ---------------------------------------------------------------------- the clock


class ManualClock:
    """Seconds that move only when told (``advance``) or when the loop is idle."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"time does not run backwards ({seconds!r} s)")
        self.now += seconds


class _VirtualSelector(selectors.DefaultSelector):
    """Polls the real selector (the loop's self-pipe) without waiting; a wait for the
    next timer moves the clock instead."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:  # nothing ready, no timer: every task waits for the others
            raise RuntimeError("the scripted run is stuck: no task can make progress")
        self._clock.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` is a :class:`ManualClock` that jumps to the next
    timer whenever nothing is ready."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(selector=_VirtualSelector(clock))
        self.clock = clock

    def time(self) -> float:
        return self.clock.now


# ---------------------------------------------------------------------- the store


@dataclass(frozen=True)
class Commit:
    """What one batch's commit does: take ``delay_s``, then succeed or fail."""

    delay_s: float = 0.0
    fails: bool = False


class ScriptedStore:
    """Rooms in memory and a script of commit outcomes (see the module docstring)."""

    def __init__(
        self, commits: Sequence[Commit] = (), blocking_clock: ManualClock | None = None
    ) -> None:
        """``blocking_clock``: a commit moves it by its delay itself (a commit on the
        loop's thread blocks the loop that long) instead of leaving the delay for the
        executor."""
        self.commits = list(commits)
        self._blocking_clock = blocking_clock
        self.rows: dict[str, list[StoredMessage]] = defaultdict(list)
        self.batches = 0  # commits attempted
        self._by_key: dict[tuple[str, str], StoredMessage] = {}
        self._delay_s = 0.0

    def connect(self) -> ScriptedStoreConnection:
        return ScriptedStoreConnection(self)

    def take_delay(self) -> float:
        """The delay of the call that just ran (0 for anything but a commit)."""
        delay_s, self._delay_s = self._delay_s, 0.0
        return delay_s

    def commit(self, batch: Sequence[PendingSend], ts_us: int) -> list[StoredMessage]:
        step = self.commits[self.batches] if self.batches < len(self.commits) else Commit()
        self.batches += 1
        if self._blocking_clock is not None:
            self._blocking_clock.advance(step.delay_s)
        else:
            self._delay_s = step.delay_s
        if step.fails:
            raise StoreError(f"scripted store error (batch {self.batches - 1})")
        out = []
        for p in batch:
            found = self._by_key.get((p.sender, p.client_msg_id))
            if found is not None:
                out.append(dataclasses.replace(found, duplicate=True))
                continue
            seq = len(self.rows[p.room]) + 1
            msg = StoredMessage(p.room, seq, p.sender, p.client_msg_id, p.body, ts_us, p.sent_at_us)
            self.rows[p.room].append(msg)
            self._by_key[(p.sender, p.client_msg_id)] = msg
            out.append(msg)
        return out


class ScriptedStoreConnection:
    """A ``StoreConnection`` stand-in on a :class:`ScriptedStore`."""

    def __init__(self, store: ScriptedStore) -> None:
        self.store = store

    def commit_batch(self, batch: Sequence[PendingSend], ts_us: int) -> list[StoredMessage]:
        return self.store.commit(batch, ts_us)

    def last_seq(self, room: str) -> int:
        return len(self.store.rows.get(room, ()))

    def close(self) -> None:
        pass


class ScriptedExecutor(concurrent.futures.Executor):
    """Runs a store call at once, on the loop's thread, and releases its outcome after
    the store's scripted delay (on the virtual clock)."""

    def __init__(self, store: ScriptedStore) -> None:
        self.store = store

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            result, error = fn(*args, **kwargs), None
        except BaseException as exc:
            result, error = None, exc
        delay_s = self.store.take_delay()

        def settle() -> None:
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(result)

        if delay_s > 0:
            asyncio.get_running_loop().call_later(delay_s, settle)
        else:
            settle()
        return fut


# ---------------------------------------------------------------------- connections


@dataclass(frozen=True)
class Frame:
    """One frame written to a connection."""

    at_s: float
    user: str
    kind: str  # "deliver", "ack" or "error"
    room: str
    seq: int
    client_msg_id: str


@dataclass(frozen=True)
class Outcome:
    """The answer one send got."""

    at_s: float
    kind: str  # "ack" or "error"
    seq: int = 0
    code: str = ""
    retry_after_ms: int = 0
    duplicate: bool = False


class ScriptedConnection:
    """A ``ServerConnection`` stand-in: yields the frames put in, records none itself."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.state = State.OPEN
        self.protocol = self  # the hub reads conn.protocol.state
        self.transport = self  # and conn.transport.get_write_buffer_size()
        self.close_code = None
        self.queue: asyncio.Queue[tuple[int, str | None]] = asyncio.Queue()
        self.yielded: deque[int] = deque()  # sends whose frames the session has read
        self.session: Session | None = None

    def get_write_buffer_size(self) -> int:
        return 0

    def __aiter__(self) -> ScriptedConnection:
        return self

    async def __anext__(self) -> str:
        index, frame = await self.queue.get()
        if frame is None:
            raise StopAsyncIteration
        self.yielded.append(index)
        return frame

    async def wait_closed(self) -> None:
        await asyncio.Event().wait()  # never: the run ends by cancelling the session


# ---------------------------------------------------------------------- the run


@dataclass
class PipelineRun:
    """What a scripted run saw; see the module docstring."""

    sends: list[SendEvent]
    outcomes: list[Outcome | None]
    frames: dict[str, list[Frame]]
    wire: list[Frame]
    store: ScriptedStore
    metrics: Metrics
    scenario: Scenario
    ended_at_s: float = 0.0
    handled_at_s: list[float | None] = field(default_factory=list)


def scenario_with(overrides: Mapping[str, Any] | None = None, base: str = "smoke") -> Scenario:
    return load_scenario(ROOT / "scenarios" / f"{base}.toml").with_overrides(dict(overrides or {}))


class _Recorder:
    """The hub's ``broadcast``: decodes and records every frame, and matches answers to
    sends (see the module docstring)."""

    def __init__(self, run: PipelineRun, clock: Clock) -> None:
        self.run = run
        self.clock = clock
        self.users: dict[int, str] = {}
        self.handling: int | None = None  # the send whose frame the session is handling
        self.waiting: dict[tuple[str, str], deque[int]] = defaultdict(deque)
        self.acked: set[tuple[str, str]] = set()
        self.answered = asyncio.Event()

    def broadcast(self, conns: Iterable[Any], payload: bytes | str, text: bool = False) -> None:
        msg = JSON.decode(payload)
        for conn in conns:
            user = self.users[id(conn)]
            frame = self._frame(user, msg)
            self.run.frames[user].append(frame)
            self.run.wire.append(frame)
            if frame.kind != "deliver":
                self._answer(user, msg, frame)

    def _frame(self, user: str, msg: Any) -> Frame:
        now = self.clock()
        if isinstance(msg, Deliver):
            return Frame(now, user, "deliver", msg.room, msg.seq, msg.client_msg_id)
        if isinstance(msg, Ack):
            return Frame(now, user, "ack", msg.room, msg.seq, msg.client_msg_id)
        assert isinstance(msg, Error), msg
        return Frame(now, user, "error", "", 0, msg.client_msg_id)

    def _answer(self, user: str, msg: Any, frame: Frame) -> None:
        key = (user, frame.client_msg_id)
        waiting = self.waiting[key]
        index = self.handling
        if index is not None and self.run.sends[index][2] == frame.client_msg_id:
            waiting.remove(index)  # answered while its frame is handled: it is this one's
        else:
            index = waiting.popleft()  # after a commit: the oldest send still waiting
        if isinstance(msg, Ack):
            outcome = Outcome(frame.at_s, "ack", seq=msg.seq, duplicate=key in self.acked)
            self.acked.add(key)
        else:
            outcome = Outcome(frame.at_s, "error", code=msg.code, retry_after_ms=msg.retry_after_ms)
        self.run.outcomes[index] = outcome
        if all(o is not None for o in self.run.outcomes):
            self.answered.set()


def run_pipeline(
    sends: Sequence[SendEvent],
    commits: Sequence[Commit] = (),
    *,
    overrides: Mapping[str, Any] | None = None,
    members: Mapping[str, Sequence[str]] | None = None,
    horizon_s: float = 60.0,
    start_s: float = 0.0,
    commit_on: str = "thread",
) -> PipelineRun:
    """Run the script on a fresh :class:`VirtualTimeLoop`; see the module docstring.

    ``commit_on="loop"``: commits run on the loop as the server runs them under WAL +
    NORMAL; a scripted ``delay_s`` then *blocks* the loop (the clock jumps by it inside
    the commit), so frames due meanwhile are handled when it returns."""
    clock = ManualClock(start_s)
    loop = VirtualTimeLoop(clock)
    try:
        return loop.run_until_complete(
            _run(
                list(sends),
                commits,
                scenario_with(overrides),
                members,
                horizon_s,
                clock,
                commit_on,
            )
        )
    finally:
        loop.close()


async def _run(
    sends: list[SendEvent],
    commits: Sequence[Commit],
    scenario: Scenario,
    members: Mapping[str, Sequence[str]] | None,
    horizon_s: float,
    clock: ManualClock,
    commit_on: str = "thread",
) -> PipelineRun:
    if members is None:
        rooms: dict[str, list[str]] = defaultdict(list)
        for _, user, _, room in sends:
            if user not in rooms[room]:
                rooms[room].append(user)
        members = rooms
    store = ScriptedStore(commits, blocking_clock=clock if commit_on == "loop" else None)
    metrics = Metrics()
    run = PipelineRun(sends, [None] * len(sends), defaultdict(list), [], store, metrics, scenario)
    run.handled_at_s = [None] * len(sends)
    recorder = _Recorder(run, clock)
    path, writer, pool = await _wire(scenario, store, metrics, recorder, clock, commit_on)
    users = sorted({u for us in members.values() for u in us} | {s[1] for s in sends})
    conns: dict[str, ScriptedConnection] = {}
    sessions: list[asyncio.Task[None]] = []
    for user in users:
        conn = ScriptedConnection(user)
        conns[user] = conn
        client = Client(conn, user, JSON, "127.0.0.1")  # type: ignore[arg-type]
        recorder.users[id(conn)] = user
        path.hub.add(client)
        for room, in_room in members.items():
            if user in in_room:
                path.hub.join(client, room)
                path.hub.caught_up(client, room, 0)
        session = Session(path, client)
        session.handle = _tracked(session.handle, conn, recorder, run, clock)
        sessions.append(asyncio.create_task(session.run()))
        conn.session = session
    for index, (t_s, user, cid, room) in enumerate(sends):
        if t_s > clock():
            await asyncio.sleep(t_s - clock())
        body = Send(room=room, client_msg_id=cid, body=f"m{index}", sent_at_us=int(t_s * 1e6))
        conn = conns[user]
        conn.queue.put_nowait((index, JSON.encode(body).decode()))
        held = conn.session
        assert held is not None
        # let the session take the frame now, unless it is holding frames back (throttled)
        while run.handled_at_s[index] is None and held.resume_at <= clock():
            await asyncio.sleep(0)
    if sends:
        try:
            async with asyncio.timeout(horizon_s):
                await recorder.answered.wait()
        except TimeoutError:
            pass
    run.ended_at_s = clock()
    for task in sessions:
        task.cancel()
    await asyncio.gather(*sessions, return_exceptions=True)
    await writer.stop()
    await pool.close()
    run.frames = dict(run.frames)
    return run


def _tracked(
    handle: Callable[[Any, float], None],
    conn: ScriptedConnection,
    recorder: _Recorder,
    run: PipelineRun,
    clock: Clock,
) -> Callable[[Any, float], None]:
    """The session's frame handler, telling the recorder which send it is handling."""

    def tracked(msg: Any, t_in: float) -> None:
        index = conn.yielded.popleft()
        run.handled_at_s[index] = clock()
        send = run.sends[index]
        recorder.waiting[(send[1], send[2])].append(index)
        recorder.handling = index
        try:
            handle(msg, t_in)
        finally:
            recorder.handling = None

    return tracked


async def _wire(
    scenario: Scenario,
    store: ScriptedStore,
    metrics: Metrics,
    recorder: _Recorder,
    clock: Clock,
    commit_on: str = "thread",
) -> tuple[SendPath, Writer, StorePool]:
    """The send path as ``server.app.ChatServer`` builds it (the same
    :func:`server.writer.start_write_path`), on the scripted store and clock."""
    cfg = scenario.server
    log = logging.getLogger("chatcap.test_pipeline")
    hub = Hub(cfg.outbound_buffer_max_bytes, metrics, log, broadcast=recorder.broadcast)
    parts = await start_write_path(
        scenario,
        store.connect,  # type: ignore[arg-type]
        clock=clock,
        log=log,
        breaker_listeners=(metrics.breaker_listener,),
        executor=ScriptedExecutor(store),
        wall_clock_us=lambda: int(clock() * 1e6),
        # "thread": the scripted store takes its virtual time on the executor; "loop":
        # the commit blocks the loop for it (ScriptedStore's blocking_clock)
        commit_on=commit_on,
    )
    path = SendPath(
        config=cfg,
        hub=hub,
        writer=parts.writer,
        limiter=wiring.keyed_limiter(cfg.rate_limit),
        deduper=Deduper(),
        metrics=metrics,
        faults=parts.faults,
        reads=None,  # type: ignore[arg-type]  # members join through the hub directly
        going_away=asyncio.Event(),
        log=log,
        clock=clock,
    )
    return path, parts.writer, parts.pool
