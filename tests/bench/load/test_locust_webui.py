"""chatcap in Locust's web UI, against a real Locust process (and, for runs, a real server).

The start form: a bad ``--chat-*`` value refuses the swarm and the form shows why;
``--chat-scenario``'s default is found from any working directory. The ledger tab: sent,
acked, delivered, missing, duplicated per codec, during a run and after it, from one
process and from a master's workers — read as JSON and as the page a browser shows.
Screenshots for docs/: ``tests/bench/load/screenshots.py`` (a script, not a test).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.load.report import LEDGER_TAB
from tests.bench.load.support_locust import (
    ROOM_SIZE,
    ROOT,
    USERS,
    Server,
    WebLocust,
    chromium,
    free_port,
    locust,
    needs_chromium,
    scaled,
    stop,
    wait_for,
    web_locust,
)

NOWHERE = "http://127.0.0.1:9"  # a refused swarm never connects
FORM = {"user_count": "2", "spawn_rate": "2", "host": NOWHERE}


def test_the_form_refuses_a_mistyped_scenario_path_and_says_why(tmp_path: Path) -> None:
    with web_locust(NOWHERE, tmp_path / "locust.log") as web:
        status, answer = web.post_form(
            "/swarm", {**FORM, "chat_scenario": "scenarios/baselin.toml"}
        )
        assert status == 200 and answer["success"] is False
        assert answer["message"].startswith("chatcap: --chat-scenario scenarios/baselin.toml: ")
        assert "no such file" in answer["message"]
        assert str(ROOT / "scenarios" / "baselin.toml") in answer["message"]
        assert web.state() == "ready"  # no test started


def test_the_form_refuses_a_scenario_that_does_not_validate_naming_the_key(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[workload]\nsend_rate_per_user_per_s = -1\n")
    with web_locust(NOWHERE, tmp_path / "locust.log") as web:
        _, answer = web.post_form("/swarm", {**FORM, "chat_scenario": str(bad)})
        assert answer["success"] is False
        assert f"{bad}: workload.send_rate_per_user_per_s = -1" in answer["message"]
        _, answer = web.post_form("/swarm", {**FORM, "chat_room_size": "ten"})
        assert answer == {
            "success": False,
            "message": "chatcap: --chat-room-size 'ten': expected an integer",
            "host": NOWHERE,
        }
        assert web.state() == "ready"


def test_the_default_scenario_is_found_from_another_working_directory(tmp_path: Path) -> None:
    # init checks the default plan and ends Locust (status 2) when it cannot load it
    with web_locust(NOWHERE, tmp_path / "locust.log", cwd=tmp_path) as web:
        _, answer = web.post_form("/swarm", {**FORM, "chat_room_size": "ten"})
        assert answer["message"] == "chatcap: --chat-room-size 'ten': expected an integer"
    log = (tmp_path / "locust.log").read_text()
    assert "Traceback" not in log and "no such file" not in log


@needs_chromium
def test_the_start_form_in_a_browser_shows_why_a_swarm_was_refused(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    with web_locust(NOWHERE, tmp_path / "locust.log") as web, chromium() as browser:
        browser.get(web.url + "/")
        wait_for(lambda: browser.find_elements(By.NAME, "userCount"), "the start form")
        browser.find_element(By.XPATH, "//button[contains(., 'Custom parameters')]").click()
        field = wait_for(
            lambda: [f for f in browser.find_elements(By.NAME, "chatScenario") if f.is_displayed()],
            "the chat_scenario field",
        )[0]
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys("scenarios/baselin.toml")
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        shown = wait_for(
            lambda: (
                "no such file" in browser.find_element(By.TAG_NAME, "body").text
                and browser.find_element(By.TAG_NAME, "body").text
            ),
            "the refusal in the page",
        )
        assert "chatcap: --chat-scenario scenarios/baselin.toml: no such file" in shown
        assert web.state() == "ready"


# ---------------------------------------------------------------------------- the ledger tab

LEDGER_KEYS = ["codec", "sent", "sent_per_s", "acked", "delivered", "delivered_per_s",
               "missing", "duplicated", "retries", "failed", "unacked", "receivers"]  # fmt: skip
SWARM = {"user_count": str(USERS), "spawn_rate": str(USERS), "chat_room_size": str(ROOM_SIZE),
         "chat_codec": "mix", "chat_send_rate": "4"}  # fmt: skip


def rows_by_codec(table: dict[str, Any]) -> dict[str, dict[str, Any]]:
    rows = {row["codec"]: row for row in table["rows"]}
    assert all(sorted(row) == sorted(LEDGER_KEYS) for row in rows.values())  # JSON sorts keys
    return rows


def wait_for_acks(web: WebLocust, at_least: int, processes: int = 1) -> dict[str, dict[str, Any]]:
    def acked() -> dict[str, dict[str, Any]] | None:
        table = web.get_json("/chatcap/ledger")
        rows = rows_by_codec(table)
        enough = rows.get("all", {}).get("acked", 0) >= at_least
        return rows if enough and table["processes"] == processes else None

    rows: dict[str, dict[str, Any]] = wait_for(acked, f"{at_least} acks in the ledger")
    return rows


def assert_a_clean_ledger(rows: dict[str, dict[str, Any]], receivers: int) -> None:
    assert set(rows) == {"json", "protobuf", "all"}  # mix: both codecs, then the total
    for key in ("sent", "acked", "delivered", "missing", "duplicated", "receivers"):
        assert rows["all"][key] == rows["json"][key] + rows["protobuf"][key], key
    total = rows["all"]
    assert total["acked"] > 0 and total["delivered"] > 0 and total["sent"] >= total["acked"]
    assert total["missing"] == 0 and total["duplicated"] == 0 and total["failed"] == 0
    assert total["receivers"] == receivers
    assert total["sent_per_s"] > 0 and total["delivered_per_s"] > total["sent_per_s"]


def test_the_ledger_tab_shows_the_run_per_codec_during_and_after_it(
    server: Server, tmp_path: Path
) -> None:
    log = tmp_path / "locust.log"
    with web_locust(server.http, log, "--chat-scenario", str(server.scenario)) as web:
        assert web.get_json("/chatcap/ledger")["rows"] == []  # no test yet
        _, answer = web.post_form("/swarm", {**SWARM, "host": server.http, "run_time": "4s"})
        assert answer["success"] is True, answer

        during = wait_for_acks(web, 2 * USERS)  # a 4 s run: still going
        assert_a_clean_ledger(during, USERS)
        polled = web.get_json("/stats/requests")  # what the UI's tab reads
        assert [tab["key"] for tab in polled["extended_stats"]] == [LEDGER_TAB]
        assert [row["codec"] for row in polled["extended_stats"][0]["data"]] == [
            "json", "protobuf", "all",
        ]  # fmt: skip

        wait_for(lambda: web.state() == "stopped", "the run time to end")
        final = web.get_json("/chatcap/ledger")
        assert (final["processes"], final["finished_processes"]) == (1, 1)
        after = rows_by_codec(final)
        assert_a_clean_ledger(after, USERS)
        assert after["all"]["acked"] > during["all"]["acked"]
        # the ledger's acks are Locust's send→ack successes, codec by codec
        stats = {row["name"]: row for row in web.get_json("/stats/requests")["stats"]}
        for codec in ("json", "protobuf"):
            answered = stats[f"send→ack {codec}"]
            assert answered["num_requests"] - answered["num_failures"] == after[codec]["acked"]
            assert stats[f"deliver {codec}"]["num_requests"] == after[codec]["delivered"]


@needs_chromium
def test_the_ledger_tab_in_a_browser_shows_the_numbers(server: Server, tmp_path: Path) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    log = tmp_path / "locust.log"
    with (
        web_locust(server.http, log, "--chat-scenario", str(server.scenario)) as web,
        chromium() as browser,
    ):
        _, answer = web.post_form("/swarm", {**SWARM, "host": server.http})
        assert answer["success"] is True, answer
        wait_for_acks(web, USERS)
        browser.get(f"{web.url}/?tab={LEDGER_TAB}")

        loaded = [time.monotonic()]

        def table() -> list[list[str]] | None:
            # A fresh Chromium's first page sometimes keeps showing the start form (READY)
            # while the runner runs (seen before the ledger tab changed too); a reload
            # shows the running test. Reload when the table is still missing after 5 s.
            if time.monotonic() - loaded[0] > scaled(5):
                browser.refresh()
                loaded[0] = time.monotonic()
            try:
                cells = [
                    [cell.text for cell in row.find_elements(By.CSS_SELECTOR, "th, td")]
                    for row in browser.find_elements(By.CSS_SELECTOR, "table tr")
                ]
            except StaleElementReferenceException:  # the UI redrew the table meanwhile
                return None
            return cells if len(cells) == 4 and cells[3][0] == "all" else None

        shown = wait_for(
            table, "the ledger table with its rows", 40.0, lambda: browser.find_element(
                By.TAG_NAME, "body").text + "\n" + log.read_text()[-2000:]
        )  # fmt: skip
        assert shown[0] == [
            "Codec", "Sent", "Sends/s", "Acked", "Delivered", "Deliveries/s", "Missing",
            "Duplicated", "Retries", "Failed", "Unacked", "Receivers",
        ]  # fmt: skip
        assert [row[0] for row in shown[1:]] == ["json", "protobuf", "all"]
        total = dict(zip(shown[0], shown[3], strict=True))
        assert int(total["Acked"]) > 0 and int(total["Delivered"]) > 0
        assert (total["Missing"], total["Duplicated"], total["Receivers"]) == ("0", "0", str(USERS))
        web.post_form("/stop", {})


def test_a_master_shows_its_workers_ledger_during_and_after_the_run(
    server: Server, tmp_path: Path
) -> None:
    port = str(free_port())
    master_args = ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", port,
                   "--chat-scenario", str(server.scenario)]  # fmt: skip
    worker_args = ["--worker", "--master-host", "127.0.0.1", "--master-port", port]
    with web_locust(server.http, tmp_path / "master.log", *master_args) as web:
        workers = [locust(worker_args, tmp_path / f"worker{i}.log") for i in (1, 2)]
        try:
            wait_for(lambda: web.get_json("/stats/requests")["worker_count"] == 2, "2 workers")
            form = {**SWARM, "host": server.http, "run_time": "5s"}
            _, answer = web.post_form("/swarm", form)
            assert answer["success"] is True, answer
            during = wait_for_acks(web, 2 * USERS, processes=2)  # the workers' reports
            assert_a_clean_ledger(during, USERS)
            wait_for(lambda: web.state() == "stopped", "the run time to end")
            final = wait_for(
                lambda: (t := web.get_json("/chatcap/ledger"))["finished_processes"] == 2 and t,
                "both workers' final parts",
            )
            assert_a_clean_ledger(rows_by_codec(final), USERS)
            assert rows_by_codec(final)["all"]["acked"] > during["all"]["acked"]
        finally:
            for proc in workers:
                stop(proc)
