"""The notebooks run headless top to bottom (quick mode), and none is committed with outputs."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
import support_nbcase

from bench.analysis import paths as an_paths
from bench.jobs import notebooks
from sim.calibration import Costs, save_costs


def outputs_text(path: Path) -> str:
    """Every text and Markdown output of an executed notebook, joined."""
    nb = nbformat.read(path, as_version=4)
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            parts.append(data.get("text/markdown", "") + data.get("text/plain", ""))
            parts.append(out.get("text", ""))
    return "\n".join(parts)


def run(name: str, tmp_path: Path, **params: Any) -> notebooks.NotebookRun:
    result = notebooks.execute_notebook(
        notebooks.NOTEBOOK_DIR / f"{name}.ipynb", tmp_path / "out", {"quick": True, **params}
    )
    assert result.ok, result.error
    assert result.executed is not None and result.html is not None
    assert result.html.read_text().startswith("<!DOCTYPE html>")
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in result.figures)
    return result


# ---------------------------------------------------------------------------- committed files


def test_no_committed_notebook_has_outputs() -> None:
    paths = notebooks.committed_notebooks()
    assert [p.stem for p in paths] == sorted(notebooks.NOTEBOOKS)
    assert notebooks.check_no_outputs(paths) == []
    assert notebooks.main(["--check"]) == 0


def test_every_notebook_has_a_parameters_cell_with_quick() -> None:
    for path in notebooks.committed_notebooks():
        assert "quick" in notebooks.parameter_names(nbformat.read(path, as_version=4)), path


def test_check_no_outputs_names_cells_with_outputs_or_counts(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# hi"),
        nbformat.v4.new_code_cell("1", outputs=[nbformat.v4.new_output("stream", text="1")]),
        nbformat.v4.new_code_cell("2", execution_count=3),
        nbformat.v4.new_code_cell("3"),
    ]
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, path)
    assert notebooks.check_no_outputs([path]) == [
        f"{path}: cell 2 has 1 output(s)",
        f"{path}: cell 3 has an execution count",
    ]
    assert notebooks.strip_outputs([path]) == [path]
    assert notebooks.check_no_outputs([path]) == []
    assert notebooks.strip_outputs([path]) == []


# ---------------------------------------------------------------------------- parameters


def parameterised() -> Any:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import os"),
        nbformat.v4.new_code_cell(
            "a = 1\nb: str = 'x'\nquick = False", metadata={"tags": ["parameters"]}
        ),
        nbformat.v4.new_code_cell("print(a, b)"),
    ]
    return nb


def test_inject_parameters_adds_a_tagged_cell_after_the_parameters_cell() -> None:
    nb = notebooks.inject_parameters(parameterised(), {"a": 2, "b": Path("/p"), "quick": True})
    assert [c.source for c in nb.cells] == [
        "import os",
        "a = 1\nb: str = 'x'\nquick = False",
        "# Parameters\na = 2\nb = '/p'\nquick = True\n",
        "print(a, b)",
    ]
    assert nb.cells[2].metadata.tags == ["injected-parameters"]
    again = notebooks.inject_parameters(nb, {"a": 3})
    assert [c.source for c in again.cells].count("# Parameters\na = 3\n") == 1
    assert len(again.cells) == 4
    assert len(parameterised().cells) == 3  # the input is not changed


def test_inject_parameters_refuses_unknown_names_and_non_literals() -> None:
    with pytest.raises(notebooks.NotebookError, match="unknown parameter"):
        notebooks.inject_parameters(parameterised(), {"c": 1})
    with pytest.raises(notebooks.NotebookError, match="not a Python literal"):
        notebooks.inject_parameters(parameterised(), {"a": object()})
    plain = nbformat.v4.new_notebook()
    plain.cells = [nbformat.v4.new_code_cell("x = 1")]
    with pytest.raises(notebooks.NotebookError, match="unknown parameter"):
        notebooks.inject_parameters(plain, {"x": 2})


def test_the_command_line_gives_each_notebook_its_own_parameters() -> None:
    kw = {
        "measured": Path("/m"),
        "outage": Path("/o"),
        "calibration": Path("/c.json"),
        "codecs_csv": Path("/codecs.csv"),
    }
    assert notebooks.plan_parameters("capacity-planning", quick=True, **kw) == {
        "quick": True,
        "calibration": "/c.json",
    }
    assert notebooks.plan_parameters("json-vs-protobuf", quick=False, **kw) == {
        "measured_dir": "/m",
        "calibration": "/c.json",
        "codecs_csv": "/codecs.csv",
    }
    assert notebooks.plan_parameters("breakers-and-retries", quick=False, **kw) == {
        "measured_outage_dir": "/o"
    }
    assert notebooks.plan_parameters("model-vs-measured", quick=True, **kw) == {
        "quick": True,
        "measured_dir": "/m",
        "calibration": "/c.json",
    }
    assert notebooks.main(["--measured", "/no/such/run"]) == 2


def test_a_failing_cell_is_reported_and_what_ran_is_saved(tmp_path: Path) -> None:
    nb = parameterised()
    nb.cells.append(nbformat.v4.new_code_cell("raise ValueError('boom')"))
    path = tmp_path / "bad.ipynb"
    nbformat.write(nb, path)
    result = notebooks.execute_notebook(path, tmp_path / "out", {"a": 5}, html=False)
    assert not result.ok and "ValueError" in result.error and "boom" in result.error
    assert result.executed is not None and "5 x" in outputs_text(result.executed)


# ---------------------------------------------------------------------------- each notebook


def test_capacity_planning_runs_and_answers_with_one_number(tmp_path: Path) -> None:
    result = run("capacity-planning", tmp_path, target_users=5_000)
    text = outputs_text(result.executed)  # type: ignore[arg-type]
    assert "**Capacity: " in text and "users per core**" in text
    assert "The target of 5,000 users needs" in text
    assert len(result.figures) == 1


def test_breakers_and_retries_runs_and_says_the_overlay_was_not_run(tmp_path: Path) -> None:
    result = run("breakers-and-retries", tmp_path)
    text = outputs_text(result.executed)  # type: ignore[arg-type]
    assert "The breaker opened by t = " in text
    assert "**The measured overlay was not run**" in text
    assert "**as configured**" in text and "**all fixes**" in text
    assert len(result.figures) == 2


def test_json_vs_protobuf_runs_on_a_measured_folder(tmp_path: Path) -> None:
    measured = support_nbcase.measured_run(tmp_path / "m", loads=(50.0, 100.0), replications=1)
    result = run("json-vs-protobuf", tmp_path, measured_dir=str(measured))
    text = outputs_text(result.executed)  # type: ignore[arg-type]
    assert f"Measured run: `{measured}`" in text
    assert "users per core relative to JSON" in text
    assert len(result.figures) == 5  # sizes, codec CPU, server CPU, ack and deliver CCDFs


def test_model_vs_measured_runs_and_states_where_the_model_fails(tmp_path: Path) -> None:
    measured = support_nbcase.measured_run(tmp_path / "m", replications=2, histograms=False)
    cal = save_costs(Costs(host="test-host"), tmp_path / "cal.json")
    result = run("model-vs-measured", tmp_path, measured_dir=str(measured), calibration=str(cal))
    text = outputs_text(result.executed)  # type: ignore[arg-type]
    assert "at 4 offered load(s)" in text and "host test-host" in text
    assert "accuracy checks pass**" in text
    assert "off by" in text  # the synthetic server is far slower than the model
    assert len(result.figures) == 6  # 2 server-side, 2 client-side, goodput, generator gap
    assert "stage means: no stage times in this run" in text  # measured before them
    assert "collector: no collector figures" in text  # nor the collector's columns


def test_model_vs_measured_shows_the_stage_waterfall_when_the_run_has_stage_times(
    tmp_path: Path,
) -> None:
    measured = support_nbcase.measured_run(
        tmp_path / "m", replications=2, histograms=False, stages=True
    )
    cal = save_costs(Costs(host="test-host"), tmp_path / "cal.json")
    result = run("model-vs-measured", tmp_path, measured_dir=str(measured), calibration=str(cal))
    text = outputs_text(result.executed)  # type: ignore[arg-type]
    assert "stage means within 20 %: " in text and "no stage times" not in text
    assert len(result.figures) == 7  # the six above and the waterfall


def test_params_go_to_every_notebook_that_has_the_name_or_to_the_one_named() -> None:
    names = ["capacity-planning", "model-vs-measured", "breakers-and-retries"]
    got = notebooks.parse_params(
        ["replications=2", "capacity-planning:duration_s=3.0", "model_duration_s=None"], names
    )
    assert got["capacity-planning"] == {"replications": 2, "duration_s": 3.0}
    assert got["model-vs-measured"] == {"replications": 2, "model_duration_s": None}
    assert got["breakers-and-retries"] == {"replications": 2}
    for bad, why in (
        ("replications", "NAME=VALUE"),
        ("replications=two", "not a Python literal"),
        ("nope:replications=2", "no notebook 'nope'"),
        ("breakers-and-retries:duration_s=3", "has 'duration_s'"),
        ("no_such=1", "has 'no_such'"),
    ):
        with pytest.raises(notebooks.NotebookError, match=why):
            notebooks.parse_params([bad], names)
    assert notebooks.main(["-p", "no_such=1", "--only", "capacity-planning"]) == 2


# ---------------------------------------------------------------------------- JupyterLab


def test_the_lab_command_allows_root_only_for_root() -> None:
    as_root = notebooks.lab_command(0, python="/venv/bin/python")
    as_user = notebooks.lab_command(1000, python="/venv/bin/python")
    assert as_root == [
        "/venv/bin/python", "-m", "jupyterlab",
        f"--ServerApp.root_dir={notebooks.NOTEBOOK_DIR}", "--ip=127.0.0.1", "--allow-root",
    ]  # fmt: skip
    assert as_user == as_root[:-1]


def test_bench_notebooks_lab_execs_the_command_for_the_current_user(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[list[str]] = []
    monkeypatch.setattr(notebooks.os, "getuid", lambda: 0)
    monkeypatch.setattr(notebooks.os, "execv", lambda path, cmd: started.append(list(cmd)))
    notebooks.main(["--lab"])
    assert started == [notebooks.lab_command(0)]


def test_make_lab_runs_bench_notebooks_lab() -> None:
    if shutil.which("make") is None:
        pytest.skip("no make on this machine")
    dry = subprocess.run(
        ["make", "-n", "--no-print-directory", "lab"],
        cwd=notebooks.ROOT,
        capture_output=True,
        text=True,
    )
    assert dry.returncode == 0, dry.stderr
    assert ".venv/bin/python -m bench notebooks --lab" in dry.stdout.splitlines()[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _lab_until(cmd: list[str], log: Path, wanted: str, deadline_s: float) -> tuple[str, int | None]:
    """Start JupyterLab, poll its log for ``wanted`` (or its exit) up to the deadline, end it
    by PID; return the log and the exit status it had before it was ended (None: running)."""
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(log.parent / "runtime")}
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline and proc.poll() is None:
            if wanted in log.read_text():
                break
            time.sleep(0.2)
        return log.read_text(), proc.poll()
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_the_lab_command_starts_jupyterlab_for_this_user(tmp_path: Path) -> None:
    port = ["--ServerApp.port=" + str(_free_port()), "--no-browser"]
    cmd = notebooks.lab_command(os.getuid()) + port
    text, status = _lab_until(cmd, tmp_path / "lab.log", "is running at", 90.0)
    assert status is None and "http://127.0.0.1:" in text, text[-2000:]
    if os.getuid() == 0:  # and without the flag, root is refused: the flag is what works
        bare = [c for c in cmd if c != "--allow-root"]
        text, status = _lab_until(bare, tmp_path / "bare.log", "is running at", 90.0)
        assert status not in (None, 0) and "--allow-root" in text, text[-2000:]


# ---------------------------------------------------------------------------- --quick


def _planned(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> list[notebooks.NotebookRun]:
    """Run ``main(argv)`` with no measured run under results/ and the notebooks not
    executed but recorded; returns what would have been executed, in order."""
    executed: list[notebooks.NotebookRun] = []

    def record(path: Path, out: Path, params: Any = None, **_: Any) -> notebooks.NotebookRun:
        executed.append(notebooks.NotebookRun(path.stem, dict(params or {})))
        return executed[-1]

    monkeypatch.setattr(an_paths, "newest_measured_run", lambda root=None: None)
    monkeypatch.setattr(notebooks, "execute_notebook", record)
    assert notebooks.main(argv) == 0
    return executed


def test_quick_executes_all_four_notebooks_without_a_measured_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    executed = _planned(monkeypatch, ["--quick", "--no-html", "--out", str(tmp_path)])
    assert [r.name for r in executed] == list(notebooks.NOTEBOOKS)
    sample = str(an_paths.sample_measured_run())
    by_name = {r.name: r.parameters for r in executed}
    assert by_name["model-vs-measured"] == {"quick": True, "measured_dir": sample}
    assert by_name["json-vs-protobuf"] == {"quick": True, "measured_dir": sample}
    assert "the committed sample" in capsys.readouterr().out
    index = json.loads((tmp_path / "index.json").read_text())
    assert len(index["runs"]) == 4


def test_a_full_run_without_a_measured_run_skips_model_vs_measured(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    executed = _planned(monkeypatch, ["--no-html", "--out", str(tmp_path)])
    assert [r.name for r in executed] == [
        n for n in notebooks.NOTEBOOKS if n != "model-vs-measured"
    ]
    assert all("measured_dir" not in r.parameters for r in executed)


def test_model_vs_measured_runs_on_the_committed_sample_and_says_it_is_one(
    tmp_path: Path,
) -> None:
    sample = an_paths.sample_measured_run()
    result = run("model-vs-measured", tmp_path, measured_dir=str(sample), calibration="")
    text = outputs_text(result.executed)  # type: ignore[arg-type]
    assert "**This is the committed sample `results/samples/measured-quick`" in text
    assert "not a measurement of this machine**" in text
    assert "accuracy checks pass**" in text
    # the sample predates the stage histograms: the section says so instead of failing
    assert "stage means: no stage times in this run (measured before the stage histograms)" in text
