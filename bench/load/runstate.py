"""The Locust run's shared half: the ``--chat-*`` options, per-process state, run events.

Runs under gevent only (Locust patches the standard library before this is imported);
never import it into a process that runs asyncio. Importing it registers its listeners
on Locust's events once: the command-line options (:func:`_add_arguments`), ``init``,
``test_start``, ``test_stopping`` and ``test_stop``. Every locustfile (``bench/locustfile.py``,
``bench/locust_history.py``) reaches it through :mod:`bench.load.users` or
:mod:`bench.load.history`, so all share one :data:`RUN`.

**Bad options.** Headless, a bad ``--chat-*`` option ends Locust at ``init`` with one
line and status 2. In the web UI the form's values are checked when the swarm is asked
for (:mod:`bench.load.webui`): a bad one refuses the swarm, and the form shows why. A
relative ``--chat-scenario`` is looked up in the working directory, then in the project
root (:func:`scenario_path`), so the default ``scenarios/baseline.toml`` works from any
folder.

**The ledger in the web UI.** While a test runs, each worker adds its ledger so far
(:meth:`bench.load.report.ProcessStats.snapshot`) to the statistics report Locust sends
its master every few seconds (``report_to_master``); the master keeps the latest per
worker, and a worker's final part replaces it. :meth:`RunState.ledger` merges what this
process knows into the table the web UI's chatcap tab shows.

**Locust's rows from tallies.** The chat users count ack and delivery latencies in
tallies (:mod:`bench.load.tally`), not one Locust ``request`` event each: once a second
(:func:`_fold_loop`, and once more at test stop) every tally is folded into the process's
histograms and, for ``ack`` and ``deliver``, into Locust's statistics rows
``send→ack {codec}`` and ``deliver {codec}`` (:func:`fold_into_locust`: one
:class:`locust.stats.StatsEntry` made from the counts and added with
``StatsEntry.extend``, the way a master adds a worker's report). Locust's figures for
those rows are then what they were (counts, response times, bytes, requests per second
of the second they were folded in), a second late at most; only ``request`` event
listeners no longer see each ack and delivery. Failures are still one event each.

**At test stop** every process turns its figures into a *part*
(:meth:`bench.load.report.ProcessStats.part`). A worker sends its part to the master
as a Locust message (``chatcap_part``) and, with ``--chat-out-worker``, writes it to a
file too; the master merges the parts and writes ``--chat-out`` (layout: the
:mod:`bench.load.report` docstring). When the master stops before its workers (the
headless ``--run-time`` path), it asks them to stop and report (``chatcap_flush``) and
waits for their parts.
"""

from __future__ import annotations

import itertools
import logging
import time
from argparse import Namespace
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
from locust import events
from locust import stats as locust_stats
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import StatsEntry

from bench._support.paths import REPO_ROOT
from bench.load.plan import (
    CODEC_CHOICES,
    CodecPlan,
    LoadPlan,
    RoomPlan,
    resolve_plan,
)
from bench.load.report import (
    ProcessStats,
    ledger_table,
    merge_parts,
    write_json,
)
from bench.load.tally import locust_figures
from chatcap.policy.retry import RetryPolicy
from chatcap.scenario import CODEC_MIX, ScenarioError, load_scenario
from chatcap.wiring import retry_policy

__all__ = [
    "DEFAULT_SCENARIO",
    "LOCUST_ROWS",
    "PASSWORD",
    "RUN",
    "RunState",
    "fold_into_locust",
    "locust_row",
    "plan_from_options",
    "scenario_path",
]

logger = logging.getLogger("chatcap.locust")

MSG_HELLO = "chatcap_hello"


MSG_PART = "chatcap_part"


MSG_FLUSH = "chatcap_flush"


LEDGER_KEY = "chatcap_ledger"
"""The key of a worker's ledger snapshot in its Locust statistics report."""


PASSWORD = "pw"


COLLECT_TIMEOUT_S = 15.0


ARRIVAL_CHOICES = ("scenario", "poisson", "constant", "closed")


LOCUST_ROWS = {"ack": "send→ack {codec}", "deliver": "deliver {codec}"}
"""The tallies that are also Locust statistics rows (request type ``ws``), by name."""

REQUEST_TYPE = "ws"

FOLD_INTERVAL_S = 1.0


def locust_row(name: str, codec: str) -> str:
    """The Locust row (request name) of tally ``name`` for ``codec`` (see LOCUST_ROWS)."""
    return LOCUST_ROWS[name].format(codec=codec)


