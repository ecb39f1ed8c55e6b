"""A Send's stage times, ``chatcap_send_stage_seconds{stage}``: the labelled LoopHistogram
underneath, each stage observed where it ends (session and writer), and a real server
whose one Send moves every stage once while a refused one moves none."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from bench._support.metrics_scrape import ACK_LATENCY, SEND_STAGE, Scrape, parse
from chatcap.policy.pool import PoolRules
from chatcap.protocol import Ack, Deliver, Error, Send
from chatcap.scenario import FaultsConfig, StoreConfig
from server.faults import FaultInjector
from server.metrics import LATENCY_BUCKETS_S, SEND_STAGES, STAGE_BUCKETS_S, LoopHistogram, Metrics
from server.session import Session
from server.store import StoreConnection, StoredMessage, StoreError
from server.storepool import StorePool
from server.writer import StoreFailed, Writer
from tests.server.support_chat import ServerProcess
from tests.server.support_writepath import FakeClock, run, send
from tests.server.test_session import HeldWriter, Wire, member, send_path, stored

# ---------------------------------------------------------------------------- LoopHistogram


def exposition(histogram: LoopHistogram) -> list[str]:
    registry = CollectorRegistry()
    registry.register(histogram)
    return generate_latest(registry).decode().splitlines()


def test_labelled_children_count_apart_and_expose_one_series_per_label_value() -> None:
    family = LoopHistogram("x_seconds", "doc", (0.001, 0.01), labelnames=("stage",))
    fast, slow = family.labels("fast"), family.labels("slow")
    assert family.labels("fast") is fast  # bound once: the same child every time
    fast.observe(0.0005)
    fast.observe(0.001)  # on a bound: counts in that bucket (le is inclusive)
    slow.observe(0.02)
    assert (fast.count, fast.sum) == (2, pytest.approx(0.0015))
    assert (slow.count, slow.sum) == (1, pytest.approx(0.02))
    lines = exposition(family)
    for line in [
        'x_seconds_bucket{le="0.001",stage="fast"} 2.0',
        'x_seconds_bucket{le="0.01",stage="fast"} 2.0',
        'x_seconds_bucket{le="+Inf",stage="fast"} 2.0',
        'x_seconds_count{stage="fast"} 2.0',
        'x_seconds_bucket{le="0.01",stage="slow"} 0.0',
        'x_seconds_bucket{le="+Inf",stage="slow"} 1.0',
        'x_seconds_sum{stage="slow"} 0.02',
    ]:
        assert line in lines, line
    assert not any(line.startswith("x_seconds_count ") for line in lines)  # no unlabelled one


def test_observe_many_is_exactly_n_observations_of_the_value() -> None:
    values = (0.0, 3e-6, 50e-6, 0.0007, 0.0031, 1.5, 20.0)
    once, many = (LoopHistogram("y_seconds", "doc", STAGE_BUCKETS_S) for _ in range(2))
    labelled = LoopHistogram("y_seconds", "doc", STAGE_BUCKETS_S, labelnames=("stage",))
    child = labelled.labels("commit")
    counts = (1, 2, 3, 4, 5, 6, 7)
    for value, n in zip(values, counts, strict=True):
        for _ in range(n):
            once.observe(value)
        many.observe_many(value, n)
        child.observe_many(value, n)
    assert exposition(many) == exposition(once)
    assert many.count == child.count == 28
    expected_sum = sum(v * n for v, n in zip(values, counts, strict=True))
    assert many.sum == child.sum == pytest.approx(expected_sum)
    many.observe_many(0.5, 0)  # a batch of none changes nothing
    assert exposition(many) == exposition(once)


def test_a_labelled_family_takes_observations_only_on_its_children() -> None:
    family = LoopHistogram("z_seconds", "doc", LATENCY_BUCKETS_S, labelnames=("stage",))
    with pytest.raises(ValueError, match=r"z_seconds has labels \('stage',\)"):
        family.observe(0.001)
    with pytest.raises(ValueError, match="observe on a child"):
        family.observe_many(0.001, 3)
    with pytest.raises(ValueError, match=r"takes 1 label value\(s\).*got 2"):
        family.labels("a", "b")
    unlabelled = LoopHistogram("w_seconds", "doc", LATENCY_BUCKETS_S)
    with pytest.raises(ValueError, match="takes 0 label value"):
        unlabelled.labels("a")


def test_the_server_registry_shows_every_stage_at_zero_from_the_start() -> None:
    m = Metrics()
    assert "chatcap_send_stage_seconds" in set(m.names())
    for stage in SEND_STAGES:
        assert m.registry.get_sample_value(f"{SEND_STAGE}_count", {"stage": stage}) == 0.0
        assert getattr(m.send_stages, stage) is m.send_stage.labels(stage)


# ---------------------------------------------------------------------------- the session's stages


@dataclass
class TimedWire(Wire):
    """A hub's writes that take known time: each frame to ``user`` moves the clock on."""

    clock: FakeClock = field(default_factory=FakeClock)
    write_s: dict[str, float] = field(default_factory=dict)

    def broadcast(self, conns: Iterable[Any], payload: bytes | str, text: bool = False) -> None:
        conns = list(conns)
        super().broadcast(conns, payload, text)
        for conn in conns:
            self.clock.advance(self.write_s.get(self.users[id(conn)], 0.0))


