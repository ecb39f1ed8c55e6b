"""The scrape after a run keeps trying while an overloaded server works off its backlog."""

from __future__ import annotations

from typing import Any

from bench.run.measure import fetch_after


class FakeServer:
    """Refuses ``failures`` scrapes (a timeout each, ``cost_s`` of the fake clock), then
    answers."""

    def __init__(self, failures: int, cost_s: float = 5.0) -> None:
        self.failures, self.cost_s, self.now, self.tries = failures, cost_s, 0.0, 0

    def clock(self) -> float:
        return self.now

    def pause(self, seconds: float) -> None:
        self.now += seconds

    def fetch(self, base_url: str, *, timeout_s: float, context: Any) -> str:
        self.tries += 1
        if self.tries <= self.failures:
            self.now += min(self.cost_s, timeout_s)
            raise TimeoutError("timed out")
        return "# metrics\n"


def ask(server: FakeServer, patience_s: float) -> str | None:
    return fetch_after(
        "http://127.0.0.1:1", None, patience_s,
        fetch=server.fetch, clock=server.clock, pause=server.pause,
    )  # fmt: skip


def test_a_server_that_answers_after_some_timeouts_is_waited_for() -> None:
    server = FakeServer(failures=3)
    assert ask(server, 30.0) == "# metrics\n"
    assert server.tries == 4 and server.now < 30.0


def test_a_server_that_never_answers_gives_none_once_patience_is_spent() -> None:
    server = FakeServer(failures=1000)
    assert ask(server, 12.0) is None
    assert 12.0 <= server.now < 12.0 + 5.5  # the last try is cut to what was left
    assert server.tries == 3  # 5 s + 5 s + the 2 s left (pauses between them)
