"""Small scenarios for the model's tests: seconds of simulated time, a few users."""

from __future__ import annotations

import copy
from typing import Any

import pandas as pd

from chatcap.scenario import Scenario, load_scenario_data

BASE: dict[str, Any] = {
    "name": "simcase",
    "seed": 3,
    "server": {
        "pool": {"size": 2, "acquire_timeout_ms": 1000.0},
        "rate_limit": {"algorithm": "none"},
        "breaker": {"enabled": False},
        # one batch more in flight than connections: it waits at the pool (store_busy);
        # commits on a store thread: the store is its own server beside the loop (the
        # tests of commits on the loop say server__store__commit_on="loop")
        "store": {
            "batch_max": 8,
            "write_queue_max": 10_000,
            "max_in_flight_batches": 3,
            "commit_on": "thread",
        },
    },
    "workload": {
        "users": 20,
        "rooms": 4,
        "room_size": {"distribution": "fixed", "size": 5},
        "send_rate_per_user_per_s": 5.0,
        "duration_s": 6.0,
        "warmup_s": 1.0,
    },
    "client": {
        "ack_timeout_ms": 2000.0,
        "retry": {"max_attempts": 1},
        "retry_budget": {"kind": "none"},
    },
    "sim": {"timeseries_interval_s": 0.5},
}


def scenario(**overrides: Any) -> Scenario:
    """The base case with dotted-key overrides, written with ``__`` for ``.``:
    ``scenario(server__pool__size=4)``."""
    base = load_scenario_data(copy.deepcopy(BASE), source="simcase")
    return base.with_overrides({k.replace("__", "."): v for k, v in overrides.items()})


def script(rows: list[tuple[float, int, int, str]]) -> pd.DataFrame:
    """A replay log: (intended_s, user, room, codec) per first attempt."""
    return pd.DataFrame(rows, columns=["intended_s", "user", "room", "codec"])


def outcomes(requests: pd.DataFrame) -> dict[str, int]:
    counts = requests["outcome"].value_counts()
    return {str(k): int(v) for k, v in counts.items()}
