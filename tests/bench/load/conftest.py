"""The module-scoped server of the Locust tests (tests/bench/load/support_locust.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bench.load.support_locust import Server, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("locust-server")) as started:
        yield started


@pytest.fixture(scope="module")
def scenario(server: Server) -> Path:
    """The scenario file the server runs: the Locust users read the same one."""
    return server.scenario
