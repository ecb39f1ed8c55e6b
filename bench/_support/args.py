"""Argument helpers shared by the commands.

* :func:`parse_override` / :func:`load_with_overrides` — ``--set KEY=VALUE`` on a scenario;
* :class:`BadInput`, :class:`OneLineParser`, :func:`csv_list` — bad input is one line and
  exit status 2, never a usage dump or a traceback.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, NoReturn

from chatcap.scenario import Scenario, ScenarioError, load_scenario, parse_value


def parse_override(text: str) -> tuple[str, Any]:
    """``server.pool.size=8`` → ``("server.pool.size", 8)``; the value is read as TOML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ScenarioError(f"override {text!r}: expected KEY=VALUE, e.g. server.pool.size=8")
    return key.strip(), parse_value(raw)


def load_with_overrides(path: str, sets: Sequence[str]) -> Scenario:
    scenario = load_scenario(path)
    if sets:
        scenario = scenario.with_overrides(dict(parse_override(s) for s in sets))
    return scenario


class BadInput(ValueError):
    """Bad command-line input: printed as one line, exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are :class:`BadInput` (one line, exit 2), not usage."""

    def error(self, message: str) -> NoReturn:
        raise BadInput(message)


def csv_list(text: str, kind: type[float] | type[str], what: str) -> list[Any]:
    """``"1,2, 3"`` → ``[1.0, 2.0, 3.0]``; a bad item is :class:`BadInput` naming ``--what``."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return [kind(t) for t in items]
    except ValueError:
        raise BadInput(f"--{what} {text!r}: expected comma-separated numbers") from None