DEFAULT_SCENARIO = "scenarios/baseline.toml"
"""``--chat-scenario``'s default, found in the project root from any working directory."""


def _add_arguments(parser: Any, **_kw: Any) -> None:
    add = parser.add_argument
    add(
        "--chat-codec",
        choices=CODEC_CHOICES,
        default=CODEC_MIX,
        help="wire codec of the chat users; mix = the scenario's workload.codec_mix",
    )
    add(
        "--chat-scenario",
        default=DEFAULT_SCENARIO,
        help="the scenario the server runs: its workload and client sections drive the "
        "users (a relative path: the working directory, then the project root)",
    )
    add(
        "--chat-room-size",
        type=int,
        default=None,
        help="members per room (fixed); default: the scenario's room_size",
    )
    add(
        "--chat-send-rate",
        type=float,
        default=None,
        help="sends per second per user; default: the scenario's",
    )
    add(
        "--chat-body-bytes",
        type=int,
        default=None,
        help="message body size in bytes; default: the scenario's",
    )
    add("--chat-seed", type=int, default=None, help="root seed; default: the scenario's")
    add(
        "--chat-arrival",
        choices=ARRIVAL_CHOICES,
        default="scenario",
        help="send process: poisson | constant (open loop) | closed (think time)",
    )
    add(
        "--chat-warmup-s",
        type=float,
        default=None,
        help="latency histograms count from this many seconds after spawning completes "
        "(the ramp and warm-up left out; counts and the loss ledger keep the whole run); "
        "default: the whole run",
    )
    add(
        "--chat-out",
        default="",
        include_in_web_ui=False,
        help="write the merged histograms, loss and errors to this JSON file at test stop",
    )
    add(
        "--chat-out-worker",
        default="",
        include_in_web_ui=False,
        help="each process also writes its own part here; {worker} = its index",
    )


def _number(value: Any, kind: type[int] | type[float], option: str) -> Any:
    """A typed option; the web UI hands back strings, ``""`` for unset."""
    if value is None or value == "":
        return None
    try:
        return kind(value)
    except ValueError:
        word = "an integer" if kind is int else "a number"
        raise ValueError(f"{option} {value!r}: expected {word}") from None


def scenario_path(text: str) -> Path:
    """Where ``--chat-scenario TEXT`` is: as given when absolute or found from the working
    directory, else under the project root (where the default lives)."""
    path = Path(text).expanduser()
    if path.is_absolute() or path.exists():
        return path
    in_project = REPO_ROOT / path
    return in_project if in_project.exists() else path


def plan_from_options(options: Namespace | None) -> LoadPlan:
    """The :class:`LoadPlan` the ``--chat-*`` options describe (defaults without options)."""

    def get(name: str) -> Any:
        return getattr(options, name, None) if options is not None else None

    text = str(get("chat_scenario") or DEFAULT_SCENARIO)
    path = scenario_path(text)
    if not path.exists():
        also = "" if path.is_absolute() else f" (nor {REPO_ROOT / path})"
        raise ScenarioError(f"--chat-scenario {text}: no such file {path.absolute()}{also}")
    scenario = load_scenario(path)
    arrival = get("chat_arrival") or "scenario"
    if arrival not in ARRIVAL_CHOICES:
        raise ValueError(
            f"--chat-arrival {arrival!r}: expected one of {', '.join(ARRIVAL_CHOICES)}"
        )
    codec = get("chat_codec") or CODEC_MIX
    if codec not in CODEC_CHOICES:
        raise ValueError(f"--chat-codec {codec!r}: expected one of {', '.join(CODEC_CHOICES)}")
    return resolve_plan(
        scenario,
        codec=codec,
        room_size=_number(get("chat_room_size"), int, "--chat-room-size"),
        send_rate_per_user_per_s=_number(get("chat_send_rate"), float, "--chat-send-rate"),
        body_bytes=_number(get("chat_body_bytes"), int, "--chat-body-bytes"),
        seed=_number(get("chat_seed"), int, "--chat-seed"),
        arrival=None if arrival == "scenario" else arrival,
    )