def stage(metrics: Metrics, name: str) -> tuple[float, float]:
    """``(count, sum)`` of one stage's series."""
    registry = metrics.registry
    count = registry.get_sample_value(f"{SEND_STAGE}_count", {"stage": name})
    total = registry.get_sample_value(f"{SEND_STAGE}_sum", {"stage": name})
    assert count is not None and total is not None
    return count, total


def test_ingress_fanout_and_ack_are_the_spans_the_session_times() -> None:
    async def main() -> Metrics:
        clock = FakeClock(100.0)
        wire = TimedWire(clock=clock, write_s={"bob": 0.003, "alice": 0.002})
        writer = HeldWriter()
        path = send_path(wire, writer, clock)
        alice = member(path, wire, "alice", "r")
        member(path, wire, "bob", "r")
        # the frame was read 5 ms ago: decoding and the checks took that long
        Session(path, alice).handle(Send(room="r", client_msg_id="c1", body="hi"), clock() - 0.005)
        sent, fut = writer.pending[0]
        clock.advance(0.010)  # the write path (timed by the writer, not here)
        fut.set_result(stored(sent, 1))
        await asyncio.sleep(0)
        assert [type(frame) for _, frame in wire.frames] == [Deliver, Ack]
        return path.metrics

    metrics = run(main())
    assert stage(metrics, "ingress") == (1, pytest.approx(0.005))
    assert stage(metrics, "fanout") == (1, pytest.approx(0.003))  # bob's Deliver written
    assert stage(metrics, "ack") == (1, pytest.approx(0.002))  # alice's Ack written
    # the writer's stages are the writer's: a stand-in writer times none
    assert stage(metrics, "queue") == stage(metrics, "commit") == (0, 0.0)
    ack_sum = metrics.registry.get_sample_value(f"{ACK_LATENCY}_sum")
    assert ack_sum == pytest.approx(0.005 + 0.010 + 0.003 + 0.002)


def test_refused_sends_retries_and_store_duplicates_move_only_what_they_reach() -> None:
    async def main() -> Metrics:
        wire, writer, clock = Wire(), HeldWriter(), FakeClock()
        path = send_path(wire, writer, clock)
        alice = member(path, wire, "alice", "r")
        member(path, wire, "bob", "r")
        session = Session(path, alice)
        session.handle(Send(room="elsewhere", client_msg_id="c0", body="hi"), clock())
        session.handle(Send(room="r", client_msg_id="c0", body="x" * 70_000), clock())
        assert [frame.code for _, frame in wire.frames] == ["not_member", "too_large"]
        assert all(stage(path.metrics, name) == (0, 0.0) for name in SEND_STAGES)
        session.handle(Send(room="r", client_msg_id="c1", body="hi"), clock())
        session.handle(Send(room="r", client_msg_id="c1", body="hi"), clock())  # a retry
        assert len(writer.pending) == 1
        sent, fut = writer.pending[0]
        fut.set_result(stored(sent, 4, duplicate=True))  # the store knew it already
        await asyncio.sleep(0)
        assert [type(frame) for _, frame in wire.frames[2:]] == [Ack, Ack]
        return path.metrics

    metrics = run(main())
    assert stage(metrics, "ingress")[0] == 1  # the retry never reached the write queue
    assert stage(metrics, "fanout")[0] == 0  # a store duplicate is not fanned out again
    assert stage(metrics, "ack")[0] == 2  # every Ack the ack latency counts
    assert metrics.registry.get_sample_value(f"{ACK_LATENCY}_count") == 2


