"""chatcap in Locust's web UI: the start form's options checked, the loss ledger shown.

Runs under gevent only, in a Locust process that serves the web UI (the local runner or
the master); :mod:`bench.load.runstate` calls :func:`install` from its ``init`` listener.
It uses the extension points Locust's own documentation describes for its Flask app:

* **The swarm guard** (``before_request`` on ``POST …/swarm``): the form's ``chat_*``
  fields laid over the command line's options go through the same
  :func:`~bench.load.runstate.plan_from_options` the users will use. A bad value (a
  mistyped scenario path, a scenario that does not validate, a room size that is not a
  number) answers ``{"success": false, "message": "chatcap: …"}`` — the shape of
  Locust's own refusals, with status 200 because the form shows the message of a 200
  answer and only "An unknown error occurred." for any other status — and no test starts.
* **The ledger tab** ("chatcap ledger"): Locust's ``extended_tabs`` / ``extended_tables``
  template arguments declare a tab and its columns
  (:data:`bench.load.report.LEDGER_COLUMNS`); an ``after_request`` hook adds the rows to
  the ``/stats/requests`` answer the UI polls every 2 s while a test runs (its
  ``extended_stats``): per codec and ``all`` — sent, sends/s, acked, delivered,
  deliveries/s, missing, duplicated, retries, failed, unacked, receivers. After the run
  the tab keeps the last rows; a reload shows the final ones.
* **``GET /chatcap/ledger``**: the same table as JSON — ``rows``, ``wall_s``,
  ``processes`` (whose figures it holds), ``finished_processes`` (of those, how many sent
  their final part: the rest are live snapshots), ``error`` (why the last test had no
  plan, if so) — for scripts and tests.
"""

from __future__ import annotations

import json
import logging
from argparse import Namespace
from collections.abc import Callable, Mapping
from typing import Any

from flask import Response, jsonify, request
from locust.env import Environment

from bench.load.plan import LoadPlan
from bench.load.report import LEDGER_COLUMNS, LEDGER_TAB
from chatcap.scenario import ScenarioError

__all__ = ["install", "options_with_form"]

logger = logging.getLogger("chatcap.locust")


def options_with_form(options: Namespace | None, form: Mapping[str, str]) -> Namespace:
    """The options a swarm will run with: the form's ``chat_*`` fields over ``options``."""
    merged = dict(vars(options)) if options is not None else {}
    merged.update({key: value for key, value in form.items() if key.startswith("chat_")})
    return Namespace(**merged)


def install(
    environment: Environment,
    plan_from_options: Callable[[Any], LoadPlan],
    ledger: Callable[[], dict[str, Any]],
) -> None:
    """Add the swarm guard, the ledger tab and its route to ``environment.web_ui``."""
    web_ui = environment.web_ui
    assert web_ui is not None
    app = web_ui.app
    assert app is not None

    def refuse_a_bad_swarm() -> Response | None:
        if request.method != "POST" or not request.path.endswith("/swarm"):
            return None
        try:
            plan_from_options(options_with_form(environment.parsed_options, request.form))
        except (ScenarioError, ValueError) as exc:
            logger.error("chatcap: swarm refused: %s", exc)
            answer = {"success": False, "message": f"chatcap: {exc}", "host": environment.host}
            return jsonify(answer)
        return None

    def add_the_ledger(response: Response) -> Response:
        if not request.path.endswith("/stats/requests") or response.status_code != 200:
            return response
        body = response.get_json(silent=True)
        if isinstance(body, dict):
            body["extended_stats"] = [{"key": LEDGER_TAB, "data": ledger()["rows"]}]
            response.set_data(json.dumps(body))
        return response

    def ledger_json() -> Response:
        return jsonify(ledger())

    app.before_request(refuse_a_bad_swarm)
    app.after_request(add_the_ledger)
    app.add_url_rule("/chatcap/ledger", "chatcap_ledger", ledger_json)
    web_ui.template_args["extended_tabs"] = [{"title": "chatcap ledger", "key": LEDGER_TAB}]
    web_ui.template_args["extended_tables"] = [
        {"key": LEDGER_TAB, "structure": [{"key": k, "title": t} for k, t in LEDGER_COLUMNS]}
    ]