class RunState:
    """Per-process state of the current test: plan, figures, and (master) parts."""

    def __init__(self) -> None:
        self.plan: LoadPlan | None = None
        self.retry_policy: RetryPolicy | None = None
        self.plan_error = ""
        """Why the last test_start made no plan (shown by the users' on_start failure)."""
        self.stats: ProcessStats | None = None
        self.rooms: RoomPlan | None = None
        self.codecs = CodecPlan({"json": 1.0})
        self.reader_codecs = CodecPlan({"json": 1.0})
        self.worker = 0
        self.tag = "0"
        self.active = False
        self.rooms_joined: list[str] = []
        self.final_part: dict[str, Any] | None = None
        self.parts: dict[str, dict[str, Any]] = {}
        self.live: dict[str, dict[str, Any]] = {}
        """Master: each worker's latest ledger snapshot, by Locust client id."""
        self.started_workers: dict[str, int] = {}
        self.folder: gevent.Greenlet | None = None
        """The greenlet folding tallies into Locust's statistics while a test runs."""
        self.environment: Environment | None = None
        """The Locust environment of the current test (``spawning_complete`` has none)."""
        self.window_timer: gevent.Greenlet | None = None
        """The greenlet that starts the measured window (``--chat-warmup-s``)."""
        self.stopping_ns: int | None = None
        """``perf_counter_ns`` when this process was told to stop (``test_stopping``):
        sends due after it are not counted as unsent (:func:`bench.load.plan.backlog_until`)."""
        self._users: Iterator[int] = itertools.count()
        self._readers: Iterator[int] = itertools.count()

    def start(self, plan: LoadPlan, worker: int) -> None:
        """A test starts in this process (local runner or worker)."""
        self.plan, self.worker, self.active = plan, worker, True
        # the wall clock and the users' event clock read together: the series' anchor
        self.stats = ProcessStats(time.time(), time.process_time(), time.perf_counter_ns())
        self.rooms = RoomPlan(plan.room_size, plan.seed, worker)
        self.codecs = plan.codecs()
        self.reader_codecs = plan.codecs()
        # client_msg_ids must not repeat across runs against one database: the server
        # would answer a reused id with the old Ack (deduplication) and deliver nothing.
        self.tag = f"{time.time_ns() // 1_000_000:x}"
        self.rooms_joined = []
        self.final_part = None
        self.stopping_ns = None
        self._users = itertools.count()
        self._readers = itertools.count()
        # one retry policy for every user of this process: its retry budget is shared,
        # as the model's is (one budget for all simulated users). With N Locust
        # processes the fleet has N budgets: N times the reserve of retries per second
        self.retry_policy = retry_policy(plan.client)

    def no_plan(self) -> RuntimeError:
        """The error a user's ``on_start`` raises when this test has no plan."""
        why = self.plan_error or "the test_start listener did not run"
        return RuntimeError(f"chatcap: no plan: {why}")

    def ledger(self) -> dict[str, Any]:
        """The ledger table of this test so far (:func:`bench.load.report.ledger_table`):
        this process's own figures, or on a master its workers' (final parts first)."""
        finished = 0
        if self.parts or self.live:  # a master
            sources = [*self.parts.values()]
            sources += [snap for cid, snap in self.live.items() if cid not in self.parts]
            finished = len(self.parts)
        elif self.stats is not None:
            until = time.time()
            if not self.active and self.final_part is not None:
                until, finished = self.final_part["stopped_unix_s"], 1
            sources = [self.stats.snapshot(self.worker, until)]
        else:
            sources = []
        table = ledger_table(sources)
        table.update(finished_processes=finished, error=self.plan_error)
        return table

    def next_user(self) -> int:
        """The index ``n`` of the next chat user this process starts."""
        return next(self._users)

    def next_reader(self) -> int:
        """The index of the next history reader (counted apart: rooms stay full)."""
        return next(self._readers)

    def finish(self) -> dict[str, Any] | None:
        """The test stopped here: this process's part (cached for a later flush)."""
        if self.stats is None or not self.active:
            return self.final_part
        self.active = False
        self.final_part = self.stats.part(self.worker, time.time(), time.process_time())
        return self.final_part


RUN = RunState()


def _on_init(environment: Environment, **_kw: Any) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner.register_message(MSG_FLUSH, _on_flush)
        return  # the master's options arrive with the spawn message
    try:
        plan_from_options(environment.parsed_options)
        warmup_s(environment.parsed_options)
    except (ScenarioError, ValueError) as exc:
        logger.error("chatcap: %s", exc)
        raise SystemExit(2) from None
    if environment.web_ui is not None:
        from bench.load import webui  # Flask: only where Locust serves its web UI

        webui.install(environment, plan_from_options, RUN.ledger)
    if isinstance(runner, MasterRunner):
        runner.register_message(MSG_HELLO, _on_hello)
        runner.register_message(MSG_PART, _on_part)


