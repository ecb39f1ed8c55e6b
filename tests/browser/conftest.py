"""Fixtures of the browser tests: two Chromium windows for the module, servers per test.

Each test module skips itself, with the reason, where Debian's chromium or
chromium-driver is not installed (``.ci/run`` installs both).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench._support.servers import ServerProc, stop_server
from tests.browser.support_browser import ChatPage, chromium, start_chat_server

StartServer = Callable[..., ServerProc]


@pytest.fixture(scope="module")
def drivers() -> Iterator[list[Any]]:
    """Two Chromium sessions (alice's and bob's windows), reused by a module's tests."""
    started: list[Any] = []
    try:
        started.append(chromium())
        started.append(chromium())
        yield started
    finally:
        for driver in started:
            driver.quit()


@pytest.fixture
def alice(drivers: list[Any]) -> ChatPage:
    return ChatPage(drivers[0])


@pytest.fixture
def bob(drivers: list[Any]) -> ChatPage:
    return ChatPage(drivers[1])


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """``start_server({"server.origins": [...]})`` → a running server, stopped (by PID)
    at teardown."""
    started: list[ServerProc] = []

    def start(overrides: dict[str, Any] | None = None, users: Path | None = None) -> ServerProc:
        server = start_chat_server(tmp_path, overrides or {}, f"chat{len(started)}", users)
        started.append(server)
        return server

    yield start
    for server in started:
        stop_server(server)
