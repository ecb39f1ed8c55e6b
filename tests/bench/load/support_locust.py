"""Test-side helpers for the Locust tests: the real server and Locust, each a subprocess.

Locust (gevent) and the server (asyncio) each run in their own subprocess — never in
the test process: pytest imports neither locust nor gevent. Every process is started
here by its own handle and stopped by it. Timeouts are scaled by
``CHATCAP_TIMING_FACTOR``; waits poll real I/O with a bounded deadline.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from chatcap.scenario import load_scenario, to_toml

ROOT = Path(__file__).resolve().parents[3]
FACTOR = float(os.environ.get("CHATCAP_TIMING_FACTOR", "1"))
SECRET = "test-secret-0123456789-0123456789-0123456789"
ADMIN_TOKEN = "test-admin-token-0123456789"
USERS, ROOM_SIZE = 10, 5

# Rate limits off (several sends per second per user), patient clients, no retries.
SERVER_OVERRIDES: dict[str, Any] = {
    "server.rate_limit.algorithm": "none",
    "client.ack_timeout_ms": 10_000.0,
    "client.retry.max_attempts": 1,
    "workload.think_time_s": 0.05,
}


def scaled(seconds: float) -> float:
    return seconds * FACTOR


@dataclass
class Server:
    """The reference server in a subprocess (started as tests/server/conftest.py does)."""

    proc: subprocess.Popen[bytes]
    port: int
    scenario: Path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, headers: dict[str, str] | None = None) -> bytes:
        req = urllib.request.Request(self.http + path, headers=headers or {})
        with urllib.request.urlopen(req, timeout=scaled(10)) as resp:
            body: bytes = resp.read()
            return body

    def admin(self, query: str) -> None:
        self.get(f"/api/v1/admin/faults?{query}", {"Authorization": f"Bearer {ADMIN_TOKEN}"})

    def metric(self, name: str) -> float:
        """Sum of every sample of a Prometheus metric family."""
        lines = self.get("/metrics").decode().splitlines()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in lines
            if line.startswith((name + " ", name + "{"))
        )


@contextmanager
def running_server(tmp: Path) -> Iterator[Server]:
    """The smoke scenario with :data:`SERVER_OVERRIDES` on a free loopback port."""
    scenario = tmp / "scenario.toml"
    base = load_scenario(ROOT / "scenarios" / "smoke.toml").with_overrides(SERVER_OVERRIDES)
    scenario.write_text(to_toml(base, comments=False))
    env = dict(
        os.environ, CHATCAP_JWT_SECRET=SECRET, CHATCAP_ADMIN_TOKEN=ADMIN_TOKEN, PYTHONUNBUFFERED="1"
    )
    cmd = [sys.executable, "-m", "server", "--scenario", str(scenario), "--port", "0"]
    with (tmp / "server.log").open("ab") as log:
        proc = subprocess.Popen(
            [*cmd, "--db", str(tmp / "chat.db")], cwd=ROOT, env=env, stdout=subprocess.PIPE,
            stderr=log, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().decode()
        assert "listening on" in first, (tmp / "server.log").read_text()[-3000:]
        port = int(first.split("://127.0.0.1:")[1].split("/")[0])
        yield Server(proc, port, scenario)
    finally:
        stop(proc, signal.SIGTERM)
        if proc.stdout is not None:
            proc.stdout.close()


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Stop a process this test started (by its own handle), killing it if it lingers."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=scaled(10))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def locust(
    args: Sequence[str], log: Path, scenario: Path | None = None, cwd: Path = ROOT
) -> subprocess.Popen[bytes]:
    """Start ``python -m locust -f bench/locustfile.py ARGS``, output to ``log``."""
    cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "bench" / "locustfile.py"), *args]
    if scenario is not None:
        cmd += ["--chat-scenario", str(scenario)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with log.open("ab") as out:
        return subprocess.Popen(
            cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )


def headless(server: Server, run_time_s: float, *extra: str) -> list[str]:
    return [
        "--headless", "--only-summary",
        "-u", str(USERS), "-r", str(USERS), "-t", f"{run_time_s:g}s",
        "--host", server.http,
        "--chat-room-size", str(ROOM_SIZE),
        *extra,
    ]  # fmt: skip


def finish(proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    """Wait for a Locust process to exit 0; on failure show the end of its log."""
    try:
        rc = proc.wait(timeout=scaled(timeout_s))
    except subprocess.TimeoutExpired:
        stop(proc, signal.SIGKILL)
        pytest.fail(f"locust did not finish in {timeout_s} s:\n{log.read_text()[-3000:]}")
    assert rc == 0, f"locust exited {rc}:\n{log.read_text()[-3000:]}"


def read(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ---------------------------------------------------------------------------- the web UI


@dataclass
class WebLocust:
    """A Locust process serving its web UI on a loopback port."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=scaled(10)) as resp:
            return json.loads(resp.read())

    def post_form(self, path: str, form: Mapping[str, str]) -> tuple[int, Any]:
        body = urllib.parse.urlencode(form).encode()
        req = urllib.request.Request(self.url + path, data=body, method="POST")
        with urllib.request.urlopen(req, timeout=scaled(10)) as resp:
            return resp.status, json.loads(resp.read())

    def state(self) -> str:
        return str(self.get_json("/stats/requests")["state"])


@contextmanager
def web_locust(host: str, log: Path, *extra: str, cwd: Path = ROOT) -> Iterator[WebLocust]:
    """Locust with its web UI (no test started), ready to answer, stopped after."""
    port = free_port()
    args = ["--web-host", "127.0.0.1", "--web-port", str(port), "--host", host, *extra]
    proc = locust(args, log, cwd=cwd)
    web = WebLocust(proc, port, log)
    try:
        deadline = time.monotonic() + scaled(30)
        while True:
            try:
                web.state()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the Locust web UI did not come up:\n{log.read_text()[-3000:]}")
                time.sleep(0.05)
        yield web
    finally:
        stop(proc)


# ---------------------------------------------------------------------------- a browser

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
needs_chromium = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (/usr/bin)",
)


@contextmanager
def chromium(width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """Headless Chromium driven by Selenium (Debian's browser and driver, no download)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                f"--window-size={width},{height}"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(check: Any, what: str, timeout_s: float = 20.0, detail: Any = None) -> Any:
    """Poll ``check()`` until it returns something true (bounded by ``timeout_s``);
    on a timeout the failure adds ``detail()`` when given."""
    deadline = time.monotonic() + scaled(timeout_s)
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}" + (f": {detail()}" if detail else ""))
        time.sleep(0.1)
