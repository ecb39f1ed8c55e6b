"""chatcap in Locust's web UI, against a real Locust process (and, for runs, a real server).

The start form: a bad ``--chat-*`` value refuses the swarm and the form shows why;
``--chat-scenario``'s default is found from any working directory.
"""

from __future__ import annotations

from pathlib import Path

from tests.bench.load.support_locust import (
    ROOT,
    chromium,
    needs_chromium,
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
