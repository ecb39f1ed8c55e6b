"""The server against the model, event for event (h11 tests itself against the stdlib).

One script — sends at given times (a repeated message id is a retry with the same
``client_msg_id``) and the store's commits (how long each takes, whether it fails) —
drives both implementations of the Send pipeline:

* the server's real session → writer → pool → store path
  (:mod:`tests.server.support_pipeline`: a manual clock, a scripted store);
* the model (:func:`sim.model.simulate` with ``replay`` carrying message ids,
  ``store_script`` and ``wire``), its CPU costs zero, so the two clocks agree.

For every send the answer must match exactly — acked or which error code, its
``retry_after_ms``, whether the Ack is a duplicate answer, and when it was written — and so
must the order in which Delivers and answers leave the server. The cases exercise every
decision a Send meets: dedup (join an in-flight write, replay a stored ack, a failure
forgotten, a late commit stored anyway), the bounded queue and its drain-rate hint, pool
timeouts, breaker trips and the limiter.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from chatcap.results import OUTCOMES
from sim.calibration import Costs
from sim.model import ScriptedCommit, simulate, user_key
from sim.parts import Attempt, Message
from sim.workload import Layout, Replay
from tests.server.support_pipeline import Commit, PipelineRun, run_pipeline, scenario_with

# the model's outcome names -> the server's error codes (store failures answer `internal`)
SERVER_CODE = {"error": "internal"}
USERS, ROOMS = 8, 2  # rooms of 4: every user in one room


@dataclass(frozen=True)
class Case:
    """A script: sends ``(t_s, user, message id)`` and commits ``(delay_s, fails)``."""

    sends: Sequence[tuple[float, int, int]]
    commits: Sequence[tuple[float, bool]] = ()
    overrides: Mapping[str, Any] | None = None


def model_overrides(case: Case, end_s: float) -> dict[str, Any]:
    """What the model needs beside the case's own keys (the server ignores these)."""
    return {
        "workload.users": USERS,
        "workload.rooms": ROOMS,
        "workload.room_size.distribution": "fixed",
        "workload.room_size.size": USERS // ROOMS,
        "workload.codec_mix": {"json": 1},
        "workload.duration_s": end_s,
        "workload.warmup_s": 0.0,
        "client.retry.max_attempts": 1,  # retries come from the script only
        "client.ack_timeout_ms": 1e9,
        "sim.cpu": False,
        "sim.store_concurrency": 1,  # commits take turns, as on the server
        **dict(case.overrides or {}),
    }


@dataclass(frozen=True)
class Answer:
    """One send's answer, as both sides report it."""

    kind: str  # "ack" or an error code
    retry_after_ms: int
    duplicate: bool
    at_us: int


def run_model(case: Case) -> tuple[list[Answer], list[tuple[str, int]]]:
    end_s = max(t for t, _, _ in case.sends) + 60.0
    scenario = scenario_with(model_overrides(case, end_s))
    costs = Costs().zero_cpu()
    wire: list[tuple[str, Any]] = []
    raw = simulate(
        scenario,
        scenario.seed,
        costs,
        replay=Replay(
            intended_s=[t for t, _, _ in case.sends],
            user=[u for _, u, _ in case.sends],
            room=[room_of(u) for _, u, _ in case.sends],
            codec=[0] * len(case.sends),
            message=[m for _, _, m in case.sends],
        ),
        store_script=[ScriptedCommit(d, f) for d, f in case.commits],
        wire=wire,
    )
    ids = message_ids(case, raw.attempts)
    acked: set[int] = set()
    answers = []
    for attempt in raw.attempts:  # in send order: the replay's order
        outcome = OUTCOMES[attempt.outcome]
        mid = ids[id(attempt.msg)]
        answers.append(
            Answer(
                "ack" if outcome == "acked" else SERVER_CODE.get(outcome, outcome),
                round(attempt.retry_after_s * 1000),
                outcome == "acked" and mid in acked,
                round(attempt.done_s * 1e6),
            )
        )
        if outcome == "acked":
            acked.add(mid)
    order = []
    for kind, item in wire:
        if kind == "deliver":
            msg: Message = item
            if len(raw.layout.room_members[msg.room]) > 1:  # someone to deliver to
                order.append(("deliver", ids[id(msg)]))
        else:
            attempt_: Attempt = item
            order.append(("answer", ids[id(attempt_.msg)]))
    return answers, order


def message_ids(case: Case, attempts: Sequence[Attempt]) -> dict[int, int]:
    """The script's message id of each model Message (attempts come in send order)."""
    return {id(a.msg): mid for a, (_, _, mid) in zip(attempts, case.sends, strict=True)}


def run_server(case: Case, commit_on: str = "thread") -> tuple[list[Answer], list[tuple[str, int]]]:
    members: dict[str, list[str]] = defaultdict(list)
    for room, users in enumerate(layout().room_members):
        members[f"room-{room}"] = [user_key(int(u)) for u in users]
    run: PipelineRun = run_pipeline(
        [(t, user_key(u), f"m{m}", f"room-{room_of(u)}") for t, u, m in case.sends],
        [Commit(d, f) for d, f in case.commits],
        overrides=case.overrides,
        members=members,
        commit_on=commit_on,
    )
    answers = []
    for outcome in run.outcomes:
        assert outcome is not None, "the server left a send unanswered"
        answers.append(
            Answer(
                "ack" if outcome.kind == "ack" else outcome.code,
                outcome.retry_after_ms,
                outcome.duplicate,
                round(outcome.at_s * 1e6),
            )
        )
    order: list[tuple[str, int]] = []
    for frame in run.wire:
        mid = int(frame.client_msg_id[1:])
        event = ("deliver" if frame.kind == "deliver" else "answer", mid)
        if event[0] == "deliver" and order and order[-1] == event:
            continue  # one fan-out writes one Deliver per member: one event
        order.append(event)
    return answers, order


