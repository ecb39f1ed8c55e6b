"""Read throttling: after a ``rate_limited`` answer the session processes none of that
connection's frames until the ``retry_after`` it sent (``server.session.THROTTLE_MAX_S``
at most), and the wait never holds up a SIGTERM drain.

Frames are pipelined (sent before any answer), so the limiter's own verdicts show when
the server processed them: a Send the exact token bucket admits after a refusal was
processed no earlier than the refusal's retry time. No test sleeps; every wait is for an
answer, with a deadline.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from websockets.exceptions import ConnectionClosed

from chatcap.protocol import Ack, Error, Join, Joined
from server.session import THROTTLE_MAX_S
from tests.server.conftest import scaled
from tests.server.support_chat import ChatClient, ServerProcess

Start = Callable[..., ServerProcess]
# 2 tokens, one more every 0.5 s: a refusal's retry_after is about 500 ms, and the
# pipelined frames below reach the server within a few ms of each other
RATE_PER_S, BURST = 2.0, 2
LIMITS = {"server.rate_limit.rate_per_s": RATE_PER_S, "server.rate_limit.burst": BURST}
GOING_AWAY = 1001


def answers(client: ChatClient, want: int, timeout_s: float = 10.0) -> dict[str, Any]:
    """The next ``want`` answers, keyed by client_msg_id ("joined:<room>" for a Joined),
    each with the monotonic time it was read."""
    got: dict[str, Any] = {}
    while len(got) < want:
        msg = client.recv(timeout_s)
        at = time.monotonic()
        if isinstance(msg, Joined):
            key = f"joined:{msg.room}"
        else:
            assert isinstance(msg, (Ack, Error)), msg
            key = msg.client_msg_id
        assert key not in got, f"two answers for {key}"
        got[key] = (msg, at)
    return got


def test_a_refused_client_s_next_frames_wait_for_its_retry_after(start_server: Start) -> None:
    server = start_server(LIMITS)
    with server.client("ann") as ann:
        ann.join("r")
        sent_at = time.monotonic()
        for cid in ("c1", "c2", "c3"):  # c3 is over the burst: refused
            ann.send_text("r", cid, client_msg_id=cid)
        ann.send(Join(room="side"))  # not a Send: it waits all the same
        ann.send_text("r", "c4", client_msg_id="c4")
        ann.send_text("r", "c5", client_msg_id="c5")
        got = answers(ann, 6)

    kinds = {key: (type(msg).__name__, getattr(msg, "code", "")) for key, (msg, _) in got.items()}
    # Without throttling c4 and c5 are refused like c3: they come a few µs after it.
    # With it, the session waits out c3's retry_after, so the bucket has a token for c4;
    # c5 comes right after c4 and is refused.
    assert kinds == {
        "c1": ("Ack", ""),
        "c2": ("Ack", ""),
        "c3": ("Error", "rate_limited"),
        "joined:side": ("Joined", ""),
        "c4": ("Ack", ""),
        "c5": ("Error", "rate_limited"),
    }, kinds
    retry_s = got["c3"][0].retry_after_ms / 1000
    assert 0 < retry_s <= 1 / RATE_PER_S
    # c3 was refused after it was sent; the Join and c4 were processed its wait after that
    # (retry_after_ms is that wait rounded up to the ms)
    for key in ("joined:side", "c4"):
        assert got[key][1] - sent_at >= retry_s - 0.001, (key, got[key][1] - sent_at, retry_s)
    assert 0 < got["c5"][0].retry_after_ms <= 1000 / RATE_PER_S
    assert server.metric("chatcap_rate_limited_total") == 2
    assert server.metric("chatcap_frames_received_total") == 7  # every frame, once


class Flood:
    """Sends ``count`` Sends as fast as the socket takes them, on a thread of its own,
    while the test reads the answers."""

    def __init__(self, client: ChatClient, room: str, count: int, body_bytes: int) -> None:
        self.client, self.room, self.count = client, room, count
        self.body = "f" * body_bytes
        self.sent = 0
        self.thread = threading.Thread(target=self._run, name="flood", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for i in range(self.count):
                self.client.send_text(self.room, self.body, client_msg_id=f"f-{i}")
                self.sent += 1
        except ConnectionClosed:
            pass  # the server closed it (the drain): the rest is not sent

    def join(self) -> None:
        self.thread.join(timeout=scaled(30))
        assert not self.thread.is_alive(), "the flood thread did not stop"


def test_sigterm_closes_a_throttled_connection_with_1001_without_waiting_it_out(
    start_server: Start,
) -> None:
    """A throttled session must not hold the drain: with frames still queued behind the
    throttle (far more than one socket read, so the server has stopped reading it), the
    client still gets its 1001 and the server stops well inside its drain deadline."""
    drain_timeout_s = 30.0
    # one token every 2 s: each refusal holds the session for the whole THROTTLE_MAX_S
    slow = {**LIMITS, "server.rate_limit.rate_per_s": 0.5}
    server = start_server({**slow, "server.drain_timeout_s": drain_timeout_s})
    count, body_bytes = 1_000, 1_000  # ~1 MB: several socket reads, ~1000 s of throttling
    with server.client("flooder") as flooder:
        flooder.join("flood")
        flood = Flood(flooder, "flood", count, body_bytes)
        got = answers(flooder, BURST + 1)  # the burst's acks and the first refusal
        limited = [m for m, _ in got.values() if isinstance(m, Error)]
        assert [m.code for m in limited] == ["rate_limited"], got
        assert limited[0].retry_after_ms > 1000 * THROTTLE_MAX_S  # the answer is not capped
        assert sum(isinstance(m, Ack) for m, _ in got.values()) == BURST
        processed = server.metric("chatcap_frames_received_total")
        assert processed < count / 10, f"{processed} frames processed: not throttled"
        sent_at = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        code = None
        try:
            while True:
                flooder.recv(timeout_s=10)
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd is not None else None
        closed_after_s = time.monotonic() - sent_at
        flood.join()
    status = server.wait_exit(15)
    log = server.log()
    assert code == GOING_AWAY, code
    assert status == 0
    assert "event=server.drain_timeout" not in log  # closed, not aborted at the deadline
    stopped = re.search(r"event=server\.stopped seconds=([0-9.]+)", log)
    assert stopped is not None, log[-2000:]
    drain_s = float(stopped.group(1))
    # the held session lets go at once: not at the end of its hold, let alone the deadline
    assert drain_s < scaled(THROTTLE_MAX_S / 2), f"drain took {drain_s} s"
    assert closed_after_s < scaled(drain_timeout_s / 3), f"1001 after {closed_after_s:.1f} s"
