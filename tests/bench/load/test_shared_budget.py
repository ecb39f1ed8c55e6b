"""The users of one Locust process share one retry policy, so one retry budget, as the
model's simulated users share theirs. Checked in a process of its own: the run state
imports gevent, which never shares a process with asyncio (nor with pytest's)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

PROBE = """
from bench.load.plan import resolve_plan
from bench.load.runstate import RUN
from chatcap.scenario import load_scenario
plan = resolve_plan(load_scenario("scenarios/retry-storm-fixed.toml"))
RUN.start(plan, 0)
first = RUN.retry_policy
assert first is not None and first.max_attempts == plan.client.retry.max_attempts
budget = first.budget
for _ in range(100):  # 100 first attempts anywhere in the process fill one budget
    first.on_send(1, 1.0)
RUN.start(plan, 0)  # a new test: a fresh policy and budget
assert RUN.retry_policy is not first
print("shared", type(budget).__name__)
"""


def test_one_locust_process_has_one_retry_policy_per_test() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("shared")
    users = (ROOT / "bench" / "load" / "users.py").read_text()
    assert "RUN.retry_policy or retry_policy(plan.client)" in users
