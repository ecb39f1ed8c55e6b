"""The command lines: errors are one line and status 2, never a traceback."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from bench._support.args import parse_override
from bench.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def test_check_scenario_prints_the_resolved_file_with_defaults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check-scenario", str(ROOT / "scenarios" / "smoke.toml")]) == 0
    out = capsys.readouterr().out
    assert "offered sends" in out
    assert "[server.breaker]" in out
    assert "minimum_calls = 100" in out  # a default the file never states
    assert "anchor: 100" in out


def test_check_scenario_applies_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(ROOT / "scenarios" / "smoke.toml")
    assert main(["check-scenario", path, "--set", "server.pool.size=3", "--json"]) == 0
    assert '"size": 3' in capsys.readouterr().out


def test_check_scenario_reports_a_bad_file_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[workload]\nusers = 0\n")
    assert main(["check-scenario", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {bad}: workload.users = 0: must be ≥ 1 and ≤ 1e+07\n"


def test_bad_override_syntax_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(ROOT / "scenarios" / "smoke.toml")
    assert main(["check-scenario", path, "--set", "server.pool.size"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_override_values_are_read_as_toml() -> None:
    assert parse_override("a.b=8") == ("a.b", 8)
    assert parse_override("a.b=2.5") == ("a.b", 2.5)
    assert parse_override("a.b=true") == ("a.b", True)
    assert parse_override("a.b=fixed") == ("a.b", "fixed")
    assert parse_override("a.b=inf") == ("a.b", float("inf"))


@pytest.mark.parametrize("module", ["server", "sim"])
def test_server_and_sim_reject_a_bad_scenario_without_traceback(
    module: str, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server.pool]\nsize = -3\n")
    proc = subprocess.run(
        [sys.executable, "-m", module, "--scenario", str(bad)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "server.pool.size = -3" in proc.stderr


def test_help_lists_every_sub_command(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.cli import PASS_THROUGH

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in (*PASS_THROUGH, "check-scenario", "codecs"))


def _sub_commands(parser: argparse.ArgumentParser) -> list[str]:
    """The verbs the parser itself knows (never a hand-kept list)."""
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1
    return sorted(actions[0].choices)


BENCH_VERBS = _sub_commands(build_parser())


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, cwd=ROOT, check=False,
        stdin=subprocess.DEVNULL, timeout=120,
    )  # fmt: skip


def test_the_verb_walk_sees_the_pass_through_commands_too() -> None:
    from bench.cli import PASS_THROUGH

    assert set(PASS_THROUGH) <= set(BENCH_VERBS)
    assert {"check-scenario", "codecs", "scenario-reference"} <= set(BENCH_VERBS)


@pytest.mark.parametrize(
    "argv",
    [
        ("bench", "--help"),
        ("bench", "-h"),
        *[("bench", verb, "--help") for verb in BENCH_VERBS],
        ("server", "--help"),
        ("server", "-h"),
        ("server", "adduser", "--help"),
    ],
    ids=" ".join,
)
def test_every_help_exits_0_with_a_usage_and_no_traceback(argv: tuple[str, ...]) -> None:
    proc = run_cli("-m", *argv)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    module, *verb = [a for a in argv if not a.startswith("-")]
    assert proc.stdout.startswith(f"usage: python -m {' '.join([module, *verb])}")
