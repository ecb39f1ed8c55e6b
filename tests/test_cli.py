"""The command lines: errors are one line and status 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench._support.args import parse_override
from bench.cli import main

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