def _on_test_start(environment: Environment, **_kw: Any) -> None:
    runner = environment.runner
    RUN.plan = None  # a bad option must not leave the previous test's plan in place
    RUN.environment = environment
    try:
        plan = plan_from_options(environment.parsed_options)
    except (ScenarioError, ValueError) as exc:  # the web form checks first; a worker may not
        RUN.plan_error = str(exc)
        logger.error("chatcap: no plan, the users will not start: %s", exc)
        return
    RUN.plan_error = ""
    if isinstance(runner, MasterRunner):
        RUN.plan, RUN.parts, RUN.started_workers, RUN.live = plan, {}, {}, {}
        return
    worker = getattr(runner, "worker_index", 0) or 0
    _stop_folding(environment)  # a folder of an earlier test (web UI: stop, then start)
    RUN.start(plan, worker)
    RUN.folder = gevent.spawn(_fold_loop, environment)
    if isinstance(runner, WorkerRunner):
        runner.send_message(MSG_HELLO, {"worker": worker})


def warmup_s(options: Namespace | None) -> float | None:
    """``--chat-warmup-s`` (None: latencies cover the whole run); a bad value is a
    ValueError naming the option and the range."""
    value: float | None = _number(getattr(options, "chat_warmup_s", None), float, "--chat-warmup-s")
    if value is not None and not 0.0 <= value <= 3600.0:
        raise ValueError(f"--chat-warmup-s {value!r}: expected 0 to 3600 seconds")
    return value


def _on_spawning_complete(**_kw: Any) -> None:
    """Spawning ended in this process: after ``--chat-warmup-s``, the window starts."""
    environment = RUN.environment
    if environment is None or isinstance(environment.runner, MasterRunner) or not RUN.active:
        return
    try:
        delay_s = warmup_s(environment.parsed_options)
    except ValueError as exc:
        logger.error("chatcap: %s; latencies cover the whole run", exc)
        return
    if delay_s is None or RUN.window_timer is not None:
        return  # not asked, or already armed (a web UI re-spawn keeps the first window)
    RUN.window_timer = gevent.spawn_later(delay_s, _start_window, environment)


def _start_window(environment: Environment) -> None:
    if RUN.stats is not None and RUN.active:
        now = time.time()
        fold_into_locust(environment.stats, RUN.stats.start_window(now), int(now), now)


def _on_test_stopping(environment: Environment, **_kw: Any) -> None:
    """The runner begins to stop its users: remember when (the first time)."""
    if RUN.active and RUN.stopping_ns is None:
        RUN.stopping_ns = time.perf_counter_ns()
        if RUN.stats is not None:
            RUN.stats.series.stopping(time.time())


def _on_test_stop(environment: Environment, **_kw: Any) -> None:
    runner = environment.runner
    options = environment.parsed_options
    if isinstance(runner, MasterRunner):
        _collect_and_write(environment)
        return
    _stop_folding(environment)
    part = RUN.finish()
    if part is None:
        return
    pattern = getattr(options, "chat_out_worker", "") or ""
    if pattern:
        write_json(pattern.format(worker=part["worker"]), merge_parts([part], _plan(), "local"))
    if isinstance(runner, WorkerRunner):
        runner.send_message(MSG_PART, part)
    else:
        _write_out(options, merge_parts([part], _plan(), "local"))


def fold_into_locust(
    rows: locust_stats.RequestStats,
    drained: list[tuple[str, str, dict[int, int], int]],
    second: int,
    now_unix_s: float,
) -> None:
    """Add drained ``ack`` / ``deliver`` counts (:meth:`ProcessStats.drain`) to Locust's
    rows (:data:`LOCUST_ROWS`) and its total, as requests of ``second``."""
    for name, codec, counts, size in drained:
        if name not in LOCUST_ROWS:
            continue
        figures = locust_figures(counts, size, locust_stats.bucket_response_time)
        if figures is None:
            continue
        batch = StatsEntry(rows, locust_row(name, codec), REQUEST_TYPE)
        batch.num_requests = figures.count
        batch.total_response_time = figures.total_ms  # type: ignore[assignment]  # float ms
        batch.min_response_time = figures.min_ms  # type: ignore[assignment]
        batch.max_response_time = figures.max_ms  # type: ignore[assignment]
        batch.response_times.update(figures.buckets)
        batch.num_reqs_per_sec[second] = figures.count
        batch.total_content_length = figures.size_bytes
        batch.last_request_timestamp = now_unix_s
        rows.get(batch.name, REQUEST_TYPE).extend(batch)
        rows.total.extend(batch)


def _fold(environment: Environment, second: int) -> None:
    """Fold this process's tallies into its histograms and Locust's rows."""
    if RUN.stats is not None:
        fold_into_locust(environment.stats, RUN.stats.drain(), second, time.time())


