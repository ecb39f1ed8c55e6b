"""The SimPy model of the chat server's send pipeline, built from ``chatcap.policy``
and ``chatcap.pipeline`` — the same rule objects the server calls.

A ``Send`` travels the stages of the design's "one pipeline, two implementations":

1. **ingress** on the sender's process (users stick to process ``user % processes``):
   the event loop decodes the frame (``per_send_fixed_us + decode_us``); the per-user
   limiter (a ``KeyedLimiter`` from ``chatcap.wiring``) is asked at the moment the loop
   picks the frame up — refused: an ``Error`` frame, outcome ``rate_limited``, its
   ``retry_after`` as protocol ms (``chatcap.pipeline.answers.protocol_ms``), and that
   user's next frames are read no earlier than ``answers.throttle_until`` (the server's
   read throttling), in order;
2. **dedup** by ``(user, message)`` (``chatcap.pipeline.dedup.DedupTable``, unbounded;
   an entry goes when its client is done with the message and no attempt of it is left
   in the server): a retry of a message in
   flight joins its write and shares the outcome; one already stored is acked at once,
   without a commit;
3. the **bounded write queue** (``write_queue_max``, else ``overloaded`` with the
   drain-rate ``retry_after`` of ``chatcap.pipeline.drain``);
4. the **batching writer**: a batch slot is taken before a batch is cut (``batch_max``
   at most), ``store.max_in_flight_batches`` in flight; each batch asks the **breaker**
   (``unavailable``), takes a **pool** connection (``chatcap.pipeline.handoff.WaitLine``:
   FIFO with hand-off; ``store_busy`` after ``acquire_timeout_ms``, no breaker outcome),
   spends the injected **fault** latency holding it, may fail by the injected error
   rate (``chatcap.pipeline.faults.FaultPlan``, drawn from the model's seeded
   ``Random``; ``error``, breaker error),
   then **commits**: the store runs ``store_concurrency`` commits at once in arrival
   order (1 = SQLite; 0 = one per connection), service time drawn from
   ``sim.store_service`` with mean ``store_service_ms + store_per_msg_ms × (n − 1)``;
   a commit over ``store.call_timeout_s`` is answered ``error`` at the deadline but
   keeps its connection and stores the rows (a retry then finds a duplicate). The
   breaker hears each batch's outcome with its duration: the connection held, less
   the wait for the store's turn;
5. after the commit the loop runs, per message in batch order, the **fan-out** (encode
   once per codec present + one write per member, the sending connection skipped: its
   Ack says it all) and the **ack** to every attempt waiting on it. Members on other
   processes are served by their own loops, as if the processes shared a broadcast
   bus (the server has no cross-process fan-out yet).

The client side: each attempt waits ``ack_timeout_ms``; an answer after that is wasted
work (the metastable mechanism). Retries follow ``chatcap.policy.RetryPolicy`` (backoff
with jitter, one retry budget shared by all simulated users) and reuse the message, so
the server dedups them.

Cost of the model, per send: one event for the arrival; the ingress runs inline when
no other event falls inside the loop's busy time (else one event); batches cost one
event each (plus one for an injected latency, one per pool timeout); acks, errors and
deliveries are computed, not scheduled; client timeouts share one timer, which fires
about once per ack timeout plus once per attempt that does time out. Each process's
loop is a ``busy_until`` scalar (FIFO, non-preemptive): work reserved at ``now`` starts
at ``max(now, busy_until)``. Deliveries are kept per (message, process, codec) as the
first recipient's time and a count; the k-th recipient follows ``k`` sends later.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from heapq import heapify, heappop, heappush, heapreplace
from random import Random

import numpy as np

from chatcap import wiring
from chatcap.pipeline import JOIN, NEW, FaultPlan, acquire_timeout_s, protocol_ms, throttle_until
from chatcap.pipeline.dedup import SERVER_DEDUP_ENTRIES
from chatcap.pipeline.stages import SEND_STAGES
from chatcap.policy.commit import commit_place
from chatcap.results import OUTCOMES
from chatcap.scenario import CODEC_NAMES, Scenario
from sim.calibration import ColdPath, Costs, GcPauses
from sim.engine import ModelEnvironment
from sim.parts import (
    ACKED,
    BREAKER_CODES,
    ERROR,
    OVERLOADED,
    RATE_LIMITED,
    STORE_BUSY,
    TIMEOUT,
    UNAVAILABLE,
    Attempt,
    Batch,
    Delivery,
    Draws,
    Group,
    Message,
    ModelError,
    Plan,
    PoolWaiter,
    RawRun,
    ScriptedCommit,
    Share,
    Snapshot,
    TracedBreaker,
    TracedLimiter,
    TraceEntry,
    WireEvent,
    Worker,
    Write,
    user_key,
)
from sim.workload import Replay, build_layout

__all__ = ["STAGES", "ModelError", "RawRun", "ScriptedCommit", "simulate", "user_key"]

STAGES = SEND_STAGES  # the server's stages of a Send (chatcap.pipeline.stages); what
# the ack latency holds beyond them is left to the ack mean less their sum
_INGRESS, _QUEUE, _COMMIT, _FANOUT, _ACK = range(len(STAGES))

BACKGROUND_TICK_S = 0.1
"""How often the idle server's own CPU (``background_us_per_s``) is charged to a loop
without keepalive pings to carry it."""

# ---------------------------------------------------------------------------- the model


def simulate(
    scenario: Scenario,
    seed: int,
    costs: Costs,
    *,
    replay: Replay | None = None,
    trace: list[TraceEntry] | None = None,
    store_script: Sequence[ScriptedCommit] | None = None,
    wire: list[WireEvent] | None = None,
) -> RawRun:
    """Run one replication of ``scenario`` with ``seed``; see the module docstring.

    For tests that hold the model against the server step by step:

    * ``store_script``: the store's commits, in the order batches reach it — batch *k*
      takes ``store_script[k].delay_s`` (instead of the scenario's service time and the
      hand-off wait) and then fails if ``.fails`` (the breaker hears an error with the
      connection's time held); batches past the script commit at once;
    * ``wire``: a list the model appends to, in order, ``("deliver", message)`` when a
      committed message is fanned out and ``("answer", attempt)`` when an answer to a
      send leaves the server — the order the server writes its frames in.
    """
    model = _Model(scenario, seed, costs, replay, trace)
    model.store_script = list(store_script) if store_script is not None else None
    model.wire = wire
    return model.run()


class _Model:
    def __init__(
        self,
        scenario: Scenario,
        seed: int,
        costs: Costs,
        replay: Replay | None,
        trace: list[TraceEntry] | None,
    ) -> None:
        self.s = scenario
        self.seed = seed
        self.replay = replay
        # closed arrivals: a user's next turn follows its message (not for a replay)
        self.closed_loop = scenario.workload.arrival == "closed" and replay is None
        self.trace = trace
        self.store_script: list[ScriptedCommit] | None = None
        self.commits_started = 0
        self.wire: list[WireEvent] | None = None
        self.scripted: dict[int, tuple[Message, int]] = {}  # replay message id -> (msg, n)
        # a script may retry a message its client had finished with: keep stored entries
        self.scripted_retries = replay is not None and replay.message is not None
        w, srv, sim = scenario.workload, scenario.server, scenario.sim
        streams = np.random.SeedSequence(seed).spawn(8)
        self.layout = build_layout(w, np.random.default_rng(streams[0]))
        self.env = ModelEnvironment()
        self._at = self.env.call_at  # fn(now, payload) at an absolute time
        self.duration_s = w.duration_s
        self.warmup_s = w.warmup_s
        # other work on the server's cores (a co-located generator): each loop runs slower
        self.slow = 1.0 / (1.0 - sim.competing_cpu_share)
        if self.slow > 1.0:
            costs = costs.slowed(self.slow)
        self._init_costs(costs if sim.cpu else costs.zero_cpu(), srv.faults.cpu_burn_us_per_msg)
        self._init_processes(scenario)
        self._init_store(scenario, costs, np.random.default_rng(streams[1]))
        self._init_faults(scenario, Random(int(streams[2].generate_state(1)[0])))
        self._init_client(scenario, Random(int(streams[3].generate_state(1)[0])))
        self._init_arrivals(np.random.default_rng(streams[4]))
        self._room_rng = Random(int(streams[5].generate_state(1)[0]))
        self._init_rooms()
        self._init_background(costs if sim.cpu else costs.zero_cpu())
        if self.gc_on:  # each loop: its connections' heap, a phase of its own
            self._init_gc(costs if sim.cpu else costs.zero_cpu(), streams[6])
        self.attempts: list[Attempt] = []
        self.deliveries: list[Delivery] = []
        self.cpu_codec = [0.0] * len(CODEC_NAMES)
        self.msg_counter = [0] * w.users
        self.user_keys = [user_key(u) for u in range(w.users)]
        self.held_until = [0.0] * w.users  # per user: no frame read before (throttling)
        self.held: dict[int, deque[Attempt]] = {}  # per user: frames waiting for that
        self.stored_late: set[Message] = set()  # committed after their deadline answer
        self.samples: dict[str, list[float]] = {}
        self.snapshots: list[Snapshot] = []
        self.stage_s = [0.0] * len(STAGES)  # sim.parts.RawRun.stage_s
        self.stage_n = [0] * len(STAGES)

    # -- setup ------------------------------------------------------------------------

    def _init_costs(self, c: Costs, burn_us: float) -> None:
        us = 1e-6
        self.ingress_s = [(c.per_send_fixed_us + c.decode_us[n]) * us for n in CODEC_NAMES]
        # where the server's stopwatch sits in that read: per_send_fixed_us less the
        # ingress stage and the post-submit work comes before t_in (the WebSocket read);
        # then the ingress stage (decode, limiter, checks, dedup) up to the write queue;
        # then the rest of the read, before the writer's turn
        fixed = c.per_send_fixed_us
        ingress_us = min(c.ingress_stage_us, fixed)
        post_us = min(c.post_submit_us, fixed - ingress_us)
        self.pre_read_s = (fixed - ingress_us - post_us) * us
        self.ingress_stage_s = [(ingress_us + c.decode_us[n]) * us for n in CODEC_NAMES]
        self.reply_s = [(c.encode_ack_us[n] + c.per_recipient_send_us) * us for n in CODEC_NAMES]
        self.encode_deliver_s = [c.encode_deliver_us[n] * us for n in CODEC_NAMES]
        self.step_s = c.per_recipient_send_us * us
        # the loop's own cost of a batch, and the store thread's Python around the commit
        # (it holds the interpreter lock, so the loop waits for it)
        self.batch_s = (c.per_batch_loop_us + c.per_batch_thread_us) * us
        self.handoff_s = c.per_batch_wait_ms / 1000.0
        self.burn_s = burn_us * us * self.slow if self.s.sim.cpu else 0.0
        # the cold path: work that finds its loop idle for g pays penalty(g) on the loop
        table = c.cold_penalty_us_by_gap_ms
        self.cold = ColdPath(table).penalty_s if table else None
        # the cold fan-out: a frame to a member idle for g costs fan_cold(g) of loop time,
        # g the time since that loop's last fan-out (its members' last wake-up)
        fan = c.fanout_us_by_gap_ms
        self.fan_cold = ColdPath(fan).penalty_s if fan else None
        # the garbage collector: a pause on the message that crosses each collection's
        # count, its mean taken out of every message's read (sim.calibration.GcPauses)
        self.gc_on = bool(c.gc_pause_us) and any(c.gc_pauses_per_msg)
        self.plan_members: dict[int, int] = {}  # id(plan) -> members it reaches
        store = self.s.server.store
        # where the server commits (chatcap.policy.commit, the server's own rule); on the
        # loop, the writer cuts a batch when the loop gets to it and the commit holds the
        # loop for its whole service time
        self.commit_on_loop = (
            commit_place(store.commit_on, store.synchronous, self.s.server.processes) == "loop"
        )

    def _init_processes(self, s: Scenario) -> None:
        srv = s.server
        rules = wiring.pool_rules(srv.pool)
        slots = srv.store.max_in_flight_batches
        self.procs = [Worker(i, slots, rules.size) for i in range(srv.processes)]
        self.acquire_timeout_s = acquire_timeout_s(srv.pool.acquire_timeout_ms)
        self.never_wait = self.acquire_timeout_s == 0.0
        self.queue_max = srv.store.write_queue_max
        self.batch_max = srv.store.batch_max
        self.call_timeout_s = srv.store.call_timeout_s
        self.open_duration_s = srv.breaker.open_duration_s
        for proc in self.procs:
            if srv.rate_limit.algorithm != "none":
                proc.limiter = wiring.keyed_limiter(srv.rate_limit)
            proc.breaker = wiring.make_breaker(srv.breaker)
            if self.trace is not None:
                if proc.limiter is not None:
                    proc.limiter = TracedLimiter(proc.limiter, proc.index, self.trace)
                if proc.breaker is not None:
                    proc.breaker = TracedBreaker(proc.breaker, proc.index, self.trace)

    def _init_store(self, s: Scenario, costs: Costs, rng: np.random.Generator) -> None:
        sim = s.sim
        slots = sim.store_concurrency
        self.store_free: list[float] | None = [0.0] * slots if slots > 0 else None
        if self.store_free is not None:
            heapify(self.store_free)
        self.service_base_s = sim.store_service_ms / 1000.0
        self.service_per_msg_s = sim.store_per_msg_ms / 1000.0
        if self.commit_on_loop:  # the commit is the loop's CPU: slowed with the rest
            self.service_base_s *= self.slow
            self.service_per_msg_s *= self.slow
        kind = sim.store_service
        self.unit_service: Draws | None = None  # None: deterministic (always 1)
        if kind == "exponential":
            self.unit_service = Draws(rng.standard_exponential)
        elif kind == "lognormal":
            sigma = math.sqrt(math.log1p(sim.store_service_cv**2))
            self.unit_service = Draws(lambda n: rng.lognormal(-sigma * sigma / 2, sigma, n))
        elif kind == "empirical":
            if not costs.commit_samples_ms:
                raise ModelError(
                    "sim.store_service = 'empirical' needs commit_samples_ms in the "
                    "calibration file (sim.calibration)"
                )
            unit = np.asarray(costs.commit_samples_ms) / np.mean(costs.commit_samples_ms)
            self.unit_service = Draws(lambda n: rng.choice(unit, n))
        # the WAL checkpoint: a stall added to the commit that crosses each count of rows
        self.stall_every = costs.store_stall_every_rows
        self.stall_s = costs.store_stall_ms / 1000.0
        self.rows_to_stall = self.stall_every
        waits = np.asarray(costs.per_batch_wait_samples_ms) / 1000.0
        # each batch's hand-off wait: drawn from the measured shape, else the mean
        self.handoff_draws = Draws(lambda n: rng.choice(waits, n)) if len(waits) else None

    def _init_faults(self, s: Scenario, rng: Random) -> None:
        f = s.server.faults
        # the run starts at 0; the model never sets runtime overrides, so the flags hold
        self.faults = FaultPlan(f, started_at=0.0, rng=rng)
        self.has_latency = self.faults.has_latency
        self.has_errors = self.faults.has_errors

    def _init_client(self, s: Scenario, rng: Random) -> None:
        self.policy = wiring.retry_policy(s.client)
        self.client_rng = rng
        self.ack_timeout_s = s.client.ack_timeout_ms / 1000.0
        self.pending: deque[Attempt] = deque()  # attempts by deadline (= by send time)
        self.timer_armed = False
        self.outstanding = 0  # attempts sent whose answer has not arrived yet
        self.done_heap: list[float] = []  # answer times still ahead of the clock
        # The time average of `outstanding` over each sampling interval, kept exactly:
        # since the last tick, how many came and went, and their times after the tick.
        self.tick_s = 0.0
        self.outstanding_at_tick = 0
        self.came, self.came_after_s, self.went, self.went_after_s = 0, 0.0, 0, 0.0

    def _init_arrivals(self, rng: np.random.Generator) -> None:
        w = self.s.workload
        self.arrival_rng = rng
        rate = w.users * w.send_rate_per_user_per_s
        self.gaps = Draws(lambda n: rng.standard_exponential(n) / rate)
        self.pick_user = Draws(lambda n: rng.integers(0, w.users, n))

    def _init_gc(self, c: Costs, stream: np.random.SeedSequence) -> None:
        """Each loop's collector (:class:`sim.calibration.GcPauses`): the pauses of its
        process's connections, a phase drawn per loop, the rates while the server's
        idempotency table fills and, after ``SERVER_DEDUP_ENTRIES`` messages, once it is
        full (as while it fills, without figures of their own); with ``gc_thresholds``
        CPython's rule picks each collection's generation."""
        rng = Random(int(stream.generate_state(1)[0]))
        users, n_procs = self.s.workload.users, len(self.procs)
        full_msg = c.gc_pauses_per_msg_full or c.gc_pauses_per_msg
        full_recipient = (
            c.gc_pauses_per_recipient_full
            if c.gc_pauses_per_msg_full
            else c.gc_pauses_per_recipient
        )
        for proc in self.procs:
            connections = len(range(proc.index, users, n_procs))
            proc.gc = GcPauses(
                c.gc_pauses_per_msg,
                c.gc_pauses_per_recipient,
                c.gc_pause_us,
                c.gc_pause_us_per_connection,
                connections,
                c.gc_thresholds,
            )
            proc.gc_due = proc.gc.start(rng.random)
            proc.gc_full = GcPauses(
                full_msg,
                full_recipient,
                c.gc_pause_us,
                c.gc_pause_us_per_connection,
                connections,
                c.gc_thresholds,
            )
            proc.gc_filling = SERVER_DEDUP_ENTRIES

    def _init_background(self, c: Costs) -> None:
        """Background work on each loop, in ticks (:meth:`_on_background`): one keepalive
        ping per connection per ``server.ping_interval_s`` (``ping_us``; the pings of a
        process's connections spread evenly over the interval), the idle server's own CPU
        (``background_us_per_s``) shared out over the same ticks — or over ticks of
        :data:`BACKGROUND_TICK_S` without pings — and one ``GET /metrics`` per
        ``sim.scrape_interval_s`` (``scrape_us``). Attributed to the codecs in the
        shares of their users."""
        users = self.s.workload.users
        codec_users = np.bincount(self.layout.user_codec, minlength=len(CODEC_NAMES))
        self.bg_share = [float(n) / users for n in codec_users]
        interval = self.s.server.ping_interval_s
        base_per_s = c.background_us_per_s * 1e-6
        n_procs = len(self.procs)
        for proc in self.procs:
            conns = len(range(proc.index, users, n_procs))
            if c.ping_us > 0 and interval > 0 and conns > 0:
                period = interval / conns
                cost = c.ping_us * 1e-6 + base_per_s * period
            elif base_per_s > 0:
                period = BACKGROUND_TICK_S
                cost = base_per_s * period
            else:
                continue
            self._at(period / 2, self._on_background, (proc, period, cost))
        scrape_every = self.s.sim.scrape_interval_s
        if c.scrape_us > 0 and scrape_every > 0:
            for proc in self.procs:  # each process answers its own /metrics
                self._at(
                    scrape_every / 2, self._on_background, (proc, scrape_every, c.scrape_us * 1e-6)
                )

    def _on_background(self, now: float, tick: tuple[Worker, float, float]) -> None:
        """One background tick: ``cost`` seconds on ``proc``'s loop, every ``period``
        until the run's end (a cold loop pays the cold path first)."""
        proc, period, cost = tick
        busy = proc.busy_until
        if now > busy:
            start = now
            if self.cold is not None:
                cost += self.cold(now - busy)
        else:
            start = busy
        proc.busy_until = start + cost
        proc.busy_total += cost
        cpu_codec = self.cpu_codec
        for codec, share in enumerate(self.bg_share):
            cpu_codec[codec] += cost * share
        if now + period < self.duration_s:
            self._at(now + period, self._on_background, tick)

    def _init_rooms(self) -> None:
        """Members per room by (process, codec); fan-out plans are built on first use."""
        procs = len(self.procs)
        self.room_counts = []
        for members in self.layout.room_members:
            cells = np.zeros((procs, len(CODEC_NAMES)), dtype=np.int64)
            np.add.at(cells, (members % procs, self.layout.user_codec[members]), 1)
            self.room_counts.append(cells)
        self.plans: dict[tuple[int, int], Plan] = {}
        self.user_plans: dict[int, Plan] = {}  # room * users + user -> _plan(room, user)

    def _plan(self, room: int, user: int) -> Plan:
        """How a message from ``user`` fans out in ``room``: per process hosting other
        members, the loop time of its share and, per codec present, the offset of the
        first recipient's frame (encode once per codec, then one write per member). The
        sending connection is skipped (its Ack says it all), and so is a codec nobody
        else in the room speaks on that process (as the server's hub does)."""
        procs = len(self.procs)
        skip = -1
        if room in self.layout.user_rooms[user]:  # replayed sends may come from outside
            skip = (user % procs) * len(CODEC_NAMES) + int(self.layout.user_codec[user])
        key = (room, skip)
        plan = self.plans.get(key)
        if plan is None:
            plan = self.plans[key] = self._build_plan(self.room_counts[room], skip)
        return plan

    def _build_plan(self, cells: np.ndarray, skip: int) -> Plan:
        step = self.step_s
        plan = []
        for p in range(cells.shape[0]):
            groups: list[Group] = []
            offset_s = 0.0
            for codec in range(cells.shape[1]):
                count = int(cells[p, codec]) - (p * cells.shape[1] + codec == skip)
                if count:
                    encode_s = self.encode_deliver_s[codec]
                    cost = encode_s + count * step
                    groups.append(Group(codec, count, offset_s + encode_s + step, cost))
                    offset_s += cost
            if groups:
                plan.append(Share(p, offset_s, tuple(groups)))
        return tuple(plan)

    # -- the run ----------------------------------------------------------------------

    def run(self) -> RawRun:
        env = self.env
        self._start_arrivals()
        if self.s.sim.timeseries_interval_s <= self.duration_s:
            self._at(self.s.sim.timeseries_interval_s, self._on_sample, 1)
        self._at(self.warmup_s, self._on_snapshot)
        self._at(self.duration_s, self._on_snapshot)
        env.run(until=self.duration_s)
        env.run()  # no new sends or retries after the end; what is in flight finishes
        return self._raw()

    def _raw(self) -> RawRun:
        (cpu_start, codec_start), (cpu_end, codec_end) = self.snapshots
        w = self.s.workload
        return RawRun(
            scenario=self.s,
            seed=self.seed,
            layout=self.layout,
            attempts=self.attempts,
            deliveries=self.deliveries,
            step_s=self.step_s,
            samples=self.samples,
            cpu_window_s=cpu_end - cpu_start,
            cpu_by_codec_s=[e - b for b, e in zip(codec_start, codec_end, strict=True)],
            offered_per_s=w.users * w.send_rate_per_user_per_s,
            events=self.env.scheduled,
            trace=self.trace,
            users_by_codec=np.bincount(self.layout.user_codec, minlength=len(CODEC_NAMES)).tolist(),
            stage_s=list(self.stage_s),
            stage_n=list(self.stage_n),
        )

    def _on_snapshot(self, now: float, _: None) -> None:
        """CPU worked so far, at the start and the end of the measured window."""
        worked = sum(p.busy_done(now) for p in self.procs)
        self.snapshots.append(Snapshot(worked, list(self.cpu_codec)))

    # -- arrivals ---------------------------------------------------------------------

    def _start_arrivals(self) -> None:
        w = self.s.workload
        if self.replay is not None:
            if len(self.replay):
                self._at(self.replay.intended_s[0], self._on_replay, 0)
        elif w.arrival == "poisson":
            self._at(self.gaps.next(), self._on_poisson)
        elif w.arrival == "constant":
            interval_s = 1.0 / w.send_rate_per_user_per_s
            phases = self.arrival_rng.uniform(0.0, interval_s, w.users)
            order = np.argsort(phases, kind="stable")
            self._const = (interval_s, order.tolist(), phases[order].tolist())
            self._at(self._const[2][0], self._on_constant, 0)
        else:  # closed: users start spread over one think time
            phases = self.arrival_rng.uniform(0.0, w.think_time_s, w.users)
            for user, phase in enumerate(phases.tolist()):
                if phase < self.duration_s:
                    self._at(phase, self._on_user_turn, user)

    def _on_poisson(self, now: float, _: None) -> None:
        following = now + self.gaps.next()
        if following < self.duration_s:  # scheduled first: see _ingress
            self._at(following, self._on_poisson)
        self._new_message(self.pick_user.next(), now)

    def _on_constant(self, now: float, k: int) -> None:
        interval_s, order, phases = self._const
        users = len(order)
        following = k + 1
        at = (following // users) * interval_s + phases[following % users]
        if at < self.duration_s:
            self._at(at, self._on_constant, following)
        self._new_message(order[k % users], now)

    def _on_replay(self, now: float, k: int) -> None:
        r = self.replay
        assert r is not None
        if k + 1 < len(r) and r.intended_s[k + 1] < self.duration_s:
            self._at(r.intended_s[k + 1], self._on_replay, k + 1)
        if r.message is None:
            self._new_message(r.user[k], now, r.room[k], r.codec[k])
            return
        known = self.scripted.get(r.message[k])
        if known is None:  # a new message: its first attempt
            msg = self._new_message(r.user[k], now, r.room[k], r.codec[k])
            self.scripted[r.message[k]] = (msg, 1)
        else:  # the script's retry of it
            msg, n = known
            self.scripted[r.message[k]] = (msg, n + 1)
            self._send(msg, n + 1, now)

    def _on_user_turn(self, now: float, user: int) -> None:
        self._new_message(user, now)

    def _new_message(
        self, user: int, now: float, room: int | None = None, codec: int | None = None
    ) -> Message:
        if room is None:
            rooms = self.layout.user_rooms[user]
            room = rooms[0] if len(rooms) == 1 else rooms[int(self._room_rng.random() * len(rooms))]
        if codec is None:
            codec = int(self.layout.user_codec[user])
        index = self.msg_counter[user]
        self.msg_counter[user] = index + 1
        msg = Message(user, room, codec, index, now)
        plan_key = room * len(self.msg_counter) + user  # an int key: cheaper than a pair
        plan = self.user_plans.get(plan_key)
        if plan is None:
            plan = self.user_plans[plan_key] = self._plan(room, user)
        msg.plan = plan
        msg.proc = self.procs[user % len(self.procs)]  # the balancer is sticky by user
        self._send(msg, 1, now)
        return msg

    # -- ingress ----------------------------------------------------------------------

    def _send(self, msg: Message, n: int, now: float) -> None:
        """Attempt ``n`` of ``msg`` leaves the client at ``now``."""
        attempt = Attempt(msg, n, now, now + self.ack_timeout_s)
        self.attempts.append(attempt)
        msg.in_server += 1
        self.policy.on_send(n, now)
        self.outstanding += 1
        self.came += 1
        self.came_after_s += now - self.tick_s
        if attempt.deadline_s < math.inf:
            self.pending.append(attempt)
            if not self.timer_armed:
                self.timer_armed = True
                self._at(attempt.deadline_s, self._on_timer)
        user = msg.user
        if self.held_until[user] > now or user in self.held:
            self._ingress(now, attempt)  # held back behind a refusal
        else:
            self._read(now, attempt)  # the common case, without the extra call

    def _ingress(self, now: float, attempt: Attempt) -> None:
        """The frame reaches the server: read now, or held back behind a refusal."""
        user = attempt.msg.user
        if self.held_until[user] > now or user in self.held:
            # read throttling: after a rate_limited answer the connection's next frames
            # wait (chatcap.pipeline.answers.throttle_until), in order
            line = self.held.get(user)
            if line is None:
                self.held[user] = deque((attempt,))
                self._at(self.held_until[user], self._on_hold_over, user)
            else:
                line.append(attempt)
            return
        self._read(now, attempt)

    def _on_hold_over(self, now: float, user: int) -> None:
        """Read the held frames in order until one is refused again (a new hold)."""
        line = self.held[user]
        while line:
            if self.held_until[user] > now:
                self._at(self.held_until[user], self._on_hold_over, user)
                return
            self._read(now, line.popleft())
        del self.held[user]

    def _read(self, now: float, attempt: Attempt) -> None:
        """The loop reads the attempt's frame: the limiter, then admission."""
        msg = attempt.msg
        proc = msg.proc
        codec = msg.codec
        busy = proc.busy_until
        cold = 0.0
        if now > busy:
            start = now
            if self.cold is not None:
                cold = self.cold(now - busy)  # the loop had been idle since `busy`
        else:
            start = busy
        if proc.limiter is not None:
            # asked when the loop picks the frame up (the server's t_in)
            decision = proc.limiter.try_acquire(self.user_keys[msg.user], start)
            if not decision.allowed:
                cost = cold + self.ingress_s[codec] + self.reply_s[codec]
                proc.busy_until = start + cost
                proc.busy_total += cost
                self.cpu_codec[codec] += cost
                self.held_until[msg.user] = throttle_until(start, decision.retry_after_s)
                retry_after_s = protocol_ms(decision.retry_after_s) / 1000.0
                self._resolve(attempt, RATE_LIMITED, start + cost, retry_after_s)
                return
        cost = cold + self.ingress_s[codec] + self.burn_s
        if self.gc_on:  # a collection set off by this message holds the loop
            pause, mean = proc.gc.charge(proc.gc_due, self._members(msg.plan))
            if proc.gc_filling:  # the server's idempotency table fills: then it is full
                proc.gc_filling -= 1
                if not proc.gc_filling:
                    proc.gc = proc.gc_full
            cost += pause - (mean if mean < cost else cost)
        attempt.t_in_s = t_in = start + cold + self.pre_read_s
        attempt.read_s = read_s = self.ingress_stage_s[codec] + self.burn_s
        admitted = t_in + read_s  # the write queue; the loop goes on until `finish`
        finish = start + cost
        proc.busy_until = finish
        proc.busy_total += cost
        self.cpu_codec[codec] += cost
        # Nothing else happens before `admitted`: admitting now, dated so, is exact.
        if admitted <= now or admitted < self.env.peek():
            self._admit(proc, attempt, admitted)
        else:
            self._at(admitted, self._on_ingress, attempt)

    def _members(self, plan: Plan) -> int:
        """The frames a message of ``plan`` fans out (every process's members)."""
        key = id(plan)  # plans are cached: one object per (room, sender)
        members = self.plan_members.get(key)
        if members is None:
            members = sum(g.recipients for share in plan for g in share.groups)
            self.plan_members[key] = members
        return members

    def _on_ingress(self, now: float, attempt: Attempt) -> None:
        self._admit(attempt.msg.proc, attempt, now)

    def _admit(self, proc: Worker, attempt: Attempt, now: float) -> None:
        """Dedup (``chatcap.pipeline.dedup``), then the bounded write queue."""
        msg = attempt.msg
        dedup = proc.dedup
        answer = dedup.answer(msg)
        if answer != NEW:
            if answer == JOIN:
                dedup.in_flight(msg).attempts.append(attempt)  # shares the write's outcome
            else:  # REPLAY: stored already, acked at once
                self._reply(proc, attempt, ACKED, now, 0.0)
            return
        queue = proc.queue
        if len(queue) >= self.queue_max:
            retry_after_s = proc.overload_retry_after_s(now)
            self._reply(proc, attempt, OVERLOADED, now, retry_after_s)
            return
        write = Write(msg, attempt, now)
        dedup.begin(msg, write)
        queue.append(write)
        if proc.slots_free and not proc.cutting:
            self._want_cut(proc, now)

    def _reply(
        self, proc: Worker, attempt: Attempt, outcome: int, now: float, retry_after_s: float
    ) -> None:
        """The loop writes one Ack or Error frame to the sender."""
        codec = attempt.msg.codec
        cost = self.reply_s[codec]
        busy = proc.busy_until
        finish = (now if now > busy else busy) + cost
        proc.busy_until = finish
        proc.busy_total += cost
        self.cpu_codec[codec] += cost
        self._resolve(attempt, outcome, finish, retry_after_s)

    # -- the writer -------------------------------------------------------------------

    def _want_cut(self, proc: Worker, now: float) -> None:
        """The writer is woken: it cuts now — or, committing on the loop, when the loop
        gets to it: after the work already reserved (the frames read in the same turn),
        whose sends join the batch; at once when a full batch (``batch_max``) waits."""
        if self.commit_on_loop and len(proc.queue) < self.batch_max:
            at = proc.busy_until
            if at > now:
                if not proc.cut_pending:
                    proc.cut_pending = True
                    self._at(at, self._on_cut, proc)
                return
        self._cut(proc, now)

    def _on_cut(self, now: float, proc: Worker) -> None:
        proc.cut_pending = False
        if proc.slots_free and proc.queue and not proc.cutting:
            self._cut(proc, now)

    def _cut(self, proc: Worker, now: float) -> None:
        """Cut batches while a slot is free (a slot is taken before a batch is cut)."""
        proc.cutting = True
        queue, batch_max = proc.queue, self.batch_max
        while proc.slots_free and queue:
            proc.slots_free -= 1
            n = len(queue) if len(queue) < batch_max else batch_max
            writes = [queue.popleft()] if n == 1 else [queue.popleft() for _ in range(n)]
            for write in writes:
                write.cut_s = now
            self._start_batch(proc, writes, now)
        proc.cutting = False

    def _start_batch(self, proc: Worker, writes: list[Write], now: float) -> None:
        breaker = proc.breaker
        if breaker is not None:
            decision = breaker.try_acquire(now)
            if not decision.allowed:
                retry_after_ms = protocol_ms(decision.retry_after_s, self.open_duration_s)
                self._fail(proc, writes, UNAVAILABLE, now, retry_after_ms / 1000.0)
                return
        line = proc.pool_line
        if not line.must_wait(proc.pool_free):
            proc.pool_free -= 1
            self._acquired(proc, writes, now)
        elif self.never_wait:
            if breaker is not None:
                breaker.release_permission()
            self._fail(proc, writes, STORE_BUSY, now, 0.0)
        else:
            waiter = PoolWaiter(proc, writes)
            line.join(waiter)
            if self.acquire_timeout_s < math.inf:
                self._at(now + self.acquire_timeout_s, self._on_pool_timeout, waiter)

    def _on_pool_timeout(self, now: float, waiter: PoolWaiter) -> None:
        proc = waiter.proc
        if not proc.pool_line.leave(waiter):
            return  # got a connection in time
        if proc.breaker is not None:
            proc.breaker.release_permission()  # not the store's fault: no outcome
        self._fail(proc, waiter.writes, STORE_BUSY, now, 0.0)

    def _release_connection(self, proc: Worker, now: float) -> None:
        """Hand the connection to the oldest waiter, or back to the pool."""
        waiter = proc.pool_line.hand_off()
        if waiter is not None:
            self._acquired(proc, waiter.writes, now)
        else:
            proc.pool_free += 1

    def _acquired(self, proc: Worker, writes: list[Write], now: float) -> None:
        batch = Batch(proc, writes, now)
        latency_s = self.faults.store_latency_s(now) if self.has_latency else 0.0
        if latency_s > 0:  # spent holding the connection
            self._at(now + latency_s, self._on_latency_spent, batch)
        else:
            self._commit(batch, now)

    def _on_latency_spent(self, now: float, batch: Batch) -> None:
        self._commit(batch, now)

    def _commit(self, batch: Batch, now: float) -> None:
        proc = batch.proc
        if self.store_script is not None:
            self._scripted_commit(batch, now)
            return
        if self.has_errors and self.faults.store_fails(now):
            if proc.breaker is not None:
                proc.breaker.on_error(now, now - batch.acquired_s)
            self._release_connection(proc, now)
            self._fail(proc, batch.writes, ERROR, now, 0.0)
            return
        n = len(batch.writes)
        service_s = self.service_base_s + self.service_per_msg_s * (n - 1)
        if self.unit_service is not None:
            service_s *= self.unit_service.next()
        if self.stall_every > 0:  # one store file: the rows of every process count
            self.rows_to_stall -= n
            if self.rows_to_stall <= 0:
                self.rows_to_stall += self.stall_every
                service_s += self.stall_s
        # to the store thread and back: time, not loop CPU
        draws = self.handoff_draws
        service_s += draws.next() if draws is not None else self.handoff_s
        free = self.store_free
        if free is None:
            start = now
        else:  # a FIFO store of `store_concurrency` slots, in order of arrival
            start = now if now > free[0] else free[0]
            heapreplace(free, start + service_s)
            batch.acquired_s += start - now  # the turn's wait is not the call's duration
        if self.commit_on_loop:
            # the commit runs on the loop, in the writer's turn: it holds the loop, and
            # the work reserved behind it moves back by its service time. The batch's
            # own loop cost (per_batch_loop_us: the pump, the breaker and the pool, the
            # rows and futures) is spent in the same hold, as the server spends it
            # between cutting the batch and settling it (its `commit` stage)
            service_s += self.batch_s
            busy = proc.busy_until
            proc.busy_until = (busy if busy > start else start) + service_s
            proc.busy_total += service_s
            share_s = service_s / len(batch.writes)
            cpu_codec = self.cpu_codec
            for write in batch.writes:
                cpu_codec[write.msg.codec] += share_s
        if service_s > self.call_timeout_s:
            self._at(start + self.call_timeout_s, self._on_commit_deadline, batch)
            self._at(start + service_s, self._on_late_commit_done, batch)
        else:
            self._at(start + service_s, self._on_committed, batch)

    def _scripted_commit(self, batch: Batch, now: float) -> None:
        """A commit as ``store_script`` says (see :func:`simulate`)."""
        script, k = self.store_script, self.commits_started
        assert script is not None
        self.commits_started = k + 1
        step = script[k] if k < len(script) else ScriptedCommit()
        if step.delay_s > self.call_timeout_s and not step.fails:
            self._at(now + self.call_timeout_s, self._on_commit_deadline, batch)
            self._at(now + step.delay_s, self._on_late_commit_done, batch)
        elif step.fails:
            self._at(now + step.delay_s, self._on_scripted_failure, batch)
        else:
            self._at(now + step.delay_s, self._on_committed, batch)

    def _on_scripted_failure(self, now: float, batch: Batch) -> None:
        proc = batch.proc
        if proc.breaker is not None:
            proc.breaker.on_error(now, now - batch.acquired_s)
        self._release_connection(proc, now)
        self._fail(proc, batch.writes, ERROR, now, 0.0)

    def _on_commit_deadline(self, now: float, batch: Batch) -> None:
        """A commit over ``call_timeout_s``: answered as failed, but its thread goes on
        holding the connection and stores the rows (a retry finds a duplicate)."""
        proc = batch.proc
        if proc.breaker is not None:
            proc.breaker.on_error(now, now - batch.acquired_s)
        for write in batch.writes:
            self.stored_late.add(write.msg)
        self._fail(proc, batch.writes, ERROR, now, 0.0)

    def _on_late_commit_done(self, now: float, batch: Batch) -> None:
        self._release_connection(batch.proc, now)

    def _fail(
        self, proc: Worker, writes: list[Write], outcome: int, now: float, retry_after_s: float
    ) -> None:
        """Every attempt waiting on ``writes`` gets an Error; dedup forgets them."""
        dedup = proc.dedup
        for write in writes:
            dedup.fail(write.msg, write)
            for attempt in write.attempts:
                self._reply(proc, attempt, outcome, now, retry_after_s)
        self._batch_done(proc, len(writes), now)

    def _batch_done(self, proc: Worker, n: int, now: float) -> None:
        proc.drain.record(now, n)
        proc.slots_free += 1
        if proc.queue and not proc.cutting:
            self._want_cut(proc, now)

    def _on_committed(self, now: float, batch: Batch) -> None:
        """After COMMIT: breaker success, connection back, then on the loop, per message
        in batch order, the fan-out and then the acks (the server's after-commit order:
        Deliver before Ack)."""
        proc = batch.proc
        if proc.breaker is not None:
            proc.breaker.on_success(now, now - batch.acquired_s)
        self._release_connection(proc, now)
        busy = proc.busy_until
        begin = cursor = now if now > busy else busy
        if now > busy and self.cold is not None:  # the result wakes an idle loop
            cold = self.cold(now - busy)
            cursor += cold
            cpu_codec = self.cpu_codec
            for write in batch.writes:
                cpu_codec[write.msg.codec] += cold / len(batch.writes)
        dedup, reply_s, cpu_codec = proc.dedup, self.reply_s, self.cpu_codec
        # the batch's own loop cost, split (on the loop it was held with the commit)
        share_s = 0.0 if self.commit_on_loop else self.batch_s / len(batch.writes)
        wire = self.wire
        measured = self.warmup_s <= now < self.duration_s
        stage_s, stage_n = self.stage_s, self.stage_n
        for write in batch.writes:
            msg = write.msg
            cursor += share_s
            cpu_codec[msg.codec] += share_s
            if measured:
                stage_s[_INGRESS] += write.attempts[0].read_s
                stage_s[_QUEUE] += write.cut_s - write.queued_s
                stage_s[_COMMIT] += now - write.cut_s
                stage_n[_INGRESS] += 1
                stage_n[_QUEUE] += 1
                stage_n[_COMMIT] += 1
            # stored: a retry gets its ack at once, as long as the server may still see
            # one of its attempts (dropped once the client is done and none is left)
            if dedup.settle(msg, write, None):
                msg.stored = True
            if msg not in self.stored_late:  # a duplicate is not delivered again
                if wire is not None:
                    wire.append(("deliver", msg))
                before = cursor
                cursor = self._fan_out(proc, msg, write.stamp_s, now, cursor)
                if measured:
                    stage_s[_FANOUT] += cursor - before
                    stage_n[_FANOUT] += 1
            for attempt in write.attempts:
                cost = reply_s[msg.codec]
                cursor += cost
                cpu_codec[msg.codec] += cost
                if measured:
                    stage_s[_ACK] += cost
                    stage_n[_ACK] += 1
                self._resolve(attempt, ACKED, cursor, 0.0)
        proc.busy_total += cursor - begin
        proc.busy_until = cursor
        # _batch_done, inline: once per committed batch
        proc.drain.record(now, len(batch.writes))
        proc.slots_free += 1
        if proc.queue and not proc.cutting:
            self._want_cut(proc, now)

    def _fan_out(
        self, proc: Worker, msg: Message, stamp_s: float, now: float, cursor: float
    ) -> float:
        """Deliver one message; returns the committing loop's cursor after its share."""
        deliveries, cpu_codec = self.deliveries, self.cpu_codec
        new = tuple.__new__  # a Delivery without NamedTuple's Python-level __new__ (3x)
        fan_cold = self.fan_cold
        for share in msg.plan:
            p, total_s = share.proc, share.loop_s
            writer = proc if p == proc.index else self.procs[p]
            if p == proc.index:
                start = cursor
            else:  # members on another process: its own loop does the writing
                busy = writer.busy_until
                start = now if now > busy else busy
            if fan_cold is not None:  # each frame at the cold fan-out's cost, not the warm
                frames = sum(g.recipients for g in share.groups)
                extra = frames * (fan_cold(start - writer.last_fanout_s) - self.step_s)
                total_s = max(0.0, total_s + extra)
                cpu_codec[share.groups[0].codec] += total_s - share.loop_s
            if p == proc.index:
                cursor = start + total_s
            else:
                writer.busy_until = start + total_s
                writer.busy_total += total_s
            writer.last_fanout_s = start + total_s
            for group in share.groups:
                codec = group.codec
                t_s = start + group.first_s
                deliveries.append(
                    new(Delivery, (t_s, t_s - stamp_s, group.recipients, codec, p, msg))
                )
                cpu_codec[codec] += group.cost_s
        return cursor

    # -- the client -------------------------------------------------------------------

    def _resolve(self, attempt: Attempt, outcome: int, at: float, retry_after_s: float) -> None:
        """The server answers ``attempt``; the answer reaches the client at ``at`` (≥ now)."""
        msg = attempt.msg
        msg.in_server -= 1
        if self.wire is not None:
            self.wire.append(("answer", attempt))
        if at > attempt.deadline_s or attempt.outcome >= 0:
            # it timed out first: the server's work was for nothing
            if msg.finished and msg.stored and not msg.in_server and not self.scripted_retries:
                msg.proc.dedup.discard(msg)
            return
        attempt.retry_after_s = retry_after_s
        attempt.outcome = outcome
        attempt.done_s = at
        if at <= self.env.now_s:  # _went(at), inline: once per answer
            self.outstanding -= 1
            self.went += 1
            self.went_after_s += at - self.tick_s
        else:
            heappush(self.done_heap, at)
        self._react(attempt, outcome, at, retry_after_s)

    def _on_timer(self, now: float, _: None) -> None:
        """Time out every attempt due by now; re-arm for the oldest one still waiting."""
        pending = self.pending
        while pending:
            attempt = pending[0]
            if attempt.outcome >= 0:
                pending.popleft()
            elif attempt.deadline_s <= now:
                pending.popleft()
                attempt.outcome = TIMEOUT
                attempt.done_s = attempt.deadline_s
                self._went(now)
                self._react(attempt, TIMEOUT, now, 0.0)
            else:
                break
        if pending:
            self._at(pending[0].deadline_s, self._on_timer)
        else:
            self.timer_armed = False

    def _react(self, attempt: Attempt, outcome: int, at: float, retry_after_s: float) -> None:
        msg = attempt.msg
        decision = self.policy.decide(
            OUTCOMES[outcome], attempt.n, at, self.client_rng, retry_after_s, msg.last_delay_s
        )
        if decision.retry and at + decision.delay_s < self.duration_s:
            msg.last_delay_s = decision.delay_s
            self._at(at + decision.delay_s, self._on_retry, attempt)
            return
        msg.finished = True
        # The client is done: its stored entry goes once the server holds none of its
        # attempts (one still queued would otherwise be written, and delivered, again).
        if msg.stored and not msg.in_server and not self.scripted_retries:
            msg.proc.dedup.discard(msg)
        if self.closed_loop:
            following = at + self.s.workload.think_time_s
            if following < self.duration_s:
                self._at(following, self._on_user_turn, msg.user)

    def _went(self, at: float) -> None:
        """An answer (or a timeout) reached the client at ``at``, not later than now."""
        self.outstanding -= 1
        self.went += 1
        self.went_after_s += at - self.tick_s

    def _mean_outstanding(self, now: float) -> float:
        """Time average of attempts in the system since the last tick; starts the next."""
        span_s = now - self.tick_s
        area = (
            self.outstanding_at_tick * span_s
            + (self.came * span_s - self.came_after_s)
            - (self.went * span_s - self.went_after_s)
        )
        self.tick_s = now
        self.outstanding_at_tick = self.outstanding
        self.came, self.came_after_s, self.went, self.went_after_s = 0, 0.0, 0, 0.0
        return area / span_s

    def _on_retry(self, now: float, previous: Attempt) -> None:
        self._send(previous.msg, previous.n + 1, now)

    # -- the time series --------------------------------------------------------------

    def _on_sample(self, now: float, tick: int) -> None:
        k = tick + 1  # tick k at k × interval: no drift from repeated additions
        following = k * self.s.sim.timeseries_interval_s
        if following <= self.duration_s * (1 + 1e-12):
            self._at(following, self._on_sample, k)
        heap = self.done_heap
        while heap and heap[0] <= now:
            self._went(heappop(heap))
        procs = self.procs
        row = {
            "t_s": now,
            "in_system": self.outstanding,
            "in_system_mean": self._mean_outstanding(now),
            "queue_depth": sum(len(p.queue) for p in procs),
            "batches_in_flight": sum(p.slots - p.slots_free for p in procs),
            "pool_in_use": sum(p.pool_size - p.pool_free for p in procs),
            "pool_waiting": sum(len(p.pool_line) for p in procs),
            "breaker_state": max(
                (BREAKER_CODES[p.breaker.state] for p in procs if p.breaker is not None),
                default=0,
            ),
        }
        for p in procs:
            row[f"loop_busy_s_p{p.index}"] = p.busy_done(now)
        for key, value in row.items():
            self.samples.setdefault(key, []).append(value)
