"""The reliability runner's report: cases, totals and replay lines from the suite's JSON lines."""

import json

from bench.jobs.reliability import read_lines, render, totals


def lines() -> list[str]:
    rows = [
        {"nodeid": "tests/reliability/test_a.py::test_kill", "figure": "acked", "value": 100},
        {"nodeid": "tests/reliability/test_a.py::test_kill", "figure": "lost", "value": 0},
        {"nodeid": "tests/reliability/test_a.py::test_kill", "figure": "rss_mib", "value": 40.5},
        {
            "nodeid": "tests/reliability/test_a.py::test_kill",
            "outcome": "passed",
            "when": "call",
            "seconds": 3.0,
            "repro": "R1",
            "message": "",
        },
        {"nodeid": "tests/reliability/test_b.py::test_fuzz", "figure": "acked", "value": 7},
        {"nodeid": "tests/reliability/test_b.py::test_fuzz", "figure": "rss_mib", "value": 90.0},
        {
            "nodeid": "tests/reliability/test_b.py::test_fuzz",
            "outcome": "failed",
            "when": "call",
            "seconds": 1.5,
            "repro": "CHATCAP_RELIABILITY_SEED=5 pytest test_b",
            "message": "AssertionError: crash",
        },
    ]
    return [json.dumps(r) for r in rows] + [""]


def test_cases_keep_their_figures_and_outcomes() -> None:
    cases = read_lines(lines())
    assert [c.outcome for c in cases] == ["passed", "failed"]
    assert cases[0].figures == {"acked": 100, "lost": 0, "rss_mib": 40.5}
    assert cases[1].message == "AssertionError: crash"


def test_counts_are_summed_and_rss_is_the_largest() -> None:
    tot = totals(read_lines(lines()))
    assert tot["acked"] == 107 and tot["lost"] == 0
    assert tot["rss_mib"] == 90.0


def test_the_report_names_each_failure_and_how_to_replay_it() -> None:
    meta = {"run_id": "X", "scale": "full", "seed": 5, "seconds": 4.5, "command": "c"}
    text = render(read_lines(lines()), meta)
    assert "| cases tried | 2 |" in text and "| cases passed | 1 |" in text
    assert "| messages acked | 107 |" in text and "| acked messages lost | 0 |" in text
    assert "| rss (MiB, max) | 90.0 |" in text
    assert "replay: `CHATCAP_RELIABILITY_SEED=5 pytest test_b`" in text