def _fold_loop(environment: Environment) -> None:
    """Once a second, just after the second turns: fold the second that ended."""
    while True:
        now = time.time()
        gevent.sleep(FOLD_INTERVAL_S - now % FOLD_INTERVAL_S + 0.001)
        _fold(environment, int(time.time()) - 1)


def _stop_folding(environment: Environment) -> None:
    """Stop the fold loop, and fold what the tallies hold (the test is stopping)."""
    timer, RUN.window_timer = RUN.window_timer, None
    if timer is not None:
        timer.kill(block=False)  # a window that had not started yet: the whole run counts
    folder, RUN.folder = RUN.folder, None
    if folder is not None:
        folder.kill(block=True)
        _fold(environment, int(time.time()))


def _plan() -> dict[str, Any]:
    return RUN.plan.describe() if RUN.plan is not None else {}


def _on_hello(environment: Environment, msg: Any, **_kw: Any) -> None:
    RUN.started_workers[msg.node_id] = int(msg.data["worker"])


def _on_part(environment: Environment, msg: Any, **_kw: Any) -> None:
    RUN.parts[msg.node_id] = msg.data


def _on_flush(environment: Environment, msg: Any, **_kw: Any) -> None:
    """The master stops first: stop here too (test_stop sends the part), or resend it."""
    runner = environment.runner
    if RUN.active and runner is not None:
        runner.stop()
    elif RUN.final_part is not None and isinstance(runner, WorkerRunner):
        runner.send_message(MSG_PART, RUN.final_part)


def _collect_and_write(environment: Environment) -> None:
    """Master: wait for every started worker's part, merge, write ``--chat-out``."""
    runner = environment.runner
    assert isinstance(runner, MasterRunner)
    for client_id in set(RUN.started_workers) - set(RUN.parts):
        runner.send_message(MSG_FLUSH, None, client_id=client_id)
    deadline = time.monotonic() + COLLECT_TIMEOUT_S + (environment.stop_timeout or 0.0)
    while set(RUN.started_workers) - set(RUN.parts) and time.monotonic() < deadline:
        gevent.sleep(0.05)
    missing = [RUN.started_workers[c] for c in set(RUN.started_workers) - set(RUN.parts)]
    if missing:
        logger.warning("chatcap: no final report from worker(s) %s", sorted(missing))
    document = merge_parts(RUN.parts.values(), _plan(), "distributed", missing)
    _write_out(environment.parsed_options, document)


def _write_out(options: Namespace | None, document: dict[str, Any]) -> None:
    """Write ``--chat-out`` (if given) and log a one-line summary."""
    path = getattr(options, "chat_out", "") or ""
    if path:
        write_json(path, document)
    gen, loss = document["generator"], document["loss"]
    acks = sum(s["count"] for s in document["summary"].get("ack", {}).values())
    logger.info(
        "chatcap: %d sent, %d acked, %d delivered, %d missing, %d errors; generator "
        "%.0f%% CPU in %d process(es), max schedule lag %.1f ms%s",
        loss["sent"], acks, loss["delivered"], loss["missing"],
        sum(document["errors"].values()), gen["cpu_pct"], gen["processes"],
        gen["max_schedule_lag_ms"], f"; wrote {path}" if path else "",
    )  # fmt: skip
    for reason in gen["limits"]:
        logger.warning("chatcap: the load generator may have limited this run: %s", reason)


def _on_report_to_master(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
    """Worker: the ledger so far rides along with Locust's statistics report."""
    if RUN.active and RUN.stats is not None:
        data[LEDGER_KEY] = RUN.stats.snapshot(RUN.worker, time.time())


def _on_worker_report(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
    """Master: keep each worker's latest ledger snapshot."""
    snapshot = data.get(LEDGER_KEY)
    if snapshot is not None:
        RUN.live[client_id] = snapshot


def _listen(hook: Any, handler: Callable[..., None]) -> None:
    """``hook.add_listener(handler)``; Locust's EventHook is untyped, so no decorators."""
    hook.add_listener(handler)


_listen(events.init_command_line_parser, _add_arguments)
_listen(events.init, _on_init)
_listen(events.test_start, _on_test_start)
_listen(events.spawning_complete, _on_spawning_complete)
_listen(events.test_stopping, _on_test_stopping)
_listen(events.test_stop, _on_test_stop)
_listen(events.report_to_master, _on_report_to_master)
_listen(events.worker_report, _on_worker_report)
