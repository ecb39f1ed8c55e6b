"""The reliability report names how many messages each kill -9 case acked per kill."""

from bench.jobs.reliability import acked_per_kill, read_lines, render


def lines() -> list[str]:
    import json

    rows = [
        {"nodeid": "tests/reliability/test_crash.py::test_slow", "figure": "acked", "value": 900},
        {"nodeid": "tests/reliability/test_crash.py::test_slow", "figure": "kills", "value": 3},
        {"nodeid": "tests/reliability/test_crash.py::test_fast", "figure": "acked", "value": 15000},
        {"nodeid": "tests/reliability/test_crash.py::test_fast", "figure": "kills", "value": 3},
        {"nodeid": "tests/reliability/test_fuzz.py::test_fuzz", "figure": "acked", "value": 7},
    ]
    return [json.dumps(r) for r in rows]


def test_only_cases_with_kills_get_an_acked_per_kill_figure() -> None:
    cases = read_lines(lines())
    assert acked_per_kill(cases) == [("test_slow", 300.0), ("test_fast", 5000.0)]


def test_the_report_shows_acked_per_kill_for_each_kill_case() -> None:
    meta = {"run_id": "r", "scale": "ci", "seed": 1, "seconds": 1.0, "command": "x"}
    report = render(read_lines(lines()), meta)
    assert "| acked per kill, `test_fast` | 5,000.0 |" in report
    assert "acked per kill, `test_fuzz`" not in report
