"""Calibration: measure on THIS machine the per-operation costs that the model charges.

``python -m bench calibrate [--out results/calibration] [--scenario FILE] [--quick]
[--repeat N] [--server-cpus LIST] [--generator-cpus LIST] [--set KEY=VALUE …]``

Writes ``OUT/<host>.json`` in :mod:`sim.calibration`'s schema (``[sim] calibration =
"results/calibration/<host>.json"`` points the model at it), prints a table and the
path. Calibration measures **parts** only — codecs, the server's echo and fan-out
cases, the store — never a whole load run: the model is validated against measured
runs, so it must not be fitted to them.

What is measured, and how it maps onto the model (:mod:`sim.model`)
====================================================================

1. **Codecs** (``decode_us``, ``encode_ack_us``, ``encode_deliver_us``): our
   ``CODECS[codec]`` on a ``Send`` / ``Ack`` / ``Deliver`` whose body has the scenario's
   ``workload.body_bytes``; median of repeats of timeit loops
   (:func:`bench.micro.codec_bench.median_ns`, the codecs interleaved).
2. **The server's event loop** (``per_send_fixed_us``, ``per_recipient_send_us``): our
   real server (``python -m server``, the scenario with
   :data:`bench._support.servers.SCENARIO_OVERRIDES`) under the load client of
   ``bench server-overhead`` (:mod:`bench.micro.loadclient`), per codec, in rooms of ``K``
   members: ``K = 1`` is the echo case (Send → Ack; the sender gets no Deliver of its
   own), ``K = 2, 21`` the fan-out case (K − 1 Delivers per message). The CPU counted is
   the **event-loop thread's** (``/proc/<pid>/task/<pid>/stat``): the process's CPU of
   the measured phase (read by the load client) × the loop thread's share of the
   process's CPU over the whole client run. The store's commits run where the scenario
   says (``server.store.commit_on``, :func:`chatcap.policy.commit.commit_place`): on a
   pool thread the model charges them as store *time* (below); on the loop (the
   default under WAL + ``NORMAL``) as loop CPU, so ``per_batch_loop_us`` leaves the
   commit of one out (``details.commit_on`` says which).
   With ``server.tls`` on in the scenario the load client speaks ``wss://`` (and the
   ``/metrics`` reads ``https://``), trusting ``server.tls.ca_file``: the loop costs then
   include TLS, as that server's would.

   The model charges one message in a room of ``K`` (one codec)::

       loop µs = per_send_fixed + decode            (ingress)
               + encode_ack + per_recipient          (the Ack: one frame)
               + encode_deliver·[K > 1]              (the Deliver, encoded once)
               + (K − 1) · per_recipient             (one frame per other member)

   so ``y = loop µs − decode − encode_ack − encode_deliver·[K > 1] = per_send_fixed +
   K · per_recipient`` (K frames written), and the two figures are the least-squares
   line through every (K, y) point — both codecs, every repeat. The codec costs are
   subtracted because the model adds them separately: nothing is counted twice.
   The fit's slope is the cost of a frame to a *busy* reader. A lone fan-out point (a
   room of :data:`LONE_ROOM` at one send in flight, members asleep between messages, as
   chat members at a few messages per second are) gives the cost of a frame that wakes
   its reader — on loopback the wake-up happens inside the writer's ``write()`` — and,
   when measured, that slope (:func:`per_recipient_lone_us`) is ``per_recipient_send_us``;
   the windowed one is kept in ``details``.
3. **A lone message** (``per_batch_loop_us``): the same echo case with **one** send in
   flight, so that every message is a writer batch of its own and nothing is amortised:
   the batch hand-off to the store thread, the wake-up on its result and the event-loop
   turns one message costs on an idle loop. ``per_batch_loop_us`` is that point's loop
   µs per message less what the model already charges an echo (``per_send_fixed +
   decode + encode_ack + per_recipient``), median over codecs and repeats. The model
   charges it once per batch (split over the batch's messages), so it weighs on light
   load — where batches are of one — and fades as batches grow. ``per_batch_thread_us``
   is the same points' process CPU less the loop thread's, less the commit itself: the
   store thread's Python around each call, which holds the interpreter lock (the model
   charges it to the loop too). The same points give
   ``per_batch_wait_ms``: the server's own mean ack latency (Δ sum ÷ Δ count of its
   ``chatcap_ack_latency_seconds`` histogram, read from ``/metrics`` around the point)
   less what the model puts on that path (ingress, the batch's loop cost, a commit of
   one, the Ack) — the thread hand-off's wall time, which the model adds to each commit.
4. **The cold path** (``cold_penalty_us_by_gap_ms``): one JSON connection, one send in
   flight, the next send an idle gap of :data:`~bench.jobs.calibrate_fit.COLD_GAPS_MS`
   after the previous Ack (``bench.micro.paced_client --gap-ms``: 0 = back-to-back, up
   to 30 ms), on each repeat's server after its other points. Per gap: the server's mean
   ack latency (its histogram's Δ sum ÷ Δ count), the client's round trip and the
   server's CPU per message. The penalty is the server mean less the back-to-back one:
   what a unit of work costs beyond the warm path when it finds the loop idle (CPU idle
   states, the virtual machine's wake-up, cold caches). The model charges it to work
   that finds its loop idle (:class:`sim.calibration.ColdPath`).
5. **Background** (``background_us_per_s``, ``ping_us``, ``scrape_us``): a server of its
   own with keepalive pings every :data:`~bench.jobs.calibrate_fit.PING_PROBE_S`
   (``server.ping_interval_s``): its CPU with no connection for a while (timers), then
   with ``background_connections`` idle connections held (``bench.micro.loadclient
   --case idle --hold-s``: the hold's CPU less that base, per ping), then over
   ``scrapes`` ``GET /metrics`` (less the base, per scrape). The model charges a ping
   per connection per ``server.ping_interval_s`` and a scrape per
   ``sim.scrape_interval_s``.
6. **The store** (``store_commit_*``, ``commit_samples_ms``, ``store_stall_*``):
   :meth:`server.store.StoreConnection.commit_batch` on a temporary SQLite file (WAL,
   ``synchronous=NORMAL``), batch sizes 1, 2, 4, … 256 taking turns within every repeat;
   each repeat's figure is the mean wall time of its commits, the table the median over
   repeats. ``store_commit_fixed_ms`` is batch 1; ``store_commit_per_msg_ms`` the
   least-squares slope over all batch sizes. ``commit_samples_ms`` keeps raw batch-1
   commit times: the shape of ``[sim] store_service = "empirical"``. The scenario's
   ``[sim] store_service_ms`` / ``store_per_msg_ms`` are what the model's store mean
   uses; the table suggests them from these figures. Then ``sustained_commits`` commits
   of ``sustained_batch`` rows in a row on the same file: the few far over the median are
   SQLite's WAL checkpoints (every ~1,000 pages), and ``store_stall_every_rows`` /
   ``store_stall_ms`` say how often and how long (the model adds a stall to the commit
   that crosses each such count of rows; the lone points' waits then leave them out).

7. **The garbage collector** (``gc_pauses_per_msg``, ``gc_pauses_per_recipient``,
   ``gc_pause_us``): CPython's collector stops the loop while it runs, and its pauses
   grow with the heap — that is, with the connections the server holds. So a server of
   its own runs the echo and fan-out cases (JSON, rooms of 1, 2 and 21, ``gc_messages``
   messages in a room of one, fewer in bigger rooms) twice: alone, then while a
   **crowd** of idle connections is held (the scenario's ``workload.users``, at least
   ``gc_crowd_min``, at most ``gc_crowd_max``; ``bench.micro.loadclient --case idle
   --hold-s``); per generation, its ``chatcap_gc_pause_seconds`` collections and their
   time over each case. Collections per message against the Delivers per message is a
   least-squares line; the pause, a line against the connections held
   (``gc_pause_us`` at none, ``gc_pause_us_per_connection``;
   :func:`~bench.jobs.calibrate_fit.gc_costs`). The server's idempotency table keeps
   ``chatcap.pipeline.dedup.SERVER_DEDUP_ENTRIES`` keys: until it is full every message
   leaves an entry on the heap, and the young generation fills with them; once full, a
   new key evicts an old one and the collections come far apart. So the crowd's server
   then fills its table and runs the cases again: ``gc_pauses_per_msg_full`` and
   ``gc_pauses_per_recipient_full``, which the model uses past that many messages. The
   model holds the loop for a pause on the message that crosses each collection's count
   and takes the mean pause out of every message's costs
   (:class:`sim.calibration.GcPauses`): the loop costs of item 2 hold it on average.
   Last, the **load's shape**: on servers of their own, the crowd's connections in rooms
   of two and of the scenario's size (:func:`gc_room_sizes`), every one of them sending
   in turn (``bench.micro.loadclient --case rooms``), as a load generator's users do.
   Their collections set the filling rates, and the pause's line runs from the server
   alone to theirs (``Point.active``): a server whose connections all speak pauses
   longer than one sender beside an idle crowd (measured here, 1,000 connections: young
   pauses 0.84 against 0.09 ms), as the load runs measure it. The load client reads the
   server's collector over its measured phase (``--scrape``): the connections' opening
   allocates as much as thousands of sends.

**Where it runs** (``--server-cpus`` / ``--generator-cpus``, :mod:`bench._support.cpus`;
default: the server on the last CPU, the load clients on the others): the server process
is pinned to the server's set, and so are the codec and store timings (the server's work,
timed in this process); the load clients run on the generator's. ``details.cpu_sets``
records both sets (``isolated`` false, with a ``note``, when they share a CPU) and
``details.cpu_use`` each side's CPU over the server points, % of one core.

Provenance (host, time, git sha, Python and package versions) and the raw points and
fits (``details``) go into the same file.

The fits and the file's contents are in :mod:`bench.jobs.calibrate_fit`.
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from bench._support.args import BadInput
from bench._support.clients import WINDOW, run_case, run_client
from bench._support.cpus import CpuPlan, add_cpu_arguments, cpu_plan_from_args, pinned, plan_cpus
from bench._support.host import raise_nofile_limit
from bench._support.metrics_scrape import ACK_LATENCY, GC_PAUSE, SEND_STAGE, Scrape, fetch
from bench._support.procstat import precise_cpu_s, process_cpu_s, thread_cpu_s
from bench._support.servers import (
    ServerProc,
    bench_scenario,
    sigterm_as_exit,
    start_our_server,
    stop_server,
)
from bench._support.tls import client_ca_file
from bench.jobs.calibrate_fit import (
    BATCH_SIZES,
    COLD_CODEC,
    COLD_GAPS_MS,
    COLD_ROOM,
    FULL,
    LONE_ROOM,
    LONE_WINDOW,
    PING_PROBE_S,
    QUICK,
    ROOM_SIZES,
    BackgroundProbe,
    ColdPoint,
    GcProbe,
    Plan,
    Point,
    StoreFigures,
    background_costs,
    build_costs,
    cold_messages,
    fit_line,
    format_table,
)
from bench.micro.codec_bench import CHAT_BODY, median_ns
from chatcap.pipeline.dedup import SERVER_DEDUP_ENTRIES
from chatcap.pipeline.stages import GC_GENERATIONS, SEND_STAGES
from chatcap.protocol.codec import CODECS
from chatcap.protocol.messages import Ack, Deliver, Send
from chatcap.scenario import CODEC_NAMES, Scenario, ScenarioError, to_toml
from server.store import PendingSend, StoreConnection
from sim.calibration import Costs, save_costs


def body_of(size_bytes: int) -> str:
    """A chat body of exactly ``size_bytes`` UTF-8 bytes (Chinese, emoji, ASCII)."""
    text = CHAT_BODY * (size_bytes // len(CHAT_BODY.encode()) + 1)
    data = text.encode()[:size_bytes]
    body = data.decode(errors="ignore")  # a cut multi-byte char is dropped ...
    return body + "x" * (size_bytes - len(body.encode()))  # ... and padded back


def sample_messages(body_bytes: int) -> tuple[Send, Ack, Deliver]:
    body = body_of(body_bytes)
    ts_us, sent_us = 1_700_000_000_123_456, 1_700_000_000_100_000
    send = Send(client_msg_id="c-01234-000987", room="room-0042", body=body, sent_at_us=sent_us)
    ack = Ack(client_msg_id=send.client_msg_id, room=send.room, seq=1_234_567, ts_us=ts_us)
    deliver = Deliver(
        room=send.room,
        seq=ack.seq,
        sender="user-01234",
        body=body,
        ts_us=ts_us,
        client_msg_id=send.client_msg_id,
        sent_at_us=sent_us,
    )
    return send, ack, deliver


def measure_codec_costs(body_bytes: int, plan: Plan) -> dict[str, dict[str, float]]:
    """``{"decode_us" | "encode_ack_us" | "encode_deliver_us": {codec: µs}}``."""
    send, ack, deliver = sample_messages(body_bytes)
    timers: dict[str, timeit.Timer] = {}
    for name in CODEC_NAMES:
        codec = CODECS[name]
        frame = codec.encode(send)
        timers[f"decode_us {name}"] = timeit.Timer("f(x)", globals={"f": codec.decode, "x": frame})
        timers[f"encode_ack_us {name}"] = timeit.Timer(
            "f(x)", globals={"f": codec.encode, "x": ack}
        )
        timers[f"encode_deliver_us {name}"] = timeit.Timer(
            "f(x)", globals={"f": codec.encode, "x": deliver}
        )
    ns = median_ns(timers, plan.codec_repeat, plan.codec_target_s)
    table: dict[str, dict[str, float]] = {}
    for key, value in ns.items():
        figure, codec_name = key.split()
        table.setdefault(figure, {})[codec_name] = value / 1000.0
    return table


def loop_share(loop_s: float, process_s: float) -> float:
    """The event-loop thread's share of the process CPU, in (0, 1].

    Both clocks tick at 1/CLK_TCK and are read a moment apart, so on a short run the
    loop thread can seem to have used more than the whole process (or nothing at all):
    the share is clamped, and taken as 1 when either reading has not moved."""
    if process_s <= 0 or loop_s <= 0:
        return 1.0
    return min(1.0, loop_s / process_s)


def mean_ack_ms(delta: Scrape) -> float:
    """The server's mean ack latency (ms) over a scrape difference: Δ sum ÷ Δ count of
    its histogram — exact, unlike a quantile read from the buckets. NaN without acks."""
    count = delta.total(ACK_LATENCY + "_count")
    return delta.total(ACK_LATENCY + "_sum") / count * 1000.0 if count > 0 else math.nan


def measure_point(
    server: ServerProc, codec: str, room_size: int, repeat: int, plan: Plan, window: int = WINDOW
) -> Point:
    pid = server.pid
    base_url, context = server.base_url, server.client_context()  # https after wss://
    before = fetch(base_url, context=context)
    loop0, proc0 = thread_cpu_s(pid), process_cpu_s(pid)
    tag = f"cal{repeat}-{codec}-{room_size}-w{window}"
    if window == WINDOW:
        messages = plan.messages[room_size]
    else:  # a lone fan-out writes a frame per member: fewer messages take as long
        messages = plan.lone_messages if room_size == 1 else plan.lone_messages // 2
    started, client0 = time.monotonic(), _children_cpu_s()
    outcome = run_case(server, codec, room_size, messages, plan.timeout_s, tag, window)
    wall_s, client_s = time.monotonic() - started, _children_cpu_s() - client0
    loop1, proc1 = thread_cpu_s(pid), process_cpu_s(pid)
    share = loop_share(loop1 - loop0, proc1 - proc0)
    delta = fetch(base_url, context=context).minus(before)
    ack_mean_ms = mean_ack_ms(delta)
    stages = tuple((name, delta.mean(SEND_STAGE, stage=name) * 1000.0) for name in SEND_STAGES)
    gc_counts = tuple(delta.total(GC_PAUSE + "_count", generation=g) for g in GC_GENERATIONS)
    gc_sums = tuple(delta.total(GC_PAUSE + "_sum", generation=g) for g in GC_GENERATIONS)
    messages = int(outcome["messages"])
    process_us = float(outcome["server_cpu_s"]) / messages * 1e6
    return Point(
        codec=codec,
        room_size=room_size,
        repeat=repeat,
        messages=messages,
        deliveries=int(outcome["deliveries"]),
        process_us_per_msg=process_us,
        loop_share=share,
        loop_us_per_msg=process_us * share,
        window=window,
        server_ack_mean_ms=ack_mean_ms,
        server_ack_buckets=tuple(delta.buckets(ACK_LATENCY)) if window == LONE_WINDOW else (),
        wall_s=wall_s,
        server_cpu_s=proc1 - proc0,
        client_cpu_s=client_s,
        stage_means_ms=stages,
        gc_collections=gc_counts,
        gc_pause_s=gc_sums,
        commit_batches=delta.total("chatcap_write_batch_messages_count"),
        commit_rows=delta.total("chatcap_write_batch_messages_sum"),
        commit_s=delta.total("chatcap_store_commit_seconds_sum"),
    )


def _children_cpu_s() -> float:
    """User + system CPU of this process's reaped children: the load clients (the server,
    reaped only when stopped, is not among them while a point runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


