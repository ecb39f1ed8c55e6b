"""The reliability suite's shared pieces: its size, its seed, and the figures it reports.

The same tests run at two sizes. ``make test`` runs them at **ci** size (small counts, so
the whole suite adds a minute or two); ``make reliability`` (``python -m bench
reliability``) sets ``CHATCAP_RELIABILITY=full`` for the sizes the issue names. Nothing
else differs: a case that passes in CI runs the same code as in the full suite.

Figures go through the ``record`` fixture: ``record("acked", 1234)``. When
``CHATCAP_RELIABILITY_REPORT`` names a file (the runner sets it), each figure and each
test's outcome is appended there as one JSON line, from which the runner writes the
report table. Figures with the same name are summed across cases when the runner totals
them (acked, lost, duplicated, kills, bad inputs); ``*_mib`` figures are reported as the
largest seen.

``CHATCAP_RELIABILITY_SEED`` fixes the seed of every random choice (kill moments, fuzz
cases); without it each run draws one and prints it with every failure, so a failure can
be replayed exactly.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.server.conftest import start_server  # noqa: F401  (re-exported fixture)

SCALE_ENV = "CHATCAP_RELIABILITY"
REPORT_ENV = "CHATCAP_RELIABILITY_REPORT"
SEED_ENV = "CHATCAP_RELIABILITY_SEED"


@dataclass(frozen=True)
class Scale:
    """How big each case is. ``full`` is what the issue asks; ``ci`` fits ``make test``."""

    name: str
    kills: int  # kill -9 cycles in the crash-durability case
    drains: int  # SIGTERM-under-load cycles
    fuzz_per_codec: int  # malformed frames per codec
    idle_connections: int  # idle WebSocket connections held open at once
    slowloris: int  # half-sent handshakes
    flood_messages: int  # sends in the flood case
    autobahn_cases: str  # kosoku case selection ("*" = all)

    @property
    def full(self) -> bool:
        return self.name == "full"


SCALES = {
    "ci": Scale("ci", 3, 1, 5_000, 1_000, 50, 2_000, "1.*,2.*,3.*,4.*,5.*,6.1.*,7.1.*"),
    "full": Scale("full", 20, 3, 100_000, 10_000, 300, 20_000, "*"),
}


def current_scale() -> Scale:
    name = os.environ.get(SCALE_ENV, "ci")
    if name not in SCALES:
        raise pytest.UsageError(f"{SCALE_ENV}={name!r}: expected one of {sorted(SCALES)}")
    return SCALES[name]


def run_seed() -> int:
    raw = os.environ.get(SEED_ENV)
    if raw is None:
        seed = random.SystemRandom().randrange(2**32)
        os.environ[SEED_ENV] = str(seed)  # one seed for the whole session
        return seed
    try:
        return int(raw)
    except ValueError:
        raise pytest.UsageError(f"{SEED_ENV}={raw!r}: expected an integer") from None


def _append(line: dict[str, Any]) -> None:
    path = os.environ.get(REPORT_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, sort_keys=True) + "\n")


def repro_command(nodeid: str, seed: int, scale: Scale) -> str:
    return f"{SCALE_ENV}={scale.name} {SEED_ENV}={seed} .venv/bin/python -m pytest '{nodeid}'"


@pytest.fixture(scope="session")
def scale() -> Scale:
    return current_scale()


@pytest.fixture(scope="session")
def seed() -> int:
    return run_seed()


@pytest.fixture
def rng(seed: int, request: pytest.FixtureRequest) -> random.Random:
    """A random source seeded by the run seed and the test's id (stable across runs)."""
    return random.Random(f"{seed}:{request.node.nodeid}")


Record = Callable[[str, float | int | str], None]


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Iterator[Record]:
    """``record(name, value)``: one figure of this case for the report."""
    figures: dict[str, float | int | str] = {}

    def put(name: str, value: float | int | str) -> None:
        figures[name] = value
        _append({"nodeid": request.node.nodeid, "figure": name, "value": value})

    yield put
    request.node.user_properties.extend(sorted(figures.items()))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        scale = current_scale()
        seed = run_seed()
        _append(
            {
                "nodeid": report.nodeid,
                "outcome": report.outcome,
                "seconds": round(report.duration, 3),
                "when": report.when,
                "repro": repro_command(report.nodeid, seed, scale),
                "message": _short(report) if report.failed else "",
                "time": time.time(),
            }
        )


def _short(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    return text.strip().splitlines()[0][:300] if text.strip() else "failed"


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    """Name the seed and the replay command in every failure."""
    if call.excinfo is not None and call.when == "call":
        seed = run_seed()
        item.add_report_section("call", "replay", repro_command(item.nodeid, seed, current_scale()))
