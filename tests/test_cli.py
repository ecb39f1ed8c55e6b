"""The command lines: errors are one line and status 2, never a traceback."""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
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


# ---------------------------------------------------------------------------- server options

SMOKE = str(ROOT / "scenarios" / "smoke.toml")


def run_server(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m server --scenario smoke.toml ARGS`` that must fail before serving."""
    return subprocess.run(
        [sys.executable, "-m", "server", "--scenario", SMOKE, *args], capture_output=True,
        text=True, cwd=ROOT, check=False, stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip


def assert_one_clear_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "listening on" not in proc.stdout
    last = proc.stderr.strip().splitlines()[-1]
    assert all(word in last for word in words), last


@pytest.mark.parametrize("port", ["99999", "-1", "65536", "eighty"])
def test_server_port_outside_0_to_65535_is_refused_naming_the_range(port: str) -> None:
    assert_one_clear_error(run_server("--port", port), "--port", port, "0..65535")


def test_server_db_under_a_regular_file_names_db_and_the_file(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("not a folder")
    db = plain / "x.sqlite3"
    assert_one_clear_error(run_server("--db", str(db)), f"--db {db}", f"{plain} is a regular file")


def test_server_db_that_is_a_directory_names_db(tmp_path: Path) -> None:
    assert_one_clear_error(run_server("--db", str(tmp_path)), "--db", "is a directory")


def test_server_db_in_a_directory_it_cannot_write_names_db() -> None:
    # root writes anywhere: as root the server runs as nobody (setpriv) against a
    # root-owned folder; otherwise the folder is made read-only for this user.
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: every folder is writable")
    if os.geteuid() == 0:
        probe = subprocess.run(
            [*as_nobody, sys.executable, "-c", "import server.cli"],
            capture_output=True, cwd=ROOT, check=False, stdin=subprocess.DEVNULL, timeout=60,
        )  # fmt: skip
        if probe.returncode != 0:  # e.g. a clone under a private (0700) temporary folder
            pytest.skip(f"user nobody cannot import the project at {ROOT}: {probe.stderr[-200:]!r}")
    folder = Path(tempfile.mkdtemp(prefix="chatcap-ro-"))
    try:
        folder.chmod(0o555)
        db = str(folder / "x.sqlite3")
        cmd = [sys.executable, "-m", "server", "--scenario", SMOKE, "--db", db]
        proc = subprocess.run(
            [*as_nobody, *cmd] if os.geteuid() == 0 else cmd, capture_output=True, text=True,
            cwd=ROOT, check=False, stdin=subprocess.DEVNULL, timeout=60,
        )  # fmt: skip
        assert_one_clear_error(proc, f"--db {db}", f"the directory {folder} is not writable")
        assert not (folder / "x.sqlite3").exists()
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)


def test_server_store_path_from_the_scenario_is_named_when_no_db_is_given(
    tmp_path: Path,
) -> None:
    scenario = tmp_path / "s.toml"
    scenario.write_text(f"[server.store]\npath = {str(tmp_path)!r}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "server", "--scenario", str(scenario), "--port", "0"],
        capture_output=True, text=True, cwd=ROOT, check=False, timeout=60,
    )  # fmt: skip
    assert_one_clear_error(proc, "server.store.path", "(or --db)", "is a directory")


def test_server_port_already_taken_is_named(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        proc = run_server("--port", port, "--db", str(tmp_path / "x.sqlite3"))
    assert_one_clear_error(proc, f"--port {port}", "already in use")


def test_server_host_that_does_not_resolve_is_named(tmp_path: Path) -> None:
    proc = run_server("--host", "no-such-host.invalid", "--port", "0", "--db", str(tmp_path / "x"))
    assert_one_clear_error(proc, "--host no-such-host.invalid", "cannot resolve")


# ---------------------------------------------------------------------------- override typos


@pytest.mark.parametrize(
    ("argv", "typo"),
    [
        (["sim", "--scenario", SMOKE, "--sweep", "server.batch_max=1,2"], "server.batch_max"),
        (["sim", "--scenario", SMOKE, "--set", "server.store.batch_mx=3"], "server.store.batch_mx"),
        (["bench", "check-scenario", SMOKE, "--set", "sever.store.batch_max=3"], "sever"),
    ],
    ids=["sim --sweep", "sim --set", "bench --set"],
)
def test_an_override_typo_gets_a_did_you_mean_like_a_scenario_file(
    argv: list[str], typo: str
) -> None:
    proc = run_cli("-m", *argv)
    assert_one_clear_error(proc, typo, "did you mean 'server.store.batch_max'?")