PACED_CLIENT = "bench.micro.paced_client"
LOAD_CLIENT = "bench.micro.loadclient"


def measure_background(
    scenario: Scenario, plan: Plan, workdir: Path, cpus: CpuPlan
) -> BackgroundProbe:
    """The background probe (module docstring, item 5) on a server of its own."""
    probe_scenario = scenario.with_overrides({"server.ping_interval_s": PING_PROBE_S})
    path = workdir / "scenario-background.toml"
    path.write_text(to_toml(probe_scenario, comments=False))
    server = start_our_server(path, workdir, "calbg", client_ca_file(scenario), cpus=cpus.server)
    pid = server.pid
    try:
        with pinned(cpus.generator):
            (cpu0, _), t0 = precise_cpu_s(pid), time.perf_counter()
            time.sleep(plan.background_base_s)  # the measurement: the server left alone
            (cpu1, _), base_s = precise_cpu_s(pid), time.perf_counter() - t0
            argv = [
                sys.executable, "-m", LOAD_CLIENT, "--case", "idle", "--impl", "ours",
                "--codec", "json", "--url", server.url, "--server-pid", str(pid),
                "--connections", str(plan.background_connections),
                "--hold-s", f"{plan.background_hold_s:g}", "--timeout-s", str(plan.timeout_s),
                "--tag", "calbg",
            ]  # fmt: skip
            if server.ca_file:
                argv += ["--ca-file", str(server.ca_file)]
            outcome = run_client(argv, plan.timeout_s * 3)
            if not outcome.get("ok") or not outcome.get("hold_s"):
                raise RuntimeError(f"background probe: {outcome.get('note')}")
            context = server.client_context()
            (cpu2, _), t2 = precise_cpu_s(pid), time.perf_counter()
            for _ in range(plan.scrapes):
                fetch(server.base_url, context=context)
            (cpu3, _), scrape_s = precise_cpu_s(pid), time.perf_counter() - t2
    finally:
        stop_server(server)
    probe = BackgroundProbe(
        base_s=base_s,
        base_cpu_s=cpu1 - cpu0,
        connections=int(outcome["connections"]),
        hold_s=float(outcome["hold_s"]),
        hold_cpu_s=float(outcome["hold_cpu_s"]),
        ping_interval_s=PING_PROBE_S,
        scrapes=plan.scrapes,
        scrape_s=scrape_s,
        scrape_cpu_s=cpu3 - cpu2,
    )
    base, ping, scrape = background_costs(probe)
    print(
        f"[calibrate] background: {base:.0f} µs/s idle, {ping:.1f} µs per keepalive ping "
        f"({probe.connections} connections), {scrape:.0f} µs per /metrics scrape",
        flush=True,
    )
    return probe