# ---------------------------------------------------------------------------- the writer's stages


class TimedConnection(StoreConnection):
    """A store connection whose commit takes ``commit_s`` on the test's clock (or fails)."""

    def __init__(self, path: Path, clock: FakeClock, commit_s: float, fail: bool) -> None:
        super().__init__(path)
        self.clock, self.commit_s, self.fail = clock, commit_s, fail

    def commit_batch(self, batch: Any, ts_us: int) -> list[StoredMessage]:
        self.clock.advance(self.commit_s)
        if self.fail:
            raise StoreError("disk on fire")
        return super().commit_batch(batch, ts_us)


async def commit_three(
    tmp_path: Path, commit_on: str, *, fail: bool = False
) -> tuple[Metrics, list[StoredMessage | Exception]]:
    """Three sends queued at one instant, the pump 4 ms later, a 2 ms commit."""
    clock = FakeClock(1000.0)
    pool = StorePool(
        PoolRules(size=1),
        lambda: TimedConnection(tmp_path / "s.db", clock, 0.002, fail),
        clock=clock,
    )
    writer = Writer(
        StoreConfig(batch_max=64),
        None,
        pool,
        FaultInjector(FaultsConfig(), started_at=0.0, seed=1),
        clock=clock,
        commit_on="loop" if commit_on == "loop" else "thread",
    )
    metrics = Metrics()
    writer.time_stages(metrics.send_stages.queue, metrics.send_stages.commit)
    await pool.start()
    try:
        futures = [writer.submit(send("r", f"u{i}", "c")) for i in range(3)]
        clock.advance(0.004)  # queued: the writer has not started yet
        await writer.start()
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
    finally:
        await writer.stop()
        await pool.close()
    return metrics, outcomes


@pytest.mark.parametrize("commit_on", ["loop", "thread"])
def test_queue_and_commit_are_timed_per_message_of_a_committed_batch(
    tmp_path: Path, commit_on: str
) -> None:
    metrics, outcomes = run(commit_three(tmp_path, commit_on))
    assert all(isinstance(row, StoredMessage) for row in outcomes)
    assert stage(metrics, "queue") == (3, pytest.approx(3 * 0.004))
    assert stage(metrics, "commit") == (3, pytest.approx(3 * 0.002))


@pytest.mark.parametrize("commit_on", ["loop", "thread"])
def test_a_failed_batch_times_no_stage(tmp_path: Path, commit_on: str) -> None:
    metrics, outcomes = run(commit_three(tmp_path, commit_on, fail=True))
    assert all(isinstance(exc, StoreFailed) for exc in outcomes)
    assert stage(metrics, "queue") == stage(metrics, "commit") == (0, 0.0)


# ---------------------------------------------------------------------------- a real server


def scrape(server: ServerProcess) -> Scrape:
    status, _, body = server.get("/metrics")
    assert status == 200
    return parse(body.decode())


def stage_counts(delta: Scrape) -> dict[str, float]:
    return {name: delta.total(f"{SEND_STAGE}_count", stage=name) for name in SEND_STAGES}


def test_one_send_through_a_real_server_moves_every_stage_once(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server()
    with server.client("ann") as ann, server.client("bob", "protobuf") as bob:
        ann.join("lobby")
        bob.join("lobby")
        before = scrape(server)
        ann.send_text("lobby", "hello")
        assert isinstance(ann.recv_kind(Ack), Ack)
        assert isinstance(bob.recv_kind(Deliver), Deliver)
        sent = scrape(server).minus(before)
        assert stage_counts(sent) == dict.fromkeys(SEND_STAGES, 1.0)
        sums = {name: sent.total(f"{SEND_STAGE}_sum", stage=name) for name in SEND_STAGES}
        assert all(value >= 0.0 for value in sums.values()), sums
        assert sum(sums.values()) <= sent.total(f"{ACK_LATENCY}_sum")
        assert sent.total(f"{ACK_LATENCY}_count") == 1
        assert not math.isnan(sent.mean(SEND_STAGE, stage="commit"))

        before = scrape(server)
        ann.send_text("elsewhere", "not joined")
        err = ann.recv_kind(Error)
        assert err.code == "not_member"
        refused = scrape(server).minus(before)
        assert stage_counts(refused) == dict.fromkeys(SEND_STAGES, 0.0)
        assert refused.total(f"{ACK_LATENCY}_count") == 0
