"""Take docs/'s pictures of Locust's web UI with chatcap's users: a script, not a test.

    .venv/bin/python tests/bench/load/screenshots.py [--out docs] [--run-s 20]

Starts the reference server (the smoke scenario, rate limit off) and Locust's web UI on
free loopback ports, fills the start form in headless Chromium (60 users, both codecs,
rooms of 10, 1 send/s per user), lets the test run, and saves
``locust-web-ui-form.png``, ``-stats.png``, ``-charts.png`` and ``-ledger.png``; then
stops everything it started. Needs Debian's chromium and chromium-driver. The tests that
check the same pages assert on them: ``test_locust_webui.py``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.bench.load.support_locust import (  # noqa: E402  (after the path fix-up)
    chromium,
    running_server,
    wait_for,
    web_locust,
)

USERS, ROOM_SIZE, RATE = 60, 10, 1.0
FORM = {"userCount": str(USERS), "spawnRate": "20", "chatRoomSize": str(ROOM_SIZE),
        "chatSendRate": f"{RATE:g}"}  # fmt: skip


def fill(browser: Any, name: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    field = browser.find_element(By.NAME, name)
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(value)


def shoot(out: Path, run_s: float) -> list[Path]:
    from selenium.webdriver.common.by import By

    saved: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="chatcap-shots-") as tmp_dir:
        tmp = Path(tmp_dir)
        with (
            running_server(tmp) as server,
            web_locust(
                server.http,
                tmp / "locust.log",
                "--chat-scenario",
                str(server.scenario),
                "--chat-codec",
                "mix",
            ) as web,  # fmt: skip
            chromium(1400, 1000) as browser,
        ):
            browser.get(web.url + "/")
            wait_for(lambda: browser.find_elements(By.NAME, "userCount"), "the start form")
            browser.find_element(By.XPATH, "//button[contains(., 'Custom parameters')]").click()
            wait_for(lambda: browser.find_element(By.NAME, "chatRoomSize").is_displayed(), "form")
            for name, value in FORM.items():
                fill(browser, name, value)
            browser.set_window_size(1400, 1400)  # the whole form in one picture
            browser.execute_script("window.scrollTo(0, 0)")
            saved.append(_save(browser, out / "locust-web-ui-form.png"))
            browser.set_window_size(1400, 1000)
            browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            wait_for(lambda: "RUNNING" in browser.find_element(By.TAG_NAME, "body").text, "run")
            time.sleep(run_s)  # the picture should show a run under way: let it run
            for tab, name in (("stats", "stats"), ("charts", "charts"),
                              ("chatcap-ledger", "ledger")):  # fmt: skip
                browser.get(f"{web.url}/?tab={tab}")
                time.sleep(3)  # the page polls every 2 s: one poll's data on screen
                saved.append(_save(browser, out / f"locust-web-ui-{name}.png"))
            web.post_form("/stop", {})
    return saved


def _save(browser: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(path))
    print(f"wrote {path}")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs"), help="folder for the PNG files")
    parser.add_argument("--run-s", type=float, default=20.0, help="seconds of load first")
    args = parser.parse_args(argv)
    shoot(Path(args.out), args.run_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
