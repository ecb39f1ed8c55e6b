"""What the browser tests stand on: a real server, a second origin, Chromium, the page.

* :func:`start_chat_server` — ``python -m server`` on a free port with a scenario made of
  ``scenarios/smoke.toml`` plus overrides (bench/_support/servers.py does the process);
* :class:`StaticSite` — the page's files served by a plain HTTP server on another port
  (another origin), as any static host would: ``index.html`` at ``/``, the rest under
  ``/web/``; a thread in the test process;
* :func:`chromium` — Debian's ``/usr/bin/chromium`` through ``/usr/bin/chromedriver``,
  headless; Selenium Manager is never asked (the driver's path is given), so nothing is
  downloaded; :func:`browser_missing` says why the tests cannot run;
* :class:`ChatPage` — one browser window on the page: log in, join, send, and the lines
  the DOM shows, read in one script call.

Every wait polls the DOM with a bounded deadline (``CHATCAP_TIMING_FACTOR`` stretches it).
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from bench._support.servers import (
    ServerProc,
    start_our_server,
)
from chatcap.scenario import load_scenario, to_toml

ROOT = Path(__file__).resolve().parents[2]
WEB_DIR = ROOT / "server" / "web"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FACTOR = float(os.environ.get("CHATCAP_TIMING_FACTOR", "1"))
WAIT_S = 15.0 * FACTOR
WINDOW_SIZE = (900, 760)

T = TypeVar("T")


def browser_missing() -> str:
    """Why the browser tests cannot run here ("" when they can)."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} not found: apt-get install {package} (.ci/run does)"
    return ""


# ---------------------------------------------------------------------------- servers


def start_chat_server(
    workdir: Path, overrides: dict[str, Any], tag: str = "chat", users: Path | None = None
) -> ServerProc:
    """A server with smoke.toml + ``overrides``, its store in ``workdir`` (``--users``
    when given); stop it with :func:`bench._support.servers.stop_server`."""
    scenario = load_scenario(ROOT / "scenarios" / "smoke.toml").with_overrides(overrides)
    path = workdir / f"scenario-{tag}.toml"
    path.write_text(to_toml(scenario, comments=False))
    ca_file = str(overrides.get("server.tls.ca_file", ""))
    return start_our_server(path, workdir, tag, ca_file, users)


def add_user(users: Path, name: str, password: str) -> None:
    """``python -m server adduser`` (the password on stdin), as an operator would."""
    subprocess.run(
        [sys.executable, "-m", "server", "adduser", "--users", str(users), name],
        input=password.encode(),
        check=True,
        capture_output=True,
        timeout=WAIT_S,
    )


class StaticSite:
    """The page's files on ``http://127.0.0.1:PORT`` — another origin than the server's."""

    def __init__(self) -> None:
        files = {f"/web/{p.name}": p for p in WEB_DIR.iterdir() if p.is_file()}
        files["/"] = WEB_DIR / "index.html"
        types = {
            ".html": "text/html",
            ".js": "text/javascript",
            ".css": "text/css",
            ".svg": "image/svg+xml",
        }

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = files.get(self.path.split("?", 1)[0])
                if path is None:
                    self.send_error(404)
                    return
                body = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", types.get(path.suffix, "text/plain"))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the test output stays about the test

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> StaticSite:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(WAIT_S)


# ---------------------------------------------------------------------------- Chromium


def chromium(*extra_args: str) -> webdriver.Chrome:
    """A headless Chromium session (a ``selenium.webdriver.Chrome``) with its console log
    kept (``get_log("browser")``). ``--no-sandbox``: the tests run as root, where
    Chromium's sandbox refuses to start."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        f"--window-size={WINDOW_SIZE[0]},{WINDOW_SIZE[1]}",
        *extra_args,
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))


@dataclass(frozen=True)
class Line:
    """One ``li`` of ``#log`` as the page shows it."""

    seq: int | None
    sender: str
    body: str
    own: bool
    state: str
    latency_ms: float | None
    note: str


LINES_JS = """
return Array.from(document.querySelectorAll('#log > li'), (li) => ({
  seq: li.dataset.seq === undefined ? null : Number(li.dataset.seq),
  sender: li.dataset.from,
  body: li.querySelector('.body').textContent,
  own: li.dataset.own === 'true',
  state: li.dataset.state || '',
  latency_ms: li.dataset.latencyMs === undefined ? null : Number(li.dataset.latencyMs),
  note: li.querySelector('.note').textContent,
}));
"""


class ChatPage:
    """One Chromium window showing the chat page."""

    def __init__(self, driver: webdriver.Chrome) -> None:
        self.driver = driver

    def open(self, url: str) -> None:
        self.console()  # drop what earlier pages logged
        self.driver.get(url)
        self.wait(lambda: self.js("return window.chatcap !== undefined"), "the page's script")

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def wait(self, check: Callable[[], T | None], what: str, timeout_s: float = WAIT_S) -> T:
        """Poll ``check`` until it returns something true; fail naming ``what``."""
        try:
            result = WebDriverWait(self.driver, timeout_s, poll_frequency=0.05).until(
                lambda _: check()
            )
        except TimeoutException:
            raise AssertionError(
                f"waited {timeout_s:g} s for {what}; the page shows lines {self.lines()}, "
                f"state {self.state()}, errors {self.errors()}"
            ) from None
        assert result is not None  # until() returns only a true value
        return result

    def fill(self, element_id: str, text: str) -> None:
        field = self.driver.find_element(By.ID, element_id)
        field.clear()
        field.send_keys(text)

    def click(self, element_id: str) -> None:
        self.driver.find_element(By.ID, element_id).click()

    def login(self, user: str, password: str = "pw") -> None:
        self.fill("user", user)
        self.fill("password", password)
        self.click("login")

    def join(self, room: str) -> None:
        self.wait(lambda: self.js("return !document.getElementById('join').disabled"), "login")
        self.fill("room", room)
        self.click("join")
        self.wait(
            lambda: self.js("return document.getElementById('joined').dataset.room") == room,
            f"Joined {room}",
        )

    def send(self, body: str) -> None:
        self.fill("body", body)
        self.click("send")

    def lines(self) -> list[Line]:
        return [Line(**raw) for raw in self.js(LINES_JS)]

    def wait_line(self, sender: str, body: str, *, acked: bool = False) -> Line:
        """The line ``body`` from ``sender`` once shown (with its Ack when ``acked``)."""

        def found() -> Line | None:
            for line in self.lines():
                shown = line.sender == sender and line.body == body and line.seq is not None
                if shown and (not acked or line.state == "acked"):
                    return line
            return None

        return self.wait(found, f"the line {body!r} from {sender}")

    def state(self) -> dict[str, Any]:
        return dict(self.js("return window.chatcap ? window.chatcap.state() : {}"))

    def conn(self) -> str:
        return str(self.js("return document.getElementById('conn').dataset.state"))

    def errors(self) -> list[tuple[str, str]]:
        return [
            (e["code"], e["text"])
            for e in self.js(
                "return Array.from(document.querySelectorAll('#errors > li'),"
                " (li) => ({code: li.dataset.code, text: li.textContent}))"
            )
        ]

    def console(self) -> list[str]:
        """The console lines logged since the last call, each ``LEVEL message``."""
        entries: list[dict[str, Any]] = self.driver.get_log("browser")  # type: ignore[no-untyped-call]
        return [f"{entry.get('level')} {entry.get('message')}" for entry in entries]