def wait_connections(server: ServerProc, want: int, timeout_s: float) -> int:
    """Poll the server's ``chatcap_connections`` until it holds ``want`` (or the time is
    up); returns how many it held last."""
    context = server.client_context()
    deadline = time.monotonic() + timeout_s
    held = 0
    while time.monotonic() < deadline:
        held = int(fetch(server.base_url, context=context).connections)
        if held >= want:
            break
        time.sleep(0.2)
    return held


def gc_crowd(scenario: Scenario, plan: Plan) -> int:
    """The collector probe's crowd: the scenario's users, at least ``gc_crowd_min`` (a load
    run may hold more connections than the scenario names), at most ``gc_crowd_max``."""
    return max(0, min(max(scenario.workload.users, plan.gc_crowd_min), plan.gc_crowd_max))


def gc_room_sizes(scenario: Scenario) -> tuple[int, ...]:
    """The load-shaped collector points' room sizes: pairs, and the scenario's own rooms
    (its fixed size, else the middle of its range), so the rates get their line against
    the members."""
    rs = scenario.workload.room_size
    size = rs.size if rs.distribution == "fixed" else max(2, (rs.min + rs.max) // 2)
    return tuple(sorted({2, max(size, 2)}))


def measure_rooms_point(
    path: Path, workdir: Path, cpus: CpuPlan, ca_file: str, room_size: int, crowd: int, plan: Plan
) -> Point | None:
    """One load-shaped collector point (module docstring, item 7): a server of its own,
    ``crowd`` (rounded down to whole rooms) connections in rooms of ``room_size``, every
    one a sender in turn (``bench.micro.loadclient --case rooms --scrape``),
    ``plan.gc_messages`` messages; its collections by generation over the measured phase.
    None when the crowd does not fill two rooms."""
    connections = crowd // room_size * room_size
    if connections < 2 * room_size:
        return None
    server = start_our_server(path, workdir, f"calgc-rooms{room_size}", ca_file, cpus=cpus.server)
    try:
        argv = [
            sys.executable, "-m", LOAD_CLIENT, "--case", "rooms", "--impl", "ours",
            "--codec", "json", "--url", server.url, "--server-pid", str(server.pid),
            "--connections", str(connections), "--members", str(room_size),
            "--messages", str(plan.gc_messages), "--window", str(WINDOW), "--scrape",
            "--timeout-s", str(plan.timeout_s), "--tag", f"calgc-rooms{room_size}",
        ]  # fmt: skip
        if server.ca_file:
            argv += ["--ca-file", str(server.ca_file)]
        started, client0 = time.monotonic(), _children_cpu_s()
        outcome = run_client(argv, plan.timeout_s * 3)
        if not outcome.get("ok"):
            raise RuntimeError(f"collector probe, rooms of {room_size}: {outcome.get('note')}")
        wall_s, client_s = time.monotonic() - started, _children_cpu_s() - client0
    finally:
        stop_server(server)
    # the measured phase alone (the load client scrapes its edges): not the connections'
    # opening, whose handshakes, tokens and Joins allocate as much as thousands of sends
    messages = int(outcome["messages"])
    return Point(
        codec="json",
        room_size=room_size,
        repeat=0,
        messages=messages,
        deliveries=int(outcome["deliveries"]),
        process_us_per_msg=float(outcome["server_cpu_s"]) / messages * 1e6,
        loop_share=math.nan,
        loop_us_per_msg=math.nan,
        window=WINDOW,
        wall_s=wall_s,
        server_cpu_s=float(outcome["server_cpu_s"]),
        client_cpu_s=client_s,
        gc_collections=tuple(float(c) for c in outcome["gc_collections"]),
        gc_pause_s=tuple(float(c) for c in outcome["gc_pause_s"]),
        crowd=connections,
        active=True,
    )


def say_collections(where: str, point: Point) -> None:
    """One collector point's line: ``where`` it ran, its messages and its collections."""
    collections = ", ".join(f"{c:.0f}" for c in point.gc_collections)
    print(
        f"[calibrate] collector, {where}{point.messages:>6} messages: collections by "
        f"generation {collections}",
        flush=True,
    )


def measure_gc(
    scenario: Scenario, plan: Plan, workdir: Path, cpus: CpuPlan
) -> tuple[list[Point], int]:
    """The collector probe (module docstring, item 7): the points and the crowd.

    Two servers of their own: the first runs the cases alone, the second with the crowd
    held; both while their idempotency tables fill (fewer messages than
    ``SERVER_DEDUP_ENTRIES``). With ``plan.gc_full``, the second then fills its table
    (echo messages, not kept) and runs the cases again, its table full (each point's
    ``crowd`` and ``table_full`` say which)."""
    path = workdir / "scenario.toml"
    if not path.exists():
        path.write_text(to_toml(scenario, comments=False))
    crowd = gc_crowd(scenario, plan)
    sizes = {1: plan.gc_messages, 2: plan.gc_messages // 2, 21: plan.gc_messages // 6}
    per_round = sum(sizes.values())
    if per_round >= SERVER_DEDUP_ENTRIES:
        raise ValueError(
            f"plan.gc_messages = {plan.gc_messages}: a round of {per_round} messages must "
            f"stay under the server's {SERVER_DEDUP_ENTRIES} idempotency entries"
        )
    points: list[Point] = []
    ca_file = client_ca_file(scenario)

    def measure_cases(server: ServerProc, held: int, phase: int, full: bool) -> None:
        # a phase of its own in the load clients' tag: fresh client_msg_ids (the same
        # ones again would be answered from the idempotency cache, without a fan-out)
        for room_size, messages in sizes.items():
            gc_plan = replace(plan, messages={**plan.messages, room_size: messages})
            point = measure_point(server, "json", room_size, phase, gc_plan)
            points.append(replace(point, crowd=held, table_full=full, repeat=0))
            say_collections(
                f"{held:>5} idle connections held, table {'full' if full else 'filling'}, "
                f"K={room_size:<3}",
                point,
            )

    with pinned(cpus.generator):
        alone = start_our_server(path, workdir, "calgc0", ca_file, cpus=cpus.server)
        try:
            measure_cases(alone, 0, 0, False)
        finally:
            stop_server(alone)
        if not crowd:
            return points, 0
        server = start_our_server(path, workdir, "calgc1", ca_file, cpus=cpus.server)
        idle: subprocess.Popen[bytes] | None = None
        try:
            argv = [
                sys.executable, "-m", LOAD_CLIENT, "--case", "idle", "--impl", "ours",
                "--codec", "json", "--url", server.url, "--server-pid", str(server.pid),
                "--connections", str(crowd), "--hold-s", f"{plan.gc_hold_s:g}",
                "--timeout-s", str(plan.timeout_s), "--tag", "calgc-crowd",
            ]  # fmt: skip
            if server.ca_file:
                argv += ["--ca-file", str(server.ca_file)]
            idle = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            held = wait_connections(server, crowd, plan.timeout_s)
            if held < crowd:
                raise RuntimeError(f"collector probe: the crowd reached {held} of {crowd}")
            measure_cases(server, crowd, 1, False)
            if plan.gc_full:
                fill = SERVER_DEDUP_ENTRIES - per_round + plan.gc_messages // 10
                run_case(server, "json", 1, fill, plan.timeout_s, "calgc-fill")
                measure_cases(server, crowd, 2, True)
        finally:
            if idle is not None and idle.poll() is None:
                idle.terminate()
                try:
                    idle.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    idle.kill()
                    idle.wait()
            stop_server(server)
        for room_size in gc_room_sizes(scenario):
            point = measure_rooms_point(path, workdir, cpus, ca_file, room_size, crowd, plan)
            if point is not None:
                points.append(point)
                say_collections(
                    f"{point.crowd:>5} connections in rooms of {room_size:<3} all sending, ",
                    point,
                )
    return points, crowd


def measure_cold_point(
    server: ServerProc, gap_ms: float, repeat: int, plan: Plan, room_size: int = 1
) -> ColdPoint:
    """One gap of the cold-path probe (see the module docstring) on ``server``: the echo,
    or with ``room_size`` > 1 the cold fan-out (that many members reading)."""
    base_url, context = server.base_url, server.client_context()
    messages = cold_messages(gap_ms, plan)
    argv = [
        sys.executable, "-m", PACED_CLIENT, "--impl", "ours", "--codec", COLD_CODEC,
        "--url", server.url, "--server-pid", str(server.pid), "--gap-ms", f"{gap_ms:g}",
        "--messages", str(messages), "--timeout-s", str(plan.timeout_s),
        "--tag", f"cold{repeat}-{gap_ms:g}-k{room_size}", "--room-size", str(room_size),
    ]  # fmt: skip
    ca_file = server.ca_file
    if ca_file:
        argv += ["--ca-file", str(ca_file)]
    before = fetch(base_url, context=context)
    outcome = run_client(argv, plan.timeout_s * 3)
    if not outcome.get("ok"):
        raise RuntimeError(f"cold path at a {gap_ms:g} ms gap: {outcome.get('note')}")
    delta = fetch(base_url, context=context).minus(before)
    answered = int(outcome["messages"])
    return ColdPoint(
        gap_ms=gap_ms,
        repeat=repeat,
        messages=answered,
        server_ack_mean_ms=mean_ack_ms(delta),  # the warm-up's acks too: same gap
        rtt_p50_ms=float(outcome["rtt_p50_ms"]),
        rtt_mean_ms=float(outcome["rtt_mean_ms"]),
        cpu_us_per_msg=float(outcome["server_cpu_s"]) / answered * 1e6,
        room_size=room_size,
        fanout_stage_ms=delta.mean(SEND_STAGE, stage="fanout") * 1000.0
        if room_size > 1
        else math.nan,
    )


def measure_cold_path(server: ServerProc, repeat: int, plan: Plan) -> list[ColdPoint]:
    """Every gap of :data:`COLD_GAPS_MS` once, the order rotated by ``repeat``."""
    shift = repeat % len(COLD_GAPS_MS)
    points = []
    for gap_ms in COLD_GAPS_MS[shift:] + COLD_GAPS_MS[:shift]:
        point = measure_cold_point(server, gap_ms, repeat, plan)
        fan = measure_cold_point(server, gap_ms, repeat, plan, COLD_ROOM)
        points += [point, fan]
        print(
            f"[calibrate] cold path repeat {repeat + 1}/{plan.repeat} gap {gap_ms:5g} ms: "
            f"server {point.server_ack_mean_ms * 1000:7.0f} µs, round trip p50 "
            f"{point.rtt_p50_ms * 1000:7.0f} µs, {point.cpu_us_per_msg:6.0f} µs CPU/msg; "
            f"fan-out to {COLD_ROOM - 1} {fan.fanout_stage_ms * 1000:5.0f} µs",
            flush=True,
        )
    return points


def measure_server_points(
    scenario: Scenario,
    plan: Plan,
    workdir: Path,
    cpus: CpuPlan | None = None,
    cold: list[ColdPoint] | None = None,
) -> list[Point]:
    """Every (codec, room size) ``plan.repeat`` times; a fresh server per repeat, the
    order rotated between repeats so that drift hits every point alike. The server runs
    on ``cpus.server``; this process, and so the load clients it starts, on
    ``cpus.generator`` meanwhile (default: :func:`plan_cpus`). With ``cold`` (a list), each
    repeat's server then runs the cold-path probe too, its points appended there."""
    cpus = cpus or plan_cpus()
    scenario_path = workdir / "scenario.toml"
    scenario_path.write_text(to_toml(scenario, comments=False))
    jobs = [(c, k, WINDOW) for k in ROOM_SIZES for c in CODEC_NAMES]
    jobs += [(c, k, LONE_WINDOW) for k in (1, LONE_ROOM) for c in CODEC_NAMES]
    points: list[Point] = []
    ca_file = client_ca_file(scenario)
    for repeat in range(plan.repeat):
        server = start_our_server(scenario_path, workdir, f"cal{repeat}", ca_file, cpus=cpus.server)
        try:
            with pinned(cpus.generator):
                points += measure_repeat(server, jobs, repeat, plan)
                if cold is not None:
                    cold += measure_cold_path(server, repeat, plan)
        finally:
            stop_server(server)
    return points


def measure_repeat(
    server: ServerProc, jobs: list[tuple[str, int, int]], repeat: int, plan: Plan
) -> list[Point]:
    """One server's points, the order rotated by ``repeat``; a progress line each."""
    points = []
    shift = repeat % len(jobs)
    for codec, room_size, window in jobs[shift:] + jobs[:shift]:
        point = measure_point(server, codec, room_size, repeat, plan, window)
        points.append(point)
        print(
            f"[calibrate] server repeat {repeat + 1}/{plan.repeat} {codec:8} "
            f"K={room_size:<3} window {window:<3} "
            f"{point.process_us_per_msg:8.1f} µs/msg process, "
            f"loop share {point.loop_share:.2f}",
            flush=True,
        )
    return points


def measure_store(plan: Plan, workdir: Path) -> StoreFigures:
    """Commit batches of every size on a fresh WAL file; see the module docstring."""
    counter = 0

    def batch_of(size: int) -> list[PendingSend]:
        nonlocal counter
        batch = [
            PendingSend(
                room=f"room-{(counter + i) % 10}",
                sender=f"user-{(counter + i) % 50}",
                client_msg_id=f"cal-{counter + i}",
                body=CHAT_BODY,
                sent_at_us=counter + i,
            )
            for i in range(size)
        ]
        counter += size
        return batch

    def commit_ms(conn: StoreConnection, size: int) -> float:
        batch = batch_of(size)  # built outside the timed call
        start = time.perf_counter()
        conn.commit_batch(batch, ts_us=counter)
        return (time.perf_counter() - start) * 1e3

    per_repeat: dict[int, list[float]] = {size: [] for size in BATCH_SIZES}
    with StoreConnection(workdir / "calibrate-store.db", synchronous="NORMAL") as conn:
        for size in BATCH_SIZES:  # warm-up: tables, pages, the WAL file
            commit_ms(conn, size)
        for repeat in range(plan.store_repeat):
            shift = repeat % len(BATCH_SIZES)
            for size in BATCH_SIZES[shift:] + BATCH_SIZES[:shift]:
                times = [commit_ms(conn, size) for _ in range(plan.commits_per_repeat)]
                per_repeat[size].append(statistics.fmean(times))
        samples = tuple(round(commit_ms(conn, 1), 5) for _ in range(plan.commit_samples))
        # a sustained run on the same file: the WAL grows and is checkpointed meanwhile
        sustained = tuple(
            commit_ms(conn, plan.sustained_batch) for _ in range(plan.sustained_commits)
        )
    table = {size: statistics.median(values) for size, values in per_repeat.items()}
    intercept, slope = fit_line(list(table), list(table.values()))
    return StoreFigures(
        table, table[1], max(slope, 0.0), intercept, samples, sustained, plan.sustained_batch
    )


def calibrate(
    scenario: Scenario, plan: Plan, created: datetime, cpus: CpuPlan | None = None
) -> Costs:
    """Measure everything (codecs, server points, store) and assemble the file's figures.

    The codecs and the store commits are the server's work: they are timed on the
    server's CPU set (this process pinned there meanwhile); the server points put the
    server there and the load clients on the generator's (:func:`measure_server_points`).
    """
    cpus = cpus or plan_cpus()
    say_cpus(cpus)
    with pinned(cpus.server):
        print("[calibrate] codecs", flush=True)
        codec = measure_codec_costs(scenario.workload.body_bytes, plan)
    with tempfile.TemporaryDirectory(prefix="chatcap-calibrate-") as tmp:
        workdir = Path(tmp)
        with pinned(cpus.server):
            print("[calibrate] store commits by batch size", flush=True)
            store = measure_store(plan, workdir)
        print(f"[calibrate] server: rooms of {ROOM_SIZES}, {plan.repeat} repeat(s)", flush=True)
        cold: list[ColdPoint] = []
        points = measure_server_points(scenario, plan, workdir, cpus, cold)
        background = measure_background(scenario, plan, workdir, cpus)
        print("[calibrate] the garbage collector, under a crowd of idle connections", flush=True)
        gc_points, crowd = measure_gc(scenario, plan, workdir, cpus)
    cpu_sets = cpus.describe() | {"server_cores": cpus.server_cores()}
    return build_costs(
        codec,
        points,
        store,
        scenario,
        plan,
        created,
        cpu_sets,
        cold,
        background,
        gc=GcProbe(tuple(gc_points), crowd),
    )


def say_cpus(cpus: CpuPlan) -> None:
    described = cpus.describe()
    print(
        f"[calibrate] server (and codec, store timings) on CPUs {described['server_cpus']}, "
        f"load clients on CPUs {described['generator_cpus']}"
        + (f"; {cpus.note}" if cpus.note else ""),
        flush=True,
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench calibrate", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("--out", default="results/calibration", help="folder of <host>.json")
    p.add_argument("--scenario", default="scenarios/baseline.toml", help="body size, server")
    p.add_argument("--quick", action="store_true", help="small counts (for tests)")
    p.add_argument("--repeat", type=int, help="server repeats (3; quick 1)")
    add_cpu_arguments(p)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="scenario override for the server, e.g. --set server.store.batch_max=16",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Measure, print the table, write ``OUT/<host>.json``; 2 on bad input."""
    args = build_parser().parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.repeat is not None:
        if args.repeat < 1:
            print("error: --repeat must be >= 1", file=sys.stderr)
            return 2
        plan = replace(plan, repeat=args.repeat)
    try:
        cpus = cpu_plan_from_args(args)
        scenario = bench_scenario(args.scenario, args.set)
        client_ca_file(scenario)  # a named CA that does not load is bad input, said now
    except (ScenarioError, BadInput) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    raise_nofile_limit()
    created = datetime.now(UTC)
    try:
        with sigterm_as_exit():
            costs = calibrate(scenario, plan, created, cpus)
    except RuntimeError as exc:
        print(f"error: calibration failed: {exc}", file=sys.stderr)
        return 1
    path = save_costs(costs, Path(args.out) / f"{costs.host}.json")
    print(format_table(costs))
    print(f"[calibrate] wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
