"""Where commits run: ``server.store.commit_on`` and the rule behind ``auto``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chatcap.policy.commit import COMMIT_ON, commit_place


@pytest.mark.parametrize(
    ("synchronous", "processes", "place"),
    [
        ("NORMAL", 1, "loop"),  # no fsync per commit: cheaper than two thread hops
        ("normal", 1, "loop"),
        ("OFF", 1, "loop"),
        ("FULL", 1, "thread"),  # an fsync per commit would stall the loop
        ("EXTRA", 1, "thread"),
        ("NORMAL", 2, "thread"),  # another process's write lock: the busy handler sleeps
    ],
)
def test_auto_commits_on_the_loop_only_without_fsync_and_with_one_process(
    synchronous: str, processes: int, place: str
) -> None:
    assert commit_place("auto", synchronous, processes) == place


@pytest.mark.parametrize("asked", ["loop", "thread"])
def test_an_explicit_place_wins_over_the_sync_mode(asked: str) -> None:
    assert commit_place(asked, "FULL", 4) == asked
    assert commit_place(asked, "NORMAL", 1) == asked


def test_a_bad_value_is_one_line_naming_key_value_and_allowed() -> None:
    with pytest.raises(ValueError) as caught:
        commit_place("inline", "NORMAL")
    message = str(caught.value)
    assert "\n" not in message
    assert "server.store.commit_on" in message and "'inline'" in message
    assert all(value in message for value in COMMIT_ON)


def test_the_server_wiring_applies_the_rule_and_refuses_a_bad_override(tmp_path: Path) -> None:
    import asyncio
    import logging

    from chatcap.scenario import load_scenario
    from server.clock import now_s
    from server.store import StoreConnection
    from server.writer import start_write_path

    scenario = load_scenario("scenarios/smoke.toml")

    async def main() -> None:
        parts = await start_write_path(
            scenario,
            lambda: StoreConnection(tmp_path / "s.db"),
            clock=now_s,
            log=logging.getLogger("test"),
        )
        try:
            assert parts.writer.commit_on == "loop"  # smoke: WAL + NORMAL, one process
        finally:
            await parts.writer.stop()
            await parts.pool.close()
        with pytest.raises(ValueError, match=re.escape("server.store.commit_on = 'nowhere'")):
            await start_write_path(
                scenario,
                lambda: StoreConnection(tmp_path / "s.db"),
                clock=now_s,
                log=logging.getLogger("test"),
                commit_on="nowhere",
            )

    asyncio.run(main())
