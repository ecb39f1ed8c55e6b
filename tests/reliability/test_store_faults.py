"""Store faults under load: the breaker trips within its window, fails fast, recovers.

Two episodes, each on its own server: every commit fails (``store_error_rate=1``), or
every commit takes 300 ms, three times the breaker's slow-call threshold
(``store_latency_ms=300``). Both go through the admin route while numbered senders
(``support_senders.py``) keep sends in flight; a refused send is sent again at once with the same
client_msg_id, as an impatient client would.

``batch_max = 1`` makes each send one store call, so the counts are exact. The window
holds only successes when the fault starts (the baseline is longer than the window), so
the breaker must open after exactly ``threshold = window × rate %`` bad calls; calls
already admitted (at most ``max_in_flight_batches - 1`` more) still end badly, and a
half-open trial that meets the fault adds ``half_open_calls``. While open, every send is
answered ``unavailable`` with ``0 < retry_after_ms ≤ open_duration_s`` — and fast:
compared with the ack latency measured at the start of the same test. After the fault
is cleared the breaker goes half-open → closed and every message gets acked; then the
history must hold every ack (``lost`` = 0), once, with no gaps.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest

from tests.reliability.conftest import Record
from tests.reliability.support_senders import Answer, Load, audit, last_seqs, median, read_history
from tests.server.support_chat import ServerProcess

WINDOW_CALLS, MINIMUM_CALLS, BAD_RATE_PCT = 20, 10, 50.0
IN_FLIGHT, HALF_OPEN_CALLS, OPEN_S, SLOW_CALL_S = 4, 3, 1.0, 0.1
LATENCY_MS = 300.0
OVERRIDES = {
    "server.rate_limit.algorithm": "none",
    "server.store.batch_max": 1,
    "server.store.max_in_flight_batches": IN_FLIGHT,
    "server.breaker.window_size": WINDOW_CALLS,
    "server.breaker.minimum_calls": MINIMUM_CALLS,
    "server.breaker.failure_rate_pct": BAD_RATE_PCT,
    "server.breaker.slow_call_duration_s": SLOW_CALL_S,
    "server.breaker.slow_call_rate_pct": BAD_RATE_PCT,
    "server.breaker.open_duration_s": OPEN_S,
    "server.breaker.half_open_calls": HALF_OPEN_CALLS,
}
EPISODES = {"errors": "store_error_rate=1", "latency": f"store_latency_ms={LATENCY_MS:g}"}
BASELINE_ACKS = (2 * WINDOW_CALLS, 10 * WINDOW_CALLS)  # drawn per case
FAST_FAILS = 50  # unavailable answers sampled while open
FAST_RATIO = 3.0  # their median latency vs the baseline acks' median, at most


def transitions(server: ServerProcess) -> dict[tuple[str, str], float]:
    """``chatcap_breaker_transitions_total`` by (from, to)."""
    _, _, body = server.get("/metrics")
    out = {}
    for line in body.decode().splitlines():
        if line.startswith("chatcap_breaker_transitions_total{"):
            labels, value = line.rsplit(" ", 1)
            pairs = dict(p.split("=", 1) for p in labels.split("{", 1)[1].rstrip("}").split(","))
            out[pairs["from"].strip('"'), pairs["to"].strip('"')] = float(value)
    return out


def bad_calls(kind: str, answers: list[Answer]) -> int:
    """Store calls of the episode that went badly: failed, or acked but slow."""
    if kind == "errors":
        return sum(a.outcome == "internal" for a in answers)
    return sum(a.outcome == "ack" and a.latency_s >= LATENCY_MS / 1000 for a in answers)


@pytest.mark.parametrize("kind", sorted(EPISODES))
def test_store_faults_trip_the_breaker_fail_fast_recover_and_lose_nothing(
    start_server: Callable[..., ServerProcess], rng: random.Random, record: Record, kind: str
) -> None:
    server = start_server(OVERRIDES)
    load = Load.build(rng, f"faults-{kind}", rooms=2, senders_per_room=2, window=IN_FLIGHT)
    tally = load.tally
    load.start(server)
    assert load.wait_acks(rng.randint(*BASELINE_ACKS))
    baseline = tally.since(0)
    assert {a.outcome for a in baseline} == {"ack"}
    ack_s = median(a.latency_s for a in baseline[WINDOW_CALLS:])  # past the warm-up

    fault_from = len(tally.since(0))
    server.admin(EPISODES[kind])
    first: list[float] = []  # when the first `unavailable` was read: the breaker is open

    def fast_fails() -> list[Answer]:
        episode = tally.answers[fault_from:]
        if not first:
            first.extend(a.at_s for a in episode if a.outcome == "unavailable")
            del first[1:]
        # sends written after the breaker was seen open (not queued behind slow calls)
        return [
            a
            for a in episode
            if a.outcome == "unavailable" and first and a.at_s - a.latency_s >= first[0]
        ]

    assert tally.wait(lambda: len(fast_fails()) >= FAST_FAILS, 20), "the breaker never opened"
    server.admin("clear=1")
    load.finish(lambda: last_seqs({r: read_history(server, r) for r in load.rooms}))
    assert load.anomalies == []

    episode = tally.since(fault_from)
    moves = transitions(server)
    reopened = moves[("half_open", "open")]
    threshold = math.ceil(WINDOW_CALLS * BAD_RATE_PCT / 100)
    bad = bad_calls(kind, episode)
    assert threshold <= bad <= threshold + IN_FLIGHT - 1 + HALF_OPEN_CALLS * reopened, (
        f"{bad} bad calls for a window of {WINDOW_CALLS} at {BAD_RATE_PCT}%"
    )
    unavailable = [a for a in episode if a.outcome == "unavailable"]
    assert {a.outcome for a in episode} <= {"ack", "unavailable", "internal"}
    assert all(0 < a.retry_after_ms <= OPEN_S * 1000 for a in unavailable)
    fast_s = median(a.latency_s for a in fast_fails())
    assert fast_s <= FAST_RATIO * ack_s, f"open: {fast_s * 1e3:.2f} ms vs ack {ack_s * 1e3:.2f} ms"
    if kind == "latency":
        assert fast_s * 3 < LATENCY_MS / 1000
    assert moves[("closed", "open")] == 1 and moves[("half_open", "closed")] >= 1, moves
    assert server.metric("chatcap_breaker_state") == 0  # closed again

    history = {room: read_history(server, room) for room in load.rooms}
    result = audit(load, history, ordered=False)  # refused sends were retried out of turn
    record("acked", result.acked)
    record("lost", len(result.lost))
    record("duplicated", len(result.duplicated))
    record(f"{kind}_bad_calls", bad)
    record(f"{kind}_unavailable", len(unavailable))
    record(f"{kind}_fast_fail_vs_ack", round(fast_s / ack_s, 3))
    assert result.lost == []
    assert (result.duplicated, result.gaps, result.foreign, result.unacked) == ([], [], [], [])
    assert result.streams == [], "a receiver's stream differs from history"
    assert result.stored == sum(s.sent for s in load.senders)
