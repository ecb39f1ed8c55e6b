"""``bench.micro.loadclient --case rooms``: what it refuses before it connects (a real
server runs it in the quick calibration's collector probe, tests/bench/jobs)."""

from __future__ import annotations

import asyncio

import pytest

from bench.micro.loadclient import Plan, build_parser, run


def plan(**over: object) -> Plan:
    fields: dict[str, object] = {
        "case": "rooms", "impl": "ours", "codec": "json", "url": "ws://127.0.0.1:9/api/v1/ws",
        "server_pid": 1, "messages": 10, "window": 2, "members": 5, "connections": 20,
        "timeout_s": 5.0, "tag": "t",
    }  # fmt: skip
    fields.update(over)
    return Plan(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("over", "says"),
    [
        ({"impl": "bare"}, "needs the chat server (--impl ours)"),
        ({"connections": 21}, "--connections 21 must be a multiple of --members 5"),
        ({"members": 1, "connections": 4}, "--connections 4 must be a multiple of --members 1"),
    ],
)
def test_a_rooms_run_it_cannot_make_says_why_and_fails(over: dict[str, object], says: str) -> None:
    out = asyncio.run(run(plan(**over)))
    assert not out.ok and says in out.note and out.messages == 0


def test_the_command_line_offers_the_rooms_case() -> None:
    args = build_parser().parse_args(
        ["--case", "rooms", "--impl", "ours", "--url", "ws://x", "--server-pid", "1",
         "--connections", "40", "--members", "10"]
    )  # fmt: skip
    assert (args.case, args.connections, args.members) == ("rooms", 40, 10)
