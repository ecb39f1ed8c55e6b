"""`make demo`'s first step: every shipped scenario loads; a bad one is reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.demo import check_scenarios

ROOT = Path(__file__).resolve().parents[1]


def test_every_shipped_scenario_passes_the_demo_check() -> None:
    assert check_scenarios(ROOT / "scenarios") == 0


def test_a_bad_scenario_fails_the_demo_check_with_its_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "good.toml").write_text("")
    (tmp_path / "bad.toml").write_text("[workload]\nusers = 0\n")
    assert check_scenarios(tmp_path) == 1
    assert "workload.users = 0" in capsys.readouterr().out