@functools.cache
def layout() -> Layout:
    """The rooms the model deals for USERS and ROOMS from the scenario's seed (a run of
    one send reads them); the server is given the same members."""
    probe = Case(sends=[(0.0, 0, 0)])
    scenario = scenario_with(model_overrides(probe, 1.0))
    return simulate(scenario, scenario.seed, Costs().zero_cpu()).layout


def room_of(user: int) -> int:
    return layout().user_rooms[user][0]


CASES = {
    "acks_and_a_replayed_duplicate": Case(
        sends=[(0.0, 0, 0), (0.010, 1, 1), (0.020, 0, 0), (0.030, 2, 2)],
        commits=[(0.002, False)] * 3,
    ),
    "retry_joins_an_in_flight_write": Case(
        sends=[(0.0, 0, 0), (0.050, 0, 0), (0.060, 3, 1)],
        commits=[(0.200, False), (0.010, False)],
    ),
    "failed_commit_is_forgotten_and_the_retry_written": Case(
        sends=[(0.0, 0, 0), (0.100, 0, 0), (0.200, 1, 1)],
        commits=[(0.020, True), (0.010, False), (0.010, False)],
    ),
    "late_commit_is_answered_failed_but_stored": Case(
        sends=[(0.0, 0, 0), (0.700, 0, 0), (0.800, 4, 1)],
        commits=[(0.800, False), (0.010, False), (0.010, False)],
        overrides={"server.store.call_timeout_s": 0.5},
    ),
    "full_queue_is_overloaded_with_the_drain_hint": Case(
        # a burst before any batch finished (hint: unknown rate), another after some did
        sends=[(0.001 * i, i % USERS, i) for i in range(8)]
        + [(0.120 + 0.001 * i, i % USERS, 8 + i) for i in range(8)],
        commits=[(0.050, False)] * 16,
        overrides={
            "server.store.write_queue_max": 3,
            "server.store.batch_max": 1,
            "server.store.max_in_flight_batches": 1,
        },
    ),
    "pool_timeout_is_store_busy": Case(
        sends=[(0.0, 0, 0), (0.001, 1, 1), (0.002, 2, 2), (0.003, 3, 3)],
        commits=[(0.200, False)] * 4,
        overrides={
            "server.pool.size": 1,
            "server.pool.acquire_timeout_ms": 50.0,
            "server.store.batch_max": 1,
            "server.store.max_in_flight_batches": 4,
        },
    ),
    "breaker_opens_after_failures_and_answers_unavailable": Case(
        sends=[(0.010 * i, i % USERS, i) for i in range(10)],
        commits=[(0.001, True)] * 10,
        overrides={
            "server.breaker.window_size": 4,
            "server.breaker.minimum_calls": 4,
            "server.breaker.failure_rate_pct": 50.0,
            "server.breaker.open_duration_s": 2.0,
        },
    ),
    "refused_connection_is_read_throttled_until_its_retry_after": Case(
        # user 0's frames at 1 ms and 300 ms wait for the refusal's retry_after (500 ms)
        sends=[(0.0, 0, 0), (0.0005, 0, 1), (0.001, 0, 2), (0.300, 0, 3), (0.310, 1, 4)],
        commits=[(0.001, False)] * 5,
        overrides={"server.rate_limit.rate_per_s": 2.0, "server.rate_limit.burst": 1},
    ),
    "limiter_refuses_a_burst_with_its_retry_after": Case(
        sends=[(0.0, 0, 0), (0.0001, 0, 1), (0.0002, 0, 2), (1.5, 0, 3)],
        commits=[(0.001, False)] * 4,
        overrides={"server.rate_limit.rate_per_s": 1.0, "server.rate_limit.burst": 2},
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_server_and_model_answer_every_send_alike(name: str) -> None:
    case = CASES[name]
    model_answers, model_order = run_model(case)
    server_answers, server_order = run_server(case)
    assert server_answers == model_answers
    assert server_order == model_order


# Scripts where no frame arrives while a commit runs: there a commit on the loop's thread
# (the server's choice under WAL + NORMAL) blocks nothing the model would have run
# meanwhile, so the server must answer exactly as the model does in that mode too.
LOOP_CASES = (
    "acks_and_a_replayed_duplicate",
    "breaker_opens_after_failures_and_answers_unavailable",
    "failed_commit_is_forgotten_and_the_retry_written",
)


@pytest.mark.parametrize("name", LOOP_CASES)
def test_server_committing_on_the_loop_answers_as_the_model(name: str) -> None:
    case = CASES[name]
    model_answers, model_order = run_model(case)
    server_answers, server_order = run_server(case, commit_on="loop")
    assert server_answers == model_answers
    assert server_order == model_order
