"""The SimPy model: same policy objects as the server, the pipeline's stages and outcomes,
Little's law, arrivals, costs. Every case simulates a few seconds at most."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from support_simcase import outcomes, scenario, script

import sim
from chatcap import wiring
from chatcap.pipeline import throttle_until
from chatcap.scenario import Scenario, load_scenario_data
from sim.calibration import Costs, GcPauses
from sim.model import user_key
from sim.workload import build_layout, codec_counts

# ---------------------------------------------------------------------------- same objects


def test_the_limiter_decides_as_the_policy_object_does_on_the_same_calls() -> None:
    s = scenario(
        sim__cpu=False,
        server__rate_limit__algorithm="token_bucket",
        server__rate_limit__rate_per_s=2.0,
        server__rate_limit__burst=3,
    )
    rows = sorted((0.1 * i + 0.013 * u, u, 0, "json") for i in range(40) for u in (0, 1))
    trace: list[tuple[Any, ...]] = []
    sim.run(s, replay=script(rows), trace=trace)

    # the same calls put to the policy object directly get the same answers
    direct = wiring.keyed_limiter(s.server.rate_limit)
    seen = [(key, now, d) for kind, _, key, now, d in trace if kind == "limiter"]
    assert [(k, t, direct.try_acquire(k, t)) for k, t, _ in seen] == seen
    assert len(seen) == len(rows) and any(not d.allowed for _, _, d in seen)
    # a refused user's next frame is read no earlier than the refusal's throttle allows
    held: dict[str, float] = {}
    for key, now, d in seen:
        assert now >= held.get(key, 0.0)
        if not d.allowed:
            held[key] = throttle_until(now, d.retry_after_s)
    asked_at = {(k, t) for k, t, _ in seen}
    assert any((user_key(u), t) not in asked_at for t, u, _, _ in rows)  # some were held


def test_the_breaker_hears_what_the_policy_object_would_and_answers_the_same() -> None:
    s = scenario(
        sim__cpu=False,
        sim__store_service="deterministic",
        sim__store_service_ms=1.0,
        server__store__batch_max=1,
        server__breaker__enabled=True,
        server__breaker__window_size=4,
        server__breaker__minimum_calls=4,
        server__breaker__open_duration_s=0.3,
        server__breaker__half_open_calls=2,
        server__faults__episodes=[{"start_s": 0.5, "duration_s": 0.7, "store_error_rate": 1.0}],
        workload__duration_s=3.0,
        workload__warmup_s=0.5,
    )
    times = [0.05 * i for i in range(1, 58)]
    trace: list[tuple[Any, ...]] = []
    sim.run(s, replay=script([(t, i % 20, 0, "json") for i, t in enumerate(times)]), trace=trace)

    breaker = wiring.make_breaker(s.server.breaker)
    assert breaker is not None
    expected: list[tuple[Any, ...]] = []
    for t in times:
        decision = breaker.try_acquire(t)
        expected.append(("breaker.try_acquire", 0, t, decision))
        if not decision.allowed:
            continue
        if 0.5 <= t < 1.2:  # the episode: the commit fails at once
            breaker.on_error(t, 0.0)
            expected.append(("breaker.on_error", 0, t, 0.0))
        else:
            end = t + 0.001
            breaker.on_success(end, end - t)
            expected.append(("breaker.on_success", 0, end, end - t))
    assert [e for e in trace if e[0].startswith("breaker")] == expected
    refused = [e for e in expected if e[0] == "breaker.try_acquire" and not e[3].allowed]
    assert refused and breaker.state.value == "closed"  # opened, then recovered


# ---------------------------------------------------------------------------- Little's law

LITTLE_CASES = {
    "light load": {},
    "queueing store": {
        "sim__cpu": False,
        "sim__store_service": "exponential",
        "sim__store_service_ms": 15.0,
        "sim__store_concurrency": 0,
        "server__store__batch_max": 1,
    },
    "timeouts and retries": {
        "sim__store_service": "deterministic",
        "sim__store_service_ms": 12.0,
        "server__pool__size": 1,
        "client__ack_timeout_ms": 30.0,
        "client__retry__max_attempts": 3,
        "client__retry__base_ms": 5.0,
    },
    "outage with breaker": {
        "server__breaker__enabled": True,
        "server__breaker__minimum_calls": 5,
        "server__breaker__window_size": 10,
        "server__breaker__open_duration_s": 0.5,
        "server__faults__episodes": [{"start_s": 3.0, "duration_s": 3.0, "store_error_rate": 1}],
        "client__retry__max_attempts": 4,
    },
}


@pytest.mark.parametrize("overrides", LITTLE_CASES.values(), ids=LITTLE_CASES.keys())
def test_littles_law_holds_between_the_time_series_and_the_requests(
    overrides: dict[str, Any],
) -> None:
    s = scenario(
        workload__duration_s=20.0, sim__timeseries_interval_s=0.25, **overrides
    )  # fmt: skip
    result = sim.run(s)
    w = s.workload
    ts = result.timeseries
    in_window = (ts["t_s"] > w.warmup_s) & (ts["t_s"] <= w.duration_s)
    mean_in_system = ts.loc[in_window, "in_system_mean"].mean()
    req = result.requests
    sent = req[(req["sent_s"] >= w.warmup_s) & (req["sent_s"] < w.duration_s)]
    arrival_per_s = len(sent) / (w.duration_s - w.warmup_s)
    mean_time_s = (sent["done_s"] - sent["sent_s"]).mean()
    assert mean_in_system == pytest.approx(arrival_per_s * mean_time_s, rel=0.02)


# ---------------------------------------------------------------------------- outcomes

SLOW_STORE = {
    "sim__store_service": "deterministic",
    "sim__store_service_ms": 50.0,
    "server__pool__size": 1,
    "server__store__batch_max": 1,
}
PROVOKED = {
    "rate_limited": {
        "server__rate_limit__algorithm": "token_bucket",
        "server__rate_limit__rate_per_s": 1.0,
        "server__rate_limit__burst": 1,
    },
    "overloaded": {**SLOW_STORE, "server__store__write_queue_max": 1},
    "store_busy": {**SLOW_STORE, "server__pool__acquire_timeout_ms": 0.0},
    "unavailable": {
        "server__breaker__enabled": True,
        "server__breaker__minimum_calls": 5,
        "server__breaker__window_size": 10,
        "server__faults__store_error_rate": 1.0,
    },
    "timeout": {
        "client__ack_timeout_ms": 1.0,
        "sim__store_service": "deterministic",
        "sim__store_service_ms": 5.0,
    },
    "error": {"server__faults__store_error_rate": 0.5},
}


@pytest.mark.parametrize("outcome", PROVOKED)
def test_each_outcome_appears_when_provoked(outcome: str) -> None:
    assert outcomes(sim.run(scenario()).requests) == {"acked": pytest.approx(600, rel=0.1)}
    found = outcomes(sim.run(scenario(**PROVOKED[outcome])).requests)
    assert found.get(outcome, 0) > 10, found


def test_a_pool_timeout_answers_store_busy_after_waiting_that_long() -> None:
    s = scenario(**SLOW_STORE, server__pool__acquire_timeout_ms=30.0, sim__cpu=False)
    req = sim.run(s).requests
    busy = req[req["outcome"] == "store_busy"]
    assert len(busy) > 10
    # a batch slot is free at once (pool + 1 in flight), so the wait is the timeout
    assert (busy["done_s"] - busy["sent_s"]).min() == pytest.approx(0.030)


def test_injected_latency_is_spent_holding_the_connection() -> None:
    episode = {"start_s": 2.0, "duration_s": 2.0, "store_latency_ms": 200.0}
    s = scenario(
        server__pool__size=1,  # a second batch in flight waits for the one connection
        server__pool__acquire_timeout_ms=100.0,
        server__store__batch_max=1,
        server__faults__episodes=[episode],
    )
    req = sim.run(s).requests
    busy = req[req["outcome"] == "store_busy"]
    assert len(busy) >= 5
    assert busy["sent_s"].min() >= 2.0 and busy["sent_s"].max() < 4.0


def test_a_commit_past_its_deadline_fails_but_is_stored_so_the_retry_is_a_duplicate() -> None:
    s = scenario(
        sim__cpu=False,
        sim__store_service="deterministic",
        sim__store_service_ms=4.0,
        sim__store_per_msg_ms=4.0,  # a batch of two takes 8 ms: past the 5 ms deadline
        server__pool__size=1,
        server__store__max_in_flight_batches=2,
        server__store__call_timeout_s=0.005,
        client__retry__max_attempts=2,
        client__retry__base_ms=50.0,
        client__retry__jitter="none",
    )
    # A commits alone, B waits at the pool, C and D queue and are cut as one batch.
    log = script([(1.0 + i * 1e-4, i, 0, "json") for i in range(4)])
    result = sim.run(s, replay=log)
    rows = result.requests[["user", "attempt", "outcome", "done_s"]].values.tolist()
    assert rows == [
        [0, 1, "acked", pytest.approx(1.004)],
        [1, 1, "acked", pytest.approx(1.008)],
        [2, 1, "error", pytest.approx(1.013)],  # the deadline, 5 ms into the commit
        [3, 1, "error", pytest.approx(1.013)],
        [2, 2, "acked", pytest.approx(1.067)],  # the connection was busy until 1.016
        [3, 2, "acked", pytest.approx(1.071)],
    ]
    assert sorted(set(result.deliveries["user"])) == [0, 1]  # duplicates are not delivered


# ---------------------------------------------------------------------------- dedup


def test_retries_share_the_write_in_flight_and_a_stored_message_is_acked_at_once() -> None:
    s = scenario(
        sim__cpu=False,
        sim__store_service="deterministic",
        sim__store_service_ms=50.0,
        server__store__batch_max=1,
        client__ack_timeout_ms=20.0,
        client__retry__max_attempts=3,
        client__retry__base_ms=5.0,
        client__retry__jitter="none",
    )
    result = sim.run(s, replay=script([(1.0, 0, 0, "json")]))
    rows = result.requests[["attempt", "sent_s", "done_s", "outcome"]].values.tolist()
    assert rows == [
        [1, 1.0, pytest.approx(1.020), "timeout"],  # its write commits at 1.050: wasted
        [2, pytest.approx(1.025), pytest.approx(1.045), "timeout"],  # joined that write
        [3, pytest.approx(1.055), pytest.approx(1.055), "acked"],  # stored: acked at once
    ]
    assert result.deliveries["count"].sum() == 4  # one fan-out: the room but the sender


def test_every_message_is_stored_and_delivered_at_most_once() -> None:
    s = scenario(**LITTLE_CASES["timeouts and retries"])
    result = sim.run(s)
    keys = ["user", "msg", "process", "codec"]
    assert not result.deliveries.duplicated(keys).any()
    acked = result.requests[result.requests["outcome"] == "acked"]
    assert (acked["attempt"] > 1).any()
    delivered = set(map(tuple, result.deliveries[["user", "msg"]].values.tolist()))
    assert set(map(tuple, acked[["user", "msg"]].values.tolist())) <= delivered


# ---------------------------------------------------------------------------- costs

EXACT_COSTS = Costs(
    decode_us={"json": 1.0, "protobuf": 9.0},
    encode_ack_us={"json": 2.0, "protobuf": 9.0},
    encode_deliver_us={"json": 3.0, "protobuf": 9.0},
    per_send_fixed_us=10.0,
    per_recipient_send_us=4.0,
)
"""Round per-operation costs whose sums a test can check by hand."""


def test_cpu_costs_add_up_per_stage_and_recipients_follow_one_send_apart() -> None:
    costs = EXACT_COSTS
    s = scenario(
        workload__users=4,
        workload__rooms=1,
        workload__room_size__size=4,
        workload__codec_mix={"json": 1},
        sim__store_service="deterministic",
        sim__store_service_ms=1.0,
    )
    result = sim.run(s, replay=script([(1.0, 0, 0, "json")]), costs=costs)
    committed = 1.0 + 11e-6 + 0.001  # decode and the fixed cost, then the commit
    delivery = result.deliveries.iloc[0]
    assert delivery["count"] == 3  # the room but the sending connection
    assert delivery["step_ms"] == pytest.approx(0.004)
    assert delivery["t_first_s"] == pytest.approx(committed + 7e-6)  # encode, one write
    (ack,) = result.requests["done_s"]
    assert ack == pytest.approx(committed + (3 + 3 * 4 + 2 + 4) * 1e-6)  # fan-out, then ack
    assert result.cpu_window_s == pytest.approx((11 + 15 + 6) * 1e-6)
    assert result.delivery_quantiles([0.0, 1.0]) == pytest.approx(
        [(committed + 7e-6 - 1.0) * 1000, (committed + 15e-6 - 1.0) * 1000]
    )


def one_room_of_four() -> Scenario:
    """Four json users in one room, a 1 ms deterministic store, one batch at a time."""
    return scenario(
        workload__users=4,
        workload__rooms=1,
        workload__room_size__size=4,
        workload__codec_mix={"json": 1},
        sim__store_service="deterministic",
        sim__store_service_ms=1.0,
        server__store__max_in_flight_batches=1,
    )


def test_the_per_batch_loop_cost_is_charged_once_per_batch_before_the_fan_out() -> None:
    s = one_room_of_four()
    plain = Costs(per_batch_loop_us=0.0)
    batched = Costs(per_batch_loop_us=50.0)
    lone = script([(1.0, 0, 0, "json")])
    a = sim.run(s, replay=lone, costs=plain)
    b = sim.run(s, replay=lone, costs=batched)
    assert b.cpu_window_s - a.cpu_window_s == pytest.approx(50e-6)
    assert b.requests["done_s"].iloc[0] - a.requests["done_s"].iloc[0] == pytest.approx(50e-6)
    # three sends at once: the first is cut alone, the other two wait and share a batch
    three = script([(1.0, 0, 0, "json"), (1.0, 1, 0, "json"), (1.0, 2, 0, "json")])
    a3 = sim.run(s, replay=three, costs=plain)
    b3 = sim.run(s, replay=three, costs=batched)
    assert b3.cpu_window_s - a3.cpu_window_s == pytest.approx(2 * 50e-6)
    # the store thread's share holds the interpreter lock: charged to the loop alike
    t = sim.run(s, replay=lone, costs=Costs(per_batch_loop_us=20.0, per_batch_thread_us=30.0))
    assert t.cpu_window_s - a.cpu_window_s == pytest.approx(50e-6)


def test_the_wait_per_batch_delays_the_ack_without_costing_cpu() -> None:
    s = one_room_of_four()
    lone = script([(1.0, 0, 0, "json")])
    a = sim.run(s, replay=lone, costs=Costs())
    b = sim.run(s, replay=lone, costs=Costs(per_batch_wait_ms=0.5))
    assert b.requests["done_s"].iloc[0] - a.requests["done_s"].iloc[0] == pytest.approx(0.5e-3)
    assert b.cpu_window_s == pytest.approx(a.cpu_window_s)
    # a measured shape, when there is one, replaces the mean
    c = sim.run(
        s, replay=lone, costs=Costs(per_batch_wait_ms=0.5, per_batch_wait_samples_ms=(2.0,))
    )
    assert c.requests["done_s"].iloc[0] - a.requests["done_s"].iloc[0] == pytest.approx(2e-3)


def test_a_codec_only_the_sender_speaks_is_not_encoded() -> None:
    s = scenario(
        workload__users=3,
        workload__rooms=1,
        workload__room_size__size=3,
        workload__codec_mix={"json": 1, "protobuf": 2},
    )
    layout = sim.run(s, duration_s=2.0).layout
    sender = int(np.flatnonzero(layout.user_codec == 0)[0])  # the only json user
    result = sim.run(s, replay=script([(1.0, sender, 0, "json")]), costs=Costs())
    assert result.deliveries[["count", "codec"]].values.tolist() == [[2, "protobuf"]]
    ingress, deliver, ack = 12 + 0.3, 1.2 + 2 * 5, 0.2 + 5  # no json Deliver encoded
    assert result.cpu_window_s == pytest.approx((ingress + deliver + ack) * 1e-6)


def test_without_cpu_the_loops_cost_nothing() -> None:
    result = sim.run(scenario(sim__cpu=False))
    (row, *_) = result.summary()
    assert row["server_cpu_us_per_msg"] == 0.0
    assert (result.timeseries["loop_util_p0"] == 0).all()
    assert (result.deliveries["step_ms"] == 0).all()


def test_members_on_another_process_are_served_by_its_own_loop() -> None:
    s = scenario(server__processes=2, workload__rooms=1, workload__room_size__size=20)
    result = sim.run(s, replay=script([(0.01 * i + 1.0, 0, 0, "json") for i in range(100)]))
    assert set(result.deliveries["process"]) == {0, 1}
    ts = result.timeseries
    assert ts["loop_util_p1"].sum() > 0  # p1 only writes deliveries: user 0 is on p0
    assert ts["loop_util_p0"].sum() > ts["loop_util_p1"].sum()


def test_a_cpu_bound_loop_saturates_and_queues() -> None:
    s = scenario(
        server__faults__cpu_burn_us_per_msg=2500.0, workload__send_rate_per_user_per_s=30.0
    )
    result = sim.run(s)
    util = result.timeseries["loop_util_p0"].iloc[4:]
    assert util.min() > 0.99
    assert result.summary()[0]["acked_per_s"] < 450  # at most 1 / 2.5 ms ≈ 400/s


# ---------------------------------------------------------------------------- arrivals


def test_constant_arrivals_send_each_user_at_a_fixed_interval() -> None:
    req = sim.run(scenario(workload__arrival="constant")).requests
    gaps = req.sort_values("sent_s").groupby("user")["sent_s"].diff().dropna()
    assert gaps.to_numpy() == pytest.approx(0.2)
    assert req.groupby("user").size().between(29, 30).all()


def test_poisson_arrivals_have_the_offered_rate() -> None:
    req = sim.run(scenario(workload__duration_s=30.0)).requests
    assert len(req) == pytest.approx(100 * 30, abs=5 * np.sqrt(3000))
    gaps = np.diff(np.sort(req["sent_s"].to_numpy()))
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.1)  # exponential: cv 1


def test_closed_loop_users_think_between_a_final_outcome_and_the_next_send() -> None:
    s = scenario(workload__arrival="closed", workload__think_time_s=0.3)
    req = sim.run(s).requests.sort_values(["user", "msg"])
    following = req.groupby("user")["sent_s"].shift(-1)
    pause = (following - req["done_s"]).dropna()
    assert pause.to_numpy() == pytest.approx(0.3)
    assert (req.groupby("user")["msg"].max() >= 15).all()


def test_replay_sends_exactly_the_logged_first_attempts() -> None:
    log = pd.DataFrame(
        {
            "intended_s": [2.5, 1.5, 3.0, 3.0],
            "user": [3, 1, 7, 3],
            "room": [0, 2, 3, 1],
            "codec": ["protobuf", "json", "json", "json"],
            "attempt": [1, 1, 1, 2],  # retries in the log are the model's to make
        }
    )
    req = sim.run(scenario(), replay=log).requests
    got = req[["intended_s", "user", "room", "codec"]].values.tolist()
    assert got == [[1.5, 1, 2, "json"], [2.5, 3, 0, "protobuf"], [3.0, 7, 3, "json"]]


def test_a_replay_that_does_not_fit_the_scenario_is_refused() -> None:
    with pytest.raises(ValueError, match=r"user 99 outside workload\.users"):
        sim.run(scenario(), replay=script([(1.0, 99, 0, "json")]))


# ---------------------------------------------------------------------------- layout


@pytest.mark.parametrize(
    "room_size",
    [
        {"distribution": "fixed", "size": 7},
        {"distribution": "uniform", "min": 2, "max": 30},
        {"distribution": "zipf", "min": 2, "max": 40, "zipf_s": 1.3},
    ],
)
def test_every_user_is_in_a_room_without_repeats(room_size: dict[str, Any]) -> None:
    w = scenario(workload__users=100, workload__rooms=30, workload__room_size=room_size).workload
    layout = build_layout(w, np.random.default_rng(5))
    assert all(len(set(m.tolist())) == len(m) for m in layout.room_members)
    assert all(rooms for rooms in layout.user_rooms)
    assert min(len(m) for m in layout.room_members) >= room_size.get("min", 1)
    again = build_layout(w, np.random.default_rng(5))
    pairs = zip(layout.room_members, again.room_members, strict=True)
    assert all(np.array_equal(a, b) for a, b in pairs)


def test_codecs_are_shared_out_exactly_by_the_mix() -> None:
    assert codec_counts({"json": 1, "protobuf": 1}, 201) == [101, 100]
    assert codec_counts({"json": 3, "protobuf": 1}, 200) == [150, 50]
    assert codec_counts({"protobuf": 1}, 5) == [0, 5]
    data = {"workload": {"users": 200, "codec_mix": {"json": 1, "protobuf": 1}}}
    w = load_scenario_data(data).workload
    assert np.bincount(build_layout(w, np.random.default_rng(1)).user_codec).tolist() == [100, 100]


def test_work_that_finds_its_loop_idle_pays_the_cold_path_and_back_to_back_work_does_not() -> None:
    """The cold-path penalty (``Costs.cold_penalty_us_by_gap_ms``): free up to a 2 ms idle
    gap (a commit's wake-up here is 1 ms), 500 µs after a second and more."""
    s = one_room_of_four()
    plain = Costs()
    cold = Costs(cold_penalty_us_by_gap_ms={0.0: 0.0, 2.0: 0.0, 1000.0: 500.0})
    lone = script([(2.0, 0, 0, "json")])  # the loop idle since the start: 2 s
    a, b = sim.run(s, replay=lone, costs=plain), sim.run(s, replay=lone, costs=cold)
    assert b.cpu_window_s - a.cpu_window_s == pytest.approx(500e-6)
    assert b.requests["done_s"].iloc[0] - a.requests["done_s"].iloc[0] == pytest.approx(500e-6)
    # a second send 1 µs behind: the loop is still busy with the first, so only the
    # first pays
    pair = script([(2.0, 0, 0, "json"), (2.0 + 1e-6, 1, 0, "json")])
    a2, b2 = sim.run(s, replay=pair, costs=plain), sim.run(s, replay=pair, costs=cold)
    assert b2.cpu_window_s - a2.cpu_window_s == pytest.approx(500e-6)
    # 1.5 s apart: each finds the loop idle for over a second and pays
    apart = script([(2.0, 0, 0, "json"), (3.5, 1, 0, "json")])
    a3, b3 = sim.run(s, replay=apart, costs=plain), sim.run(s, replay=apart, costs=cold)
    assert b3.cpu_window_s - a3.cpu_window_s == pytest.approx(1000e-6)
    done_a, done_b = a3.requests["done_s"].to_numpy(), b3.requests["done_s"].to_numpy()
    assert done_b - done_a == pytest.approx([500e-6, 500e-6])


def test_a_commits_result_that_wakes_an_idle_loop_pays_for_the_gap() -> None:
    """The store's answer after 1 ms of an idle loop pays penalty(1 ms) once per batch."""
    s = one_room_of_four()
    cold = Costs(cold_penalty_us_by_gap_ms={0.0: 0.0, 1.0: 10.0, 1000.0: 10.0})
    lone = script([(2.0, 0, 0, "json")])
    a, b = sim.run(s, replay=lone, costs=Costs()), sim.run(s, replay=lone, costs=cold)
    # 10 µs on reading the frame (idle 2 s: the flat end), 10 µs on the commit's result
    assert b.cpu_window_s - a.cpu_window_s == pytest.approx(20e-6)
    assert b.requests["done_s"].iloc[0] - a.requests["done_s"].iloc[0] == pytest.approx(20e-6)


def test_a_commit_on_the_loop_holds_the_loop_and_counts_as_its_cpu() -> None:
    """server.store.commit_on: on a thread the 1 ms commit is store time; on the loop it
    is loop CPU, and a frame that arrives meanwhile waits for it."""
    lone = script([(2.0, 0, 0, "json")])
    thread = sim.run(one_room_of_four(), replay=lone, costs=Costs())
    s_loop = one_room_of_four().with_overrides({"server.store.commit_on": "loop"})
    loop = sim.run(s_loop, replay=lone, costs=Costs())
    assert loop.cpu_window_s - thread.cpu_window_s == pytest.approx(1e-3)
    assert loop.requests["done_s"].iloc[0] == pytest.approx(thread.requests["done_s"].iloc[0])
    # auto: SQLite's NORMAL commits on the loop, FULL on a thread (the server's own rule)
    auto = one_room_of_four().with_overrides({"server.store.commit_on": "auto"})
    assert sim.run(auto, replay=lone, costs=Costs()).cpu_window_s == pytest.approx(
        loop.cpu_window_s
    )
    full = auto.with_overrides({"server.store.synchronous": "FULL"})
    assert sim.run(full, replay=lone, costs=Costs()).cpu_window_s == pytest.approx(
        thread.cpu_window_s
    )
    # a frame read during the commit starts after it
    pair = script([(2.0, 0, 0, "json"), (2.0005, 1, 0, "json")])
    t2 = sim.run(one_room_of_four(), replay=pair, costs=Costs())
    l2 = sim.run(s_loop, replay=pair, costs=Costs())
    second_t, second_l = t2.requests["done_s"].iloc[1], l2.requests["done_s"].iloc[1]
    assert second_l > second_t


def test_on_the_loop_the_sends_read_in_one_turn_share_a_batch() -> None:
    """Three sends at once: on a thread the first is cut alone (the writer wakes as it is
    admitted); on the loop the writer runs when the loop gets to it, after all three were
    read, and cuts one batch — one per-batch cost instead of two."""
    three = script([(2.0, 0, 0, "json"), (2.0, 1, 0, "json"), (2.0, 2, 0, "json")])
    costs, plain = Costs(per_batch_loop_us=50.0), Costs()
    for place, batches in (("thread", 2), ("loop", 1)):
        s = one_room_of_four().with_overrides({"server.store.commit_on": place})
        extra = sim.run(s, replay=three, costs=costs).cpu_window_s
        extra -= sim.run(s, replay=three, costs=plain).cpu_window_s
        assert extra == pytest.approx(batches * 50e-6), place


def test_the_model_reports_the_servers_stages_of_a_send() -> None:
    """One lone send, exact costs: ingress = the decode (without a split of the fixed
    cost, all of it comes before the arrival stamp), queue 0 (the writer cuts at once),
    commit = the 1 ms store, fan-out = one Deliver encode + three writes, ack = one
    encode + one write; a second send queued behind the first's batch waits for it."""
    costs = EXACT_COSTS
    s = one_room_of_four()
    result = sim.run(s, replay=script([(2.0, 0, 0, "json")]), costs=costs)
    means = result.stage_means_ms()
    assert list(means) == ["ingress", "queue", "commit", "fanout", "ack"]
    assert means["ingress"] == pytest.approx(0.001)
    assert means["queue"] == pytest.approx(0.0)
    assert means["commit"] == pytest.approx(1.0)
    assert means["fanout"] == pytest.approx(0.003 + 3 * 0.004)
    assert means["ack"] == pytest.approx(0.002 + 0.004)
    # nothing is left between the stages: their sum is the ack latency less the 10 µs
    # read before the arrival stamp
    assert sum(means.values()) + 0.010 == pytest.approx(result.requests["ack_ms"].iloc[0])
    # the second send arrives during the first's commit: one batch in flight, so it
    # waits in the queue until the first commit's result
    pair = sim.run(s, replay=script([(2.0, 0, 0, "json"), (2.0005, 1, 0, "json")]), costs=costs)
    queue = pair.stage_s[1] * 1000.0  # both messages' queue waits, ms
    assert queue == pytest.approx(1.011 - 0.5 - 0.011, abs=1e-6)
    # outside the measured window (warm-up): nothing counted
    early = sim.run(s, replay=script([(0.5, 0, 0, "json")]), costs=costs)
    assert all(math.isnan(v) for v in early.stage_means_ms().values())


def test_keepalive_pings_and_scrapes_are_charged_to_the_loop() -> None:
    """ping_us per connection per server.ping_interval_s, scrape_us per
    sim.scrape_interval_s, background_us_per_s over the ticks — no sends at all."""
    s = one_room_of_four().with_overrides(
        {"server.ping_interval_s": 0.5, "sim.scrape_interval_s": 1.0}
    )
    empty = script([])
    none = sim.run(s, replay=empty, costs=Costs())
    assert none.cpu_window_s == 0.0
    window_s = s.workload.duration_s - s.workload.warmup_s  # 5 s
    pinged = sim.run(s, replay=empty, costs=Costs(ping_us=100.0))
    # 4 connections, a ping each every 0.5 s: 8 pings a second
    assert pinged.cpu_window_s == pytest.approx(window_s * 8 * 100e-6, rel=0.05)
    scraped = sim.run(s, replay=empty, costs=Costs(scrape_us=2000.0))
    assert scraped.cpu_window_s == pytest.approx(window_s * 2000e-6, rel=0.21)
    base = sim.run(s, replay=empty, costs=Costs(background_us_per_s=1000.0))
    assert base.cpu_window_s == pytest.approx(window_s * 1000e-6, rel=0.05)
    off = s.with_overrides({"server.ping_interval_s": 0.0, "sim.scrape_interval_s": 0.0})
    assert (
        sim.run(off, replay=empty, costs=Costs(ping_us=100.0, scrape_us=2000.0)).cpu_window_s == 0
    )


def test_on_the_loop_the_batchs_own_cost_is_part_of_its_commit_stage() -> None:
    """The server spends a batch's own loop work (pump, breaker, pool, rows, futures)
    between cutting the batch and settling it: in the model too, on the loop."""
    lone = script([(2.0, 0, 0, "json")])
    for place, in_commit in (("loop", True), ("thread", False)):
        s = one_room_of_four().with_overrides({"server.store.commit_on": place})
        a = sim.run(s, replay=lone, costs=Costs()).stage_means_ms()
        b = sim.run(s, replay=lone, costs=Costs(per_batch_loop_us=50.0)).stage_means_ms()
        assert b["commit"] - a["commit"] == pytest.approx(0.05 if in_commit else 0.0), place


def test_the_fixed_cost_splits_around_the_servers_arrival_stamp() -> None:
    """ingress_stage_us and post_submit_us (measured from the server's own stages) place
    the arrival stamp inside the read: 3 µs before it, the ingress stage after it, and the
    rest of the read before the writer's turn — the queue stage of a loop-commit server
    when nothing else waits. The server-side ack latency starts at the stamp."""
    costs = Costs(per_send_fixed_us=10.0, ingress_stage_us=4.0, post_submit_us=3.0)
    s = one_room_of_four().with_overrides({"server.store.commit_on": "loop"})
    result = sim.run(s, replay=script([(2.0, 0, 0, "json")]), costs=costs)
    means = result.stage_means_ms()
    decode = costs.decode_us["json"]
    assert means["ingress"] == pytest.approx((4.0 + decode) / 1000)
    assert means["queue"] == pytest.approx(0.003)
    row = result.requests.iloc[0]
    assert row["ack_ms"] - row["server_ack_ms"] == pytest.approx(0.003)
    plain = sim.run(s, replay=script([(2.0, 0, 0, "json")]), costs=Costs(per_send_fixed_us=10.0))
    assert plain.requests["done_s"].iloc[0] == pytest.approx(row["done_s"])  # same CPU


def test_a_checkpoint_stall_is_added_to_the_commit_that_crosses_each_count_of_rows() -> None:
    """store_stall_every_rows = 3: the third message's commit (one row each, one at a
    time) pays the 2 ms stall; the first two do not."""
    s = one_room_of_four()
    sends = script([(2.0 + 0.1 * i, i % 4, 0, "json") for i in range(4)])
    plain = sim.run(s, replay=sends, costs=Costs())
    stalled = sim.run(s, replay=sends, costs=Costs(store_stall_every_rows=3, store_stall_ms=2.0))
    extra = (stalled.requests["done_s"] - plain.requests["done_s"]).to_numpy()
    assert extra == pytest.approx([0.0, 0.0, 0.002, 0.0])


def test_the_message_that_crosses_a_collection_count_pays_the_pause_and_the_others_do_not() -> None:
    """The garbage collector (``Costs.gc_*``): one generation-0 collection every second
    message, 400 µs each. Every message gives back its mean pause (200 µs) out of its
    costs, and each crossing one holds the loop 400 µs: on average the CPU is the same,
    in lumps. The loop starts at a random phase (``GcPauses.new_due``): the 1st and 3rd
    message cross, or the 2nd alone. The store commits on the loop: a batch waits for
    the pause."""
    s = one_room_of_four().with_overrides({"server.store.commit_on": "loop"})
    plain = Costs(per_send_fixed_us=500.0)  # a read longer than the mean pause
    gc = replace(plain, gc_pauses_per_msg=(0.5, 0.0, 0.0), gc_pause_us=(400.0, 0.0, 0.0))
    apart = script([(2.0, 0, 0, "json"), (3.0, 1, 0, "json"), (4.0, 2, 0, "json")])
    for seed in (1, 2, 3, 4):
        a = sim.run(s, replay=apart, costs=plain, seed=seed)
        b = sim.run(s, replay=apart, costs=gc, seed=seed)
        done_a = a.requests.sort_values("sent_s")["done_s"].to_numpy()
        done_b = b.requests.sort_values("sent_s")["done_s"].to_numpy()
        delta = done_b - done_a
        crossed = delta > 100e-6
        assert crossed.tolist() in ([True, False, True], [False, True, False])
        # a crossing one: +400 − 200 µs, its batch cut that much later; another: 200 µs
        # less loop time, but with no stage split (Costs defaults) its read ends at its
        # admission, which comes no sooner
        assert delta[crossed] == pytest.approx([200e-6] * int(crossed.sum()))
        assert delta[~crossed] == pytest.approx([0.0] * int((~crossed).sum()), abs=1e-12)
        cpu = b.cpu_window_s - a.cpu_window_s
        assert cpu == pytest.approx((400.0 * crossed.sum() - 3 * 200.0) * 1e-6)
    # a mean pause over the read's cost is taken out only up to that cost
    every = replace(gc, per_send_fixed_us=100.0, gc_pauses_per_msg=(1.0, 0.0, 0.0))
    c = sim.run(s, replay=apart, costs=every)
    d = sim.run(s, replay=apart, costs=replace(plain, per_send_fixed_us=100.0))
    read_us = 100.0 + plain.decode_us["json"]
    assert c.cpu_window_s - d.cpu_window_s == pytest.approx(3 * (400.0 - read_us) * 1e-6)


def test_collections_grow_with_the_room_by_the_per_recipient_figure() -> None:
    """1/12 collection per other member: in a room of four (three others) a quarter per
    message, so 5 of 20 messages cross a count, whatever the phase; with no per-member
    figure, none does. The CPU over the run is the same either way (the mean comes out
    of every message)."""
    s = one_room_of_four().with_overrides({"server.store.commit_on": "loop"})
    twenty = script([(2.0 + 0.1 * k, k % 4, 0, "json") for k in range(20)])
    plain = Costs(per_send_fixed_us=500.0)
    flat = replace(plain, gc_pauses_per_msg=(1e-9, 0.0, 0.0), gc_pause_us=(400.0, 0.0, 0.0))
    grows = replace(flat, gc_pauses_per_recipient=(1 / 12, 0.0, 0.0))
    base = sim.run(s, replay=twenty, costs=plain)
    done = base.requests.sort_values("sent_s")["done_s"].to_numpy()
    for costs, crossings in ((flat, 0), (grows, 5)):
        run = sim.run(s, replay=twenty, costs=costs)
        delta = run.requests.sort_values("sent_s")["done_s"].to_numpy() - done
        assert int((delta > 100e-6).sum()) == crossings
        assert delta[delta > 100e-6] == pytest.approx([300e-6] * crossings)  # 400 − 100
        # 20 × a quarter × 400 µs = 2 ms of pauses, 20 × 100 µs of mean taken out
        assert run.cpu_window_s == pytest.approx(base.cpu_window_s, abs=1e-9)


def test_once_the_idempotency_table_is_full_the_full_tables_rates_apply(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past ``SERVER_DEDUP_ENTRIES`` messages on a loop (4 here) the collector runs at the
    table-full rates (none here): pauses only among the first four messages."""
    import sim.model as model

    monkeypatch.setattr(model, "SERVER_DEDUP_ENTRIES", 4)
    s = one_room_of_four().with_overrides({"server.store.commit_on": "loop"})
    ten = script([(2.0 + 0.1 * k, k % 4, 0, "json") for k in range(10)])
    plain = Costs(per_send_fixed_us=500.0)
    gc = replace(
        plain,
        gc_pauses_per_msg=(0.5, 0.0, 0.0),
        gc_pauses_per_msg_full=(0.0, 0.0, 0.0),
        gc_pause_us=(400.0, 0.0, 0.0),
    )
    base = sim.run(s, replay=ten, costs=plain).requests.sort_values("sent_s")["done_s"]
    run = sim.run(s, replay=ten, costs=gc).requests.sort_values("sent_s")["done_s"]
    crossed = (run.to_numpy() - base.to_numpy()) > 100e-6
    assert crossed[:4].sum() == 2 and not crossed[4:].any()
    # without full-table figures the filling rates go on
    same = replace(gc, gc_pauses_per_msg_full=())
    run2 = sim.run(s, replay=ten, costs=same).requests.sort_values("sent_s")["done_s"]
    assert ((run2.to_numpy() - base.to_numpy()) > 100e-6).sum() == 5


def test_a_fan_out_to_members_idle_for_long_pays_the_cold_fan_out_and_one_right_after_less() -> (
    None
):
    """``Costs.fanout_us_by_gap_ms``: a frame costs 6 µs to a member woken a moment ago,
    50 µs after a second or more. A room of four: three frames. The first message finds
    the loop's members idle since the start (2 s): 3 × (50 − 5) µs more than the warm
    5 µs each; a second one 1 µs behind the first's fan-out pays 3 × (6 − 5)."""
    s = one_room_of_four()
    warm = Costs()
    cold = Costs(fanout_us_by_gap_ms={0.0: 6.0, 0.001: 6.0, 1000.0: 50.0})
    lone = script([(2.0, 0, 0, "json")])
    a, b = sim.run(s, replay=lone, costs=warm), sim.run(s, replay=lone, costs=cold)
    assert b.cpu_window_s - a.cpu_window_s == pytest.approx(3 * 45e-6)
    # two messages in one batch (the store holds the second): the second's fan-out comes
    # right after the first's (and its Ack: a few µs of gap, next to nothing on the curve)
    pair = script([(2.0, 0, 0, "json"), (2.0 + 1e-6, 1, 0, "json")])
    a2, b2 = sim.run(s, replay=pair, costs=warm), sim.run(s, replay=pair, costs=cold)
    assert b2.cpu_window_s - a2.cpu_window_s == pytest.approx(3 * 45e-6 + 3 * 1e-6, rel=1e-3)
    # the fan-out stage of the lone message holds the cold cost
    assert b.stage_s[3] - a.stage_s[3] == pytest.approx(3 * 45e-6)


def test_with_cpythons_thresholds_each_trigger_collects_the_generation_its_rule_names() -> None:
    """``gc_thresholds`` (700, 10, 10): one trigger per message at the generations' summed
    rate (0.5 + 0.25 + 0.25 = 1), and CPython's rule picks each one's generation. From
    zeroed counts: eleven young collections, then a middle one — the twelfth trigger —
    and after eleven middle ones the next trigger is a full one: 121 young, 11 middle and
    1 full in a cycle of 133, whatever the generations' own (measured) rates."""
    gc = GcPauses((0.5, 0.25, 0.25), (), (100.0, 1_000.0, 10_000.0), thresholds=(700, 10, 10))
    assert gc.cascades
    due = [0.0, 0.0, 0.0]
    pauses = [gc.charge(due, 0)[0] for _ in range(2 * 133)]
    names = {100e-6: 0, 1_000e-6: 1, 10_000e-6: 2}
    generation = [names[min(names, key=lambda p: abs(p - x))] for x in pauses]
    assert generation[:12] == [0] * 11 + [1]
    assert [i for i, g in enumerate(generation) if g == 2] == [132, 265]
    cycle = generation[:133]
    assert (cycle.count(0), cycle.count(1), cycle.count(2)) == (121, 11, 1)
    # the mean handed back stays the measured one (what the loop costs hold already)
    assert gc.charge([0.0, 0.0, 0.0], 0)[1] == pytest.approx(
        (0.5 * 100 + 0.25 * 1_000 + 0.25 * 10_000) * 1e-6
    )
    # without thresholds each generation counts on its own, at its own rate
    apart = GcPauses((0.5, 0.25, 0.25), (), (100.0, 1_000.0, 10_000.0))
    due = [0.0, 0.0, 0.0]
    total = sum(apart.charge(due, 0)[0] for _ in range(100))
    assert total == pytest.approx((50 * 100 + 25 * 1_000 + 25 * 10_000) * 1e-6)


def test_a_cascading_collector_starts_anywhere_in_its_cycle() -> None:
    """``GcPauses.start``: the trigger's phase as drawn, and whole counts of younger
    collections from 0 to threshold + 1 (the counts a cycle passes through) — both ends
    reached — so a run's first full collection may come at once or a cycle later."""
    gc = GcPauses((1.0, 0.0, 0.0), (), (1.0, 1.0, 1.0), thresholds=(700, 10, 10))
    assert gc.start(lambda: 0.0) == [0.0, 0.0, 0.0]
    assert gc.start(lambda: 0.999) == [0.999, 11.0, 11.0]
    assert gc.start(lambda: 0.5) == [0.5, 6.0, 6.0]
    assert gc.generation([0.0, 11.0, 11.0]) == 2 and gc.generation([0.0, 11.0, 3.0]) == 1
    plain = GcPauses((1.0, 0.0, 0.0), (), (1.0, 1.0, 1.0))
    assert plain.start(lambda: 0.25) == [0.25, 0.25, 0.25]
    with pytest.raises(ValueError, match="thresholds"):
        GcPauses((1.0, 0.0, 0.0), (), (1.0, 1.0, 1.0), thresholds=(700, 10))


def test_the_model_collects_the_oldest_generation_as_often_as_the_young_ones_dictate() -> None:
    """A full collection measured at a tenth of the rate CPython's rule gives it (a
    calibration that saw it once): with ``gc_thresholds`` the model holds the loop a
    full pause once per 133 collections of any generation, as the server does; without
    them, at the measured rate. 400 messages, one trigger each."""
    s = one_room_of_four().with_overrides({"server.store.commit_on": "loop"})
    sends = script([(2.0 + 0.01 * k, k % 4, 0, "json") for k in range(400)])
    base = replace(
        Costs(per_send_fixed_us=50.0),
        gc_pauses_per_msg=(0.9, 0.099, 0.001),
        gc_pause_us=(1.0, 1.0, 5_000.0),
    )
    plain = sim.run(s, replay=sends, costs=replace(base, gc_pause_us=(1.0, 1.0, 0.0)), seed=3)
    done = plain.requests.sort_values("sent_s")["done_s"].to_numpy()

    def full_pauses(costs: Costs) -> int:
        run = sim.run(s, replay=sends, costs=costs, seed=3)
        delta = run.requests.sort_values("sent_s")["done_s"].to_numpy() - done
        return int((delta > 1e-3).sum())

    assert full_pauses(base) == 0  # 400 × 0.001 < 1: the measured rate never crosses
    assert full_pauses(replace(base, gc_thresholds=(700, 10, 10))) in (3, 4)  # 400 / 133
