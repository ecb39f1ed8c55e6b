"""Fixtures that run the real server as a subprocess and talk to it with real clients.

Timeouts are multiplied by ``CHATCAP_TIMING_FACTOR`` (default 1) so a slow machine can
stretch them in one place; no test sleeps to let time pass — they wait for events.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chatcap.scenario import load_scenario, to_toml
from tests.server.support_chat import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
FACTOR = float(os.environ.get("CHATCAP_TIMING_FACTOR", "1"))
ADMIN_TOKEN = "test-admin-token-0123456789"
SECRET = "test-secret-0123456789-0123456789-0123456789"


def scaled(seconds: float) -> float:
    return seconds * FACTOR


def write_scenario(tmp_path: Path, overrides: dict[str, Any], base: str = "smoke") -> Path:
    scenario = load_scenario(ROOT / "scenarios" / f"{base}.toml").with_overrides(overrides)
    path = tmp_path / "scenario.toml"
    path.write_text(to_toml(scenario, comments=False))
    return path


def launch(
    tmp_path: Path,
    scenario_path: Path,
    db: Path,
    extra_env: dict[str, str] | None = None,
    users: Path | None = None,
) -> ServerProcess:
    env = dict(
        os.environ, CHATCAP_JWT_SECRET=SECRET, CHATCAP_ADMIN_TOKEN=ADMIN_TOKEN, PYTHONUNBUFFERED="1"
    )
    env.update(extra_env or {})
    log = (tmp_path / "server.log").open("ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server",
            "--scenario",
            str(scenario_path),
            "--port",
            "0",
            "--db",
            str(db),
            *(["--users", str(users)] if users else []),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
    )
    log.close()
    assert proc.stdout is not None
    first = proc.stdout.readline().decode()
    if "listening on" not in first:
        proc.kill()
        proc.wait()
        raise RuntimeError(
            f"server did not start: {first!r}\n" + (tmp_path / "server.log").read_text()[-3000:]
        )
    port = int(first.split("://127.0.0.1:")[1].split("/")[0])
    return ServerProcess(proc, port, tmp_path / "server.log", ADMIN_TOKEN, FACTOR)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """``start_server({"server.pool.size": 1})`` → a running server; stopped at teardown."""
    started: list[ServerProcess] = []

    def start(
        overrides: dict[str, Any] | None = None,
        *,
        db: Path | None = None,
        base: str = "smoke",
        users: Path | None = None,
    ) -> ServerProcess:
        scenario = write_scenario(tmp_path, overrides or {}, base)
        server = launch(tmp_path, scenario, db or tmp_path / "chat.db", users=users)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.proc.send_signal(signal.SIGTERM)
            try:
                server.proc.wait(timeout=scaled(15))
            except subprocess.TimeoutExpired:
                server.proc.kill()
                server.proc.wait()
        if server.proc.stdout is not None:
            server.proc.stdout.close()
