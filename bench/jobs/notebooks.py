"""Run the notebooks headless: inject parameters, execute, save the notebook, HTML and PNGs.

``python -m bench notebooks [--quick] [--only NAME …] [--measured DIR] [--measured-outage DIR]
[--calibration FILE] [--out DIR]`` executes every notebook in ``notebooks/`` (or the named
ones) with a fresh kernel each, its working directory the repository root, and writes to
``DIR`` (default ``results/notebooks/<run-id>/``):

* ``<name>.ipynb`` — the executed notebook, outputs included;
* ``<name>.html`` — the same, exported by nbconvert;
* ``<name>/fig-NN.png`` — every figure it displayed, in order;
* ``index.json`` — per notebook: parameters, seconds, figures, status.

**Parameters** work as in papermill: the cell tagged ``parameters`` holds the defaults;
:func:`inject_parameters` adds a cell tagged ``injected-parameters`` right after it with
the overrides (``name = repr(value)``), so the notebook reads them as if typed there. A
name that the parameters cell does not assign is an error (a typo would otherwise be
ignored). ``--quick`` sets ``quick = True``: every notebook then sizes its model runs
for seconds. ``--measured DIR`` is the measured run (``python -m bench run``) that
``json-vs-protobuf`` and ``model-vs-measured`` read; without it they use the newest one
under ``results/``. When there is none, ``--quick`` gives them the committed measured
sample ``results/samples/measured-quick/`` (a tiny real run, a few KB; both notebooks
say in their output that it is a sample, measured elsewhere) so that all four run; a full
run skips ``model-vs-measured`` instead.
``--measured-outage DIR`` is a measured run of the store outage for
``breakers-and-retries``. ``--calibration FILE`` costs the model in every notebook that
runs it; ``--codecs-csv FILE`` gives ``json-vs-protobuf`` a codec benchmark.
``-p NAME=VALUE`` (repeatable) sets any parameter, as a Python literal, in every notebook
whose parameters cell has ``NAME``; ``-p NOTEBOOK:NAME=VALUE`` in that one only.

**Committed notebooks carry no outputs**: ``python -m bench notebooks --check`` lists
any that do (exit status 1) — :func:`check_no_outputs`, also run by the test suite — and
``--strip`` removes them.

**Interactively**: ``python -m bench notebooks --lab`` (``make lab``) starts JupyterLab on
``notebooks/``, bound to 127.0.0.1, with ``--allow-root`` only when it runs as root
(:func:`lab_command`; JupyterLab refuses root without it).

Exit status: 0; 1 when a notebook failed (its partial outputs are still saved) or
``--check`` found outputs; 2 for bad input.
"""

from __future__ import annotations

import argparse
import ast
import base64
import json
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nbformat as _nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError

from bench._support.paths import REPO_ROOT
from chatcap.results import new_run_id

# nbformat and nbconvert have no type hints; typed as Any here rather than at every call.
nbformat: Any = _nbformat

ROOT = REPO_ROOT
NOTEBOOK_DIR = ROOT / "notebooks"
PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"
CELL_TIMEOUT_S = 1800

NOTEBOOKS = (
    "capacity-planning",
    "breakers-and-retries",
    "json-vs-protobuf",
    "model-vs-measured",
)
"""The notebooks in the order they run (each stands alone)."""

MEASURED_PARAM = {"json-vs-protobuf": "measured_dir", "model-vs-measured": "measured_dir"}
OUTAGE_PARAM = {"breakers-and-retries": "measured_outage_dir"}
CALIBRATION_PARAM = {
    "model-vs-measured": "calibration",
    "capacity-planning": "calibration",
    "json-vs-protobuf": "calibration",
}
CODECS_PARAM = {"json-vs-protobuf": "codecs_csv"}


class NotebookError(ValueError):
    """Bad input for the runner (a missing notebook, an unknown parameter)."""


# ---------------------------------------------------------------------------- parameters


def _tags(cell: Mapping[str, Any]) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def parameter_names(nb: Any) -> list[str]:
    """Names assigned in the cell tagged ``parameters`` (in order); empty without one."""
    for cell in nb.cells:
        if cell.cell_type == "code" and PARAMETERS_TAG in _tags(cell):
            names: list[str] = []
            for node in ast.parse(cell.source).body:
                targets = node.targets if isinstance(node, ast.Assign) else []
                if isinstance(node, ast.AnnAssign):
                    targets = [node.target]
                names += [t.id for t in targets if isinstance(t, ast.Name)]
            return names
    return []


def _literal(name: str, value: Any) -> str:
    if isinstance(value, Path):
        value = str(value)
    text = repr(value)
    try:
        if ast.literal_eval(text) != value:
            raise ValueError
    except (ValueError, SyntaxError):
        raise NotebookError(f"parameter {name} = {value!r}: not a Python literal") from None
    return text


def inject_parameters(nb: Any, params: Mapping[str, Any]) -> Any:
    """Return a copy of ``nb`` with a cell tagged ``injected-parameters`` after the
    ``parameters`` cell (at the top if there is none; an earlier injected cell is
    replaced). Raises :class:`NotebookError` for a name the parameters cell lacks."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    nb.cells = [c for c in nb.cells if INJECTED_TAG not in _tags(c)]
    if not params:
        return nb
    known = parameter_names(nb)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise NotebookError(
            f"unknown parameter(s) {', '.join(unknown)}; the notebook has: {', '.join(known)}"
        )
    source = "# Parameters\n" + "".join(f"{k} = {_literal(k, v)}\n" for k, v in params.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": [INJECTED_TAG]})
    at = next(
        (i + 1 for i, c in enumerate(nb.cells) if PARAMETERS_TAG in _tags(c)),
        0,
    )
    nb.cells.insert(at, cell)
    return nb


# ---------------------------------------------------------------------------- running


@dataclass
class NotebookRun:
    """What running one notebook produced."""

    name: str
    parameters: dict[str, Any]
    seconds: float = 0.0
    executed: Path | None = None
    html: Path | None = None
    figures: list[Path] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "parameters": self.parameters,
            "seconds": round(self.seconds, 2),
            "executed": str(self.executed) if self.executed else None,
            "html": str(self.html) if self.html else None,
            "figures": [str(p) for p in self.figures],
            "error": self.error,
        }


def execute_notebook(
    path: Path,
    out_dir: Path,
    params: Mapping[str, Any] | None = None,
    *,
    timeout_s: int = CELL_TIMEOUT_S,
    kernel_name: str = "python3",
    html: bool = True,
) -> NotebookRun:
    """Execute ``path`` with ``params`` injected (kernel started in the repository root,
    shut down at the end), then save the executed notebook, its HTML and its figures
    into ``out_dir``. A failing cell does not raise: the run's ``error`` says which, and
    what ran is saved all the same."""
    run = NotebookRun(path.stem, dict(params or {}))
    nb = inject_parameters(nbformat.read(path, as_version=4), run.parameters)
    client = NotebookClient(
        nb,
        timeout=timeout_s,
        kernel_name=kernel_name,
        resources={"metadata": {"path": str(ROOT)}},
    )
    started = time.monotonic()
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError) as exc:
        run.error = _first_line(exc)
    finally:
        run.seconds = time.monotonic() - started
    out_dir.mkdir(parents=True, exist_ok=True)
    run.executed = out_dir / f"{run.name}.ipynb"
    nbformat.write(nb, run.executed)
    run.figures = save_figures(nb, out_dir / run.name)
    if html:
        run.html = export_html(nb, out_dir / f"{run.name}.html")
    return run


def _first_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln and not ln.startswith(("-", " "))]
    return (errors[-1] if errors else lines[-1] if lines else type(exc).__name__).strip()


def save_figures(nb: Any, folder: Path) -> list[Path]:
    """Every ``image/png`` output of ``nb``, in order, as ``folder/fig-NN.png``."""
    paths: list[Path] = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "image/png" in data:
                folder.mkdir(parents=True, exist_ok=True)
                path = folder / f"fig-{len(paths) + 1:02d}.png"
                path.write_bytes(base64.b64decode(data["image/png"]))
                paths.append(path)
    return paths


def export_html(nb: Any, path: Path) -> Path:
    """The executed notebook as one self-contained HTML file (nbconvert's lab template)."""
    import nbconvert

    exporter: Any = nbconvert.HTMLExporter
    body, _ = exporter().from_notebook_node(nb)
    path.write_text(body, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------- outputs check


def check_no_outputs(paths: Iterable[Path]) -> list[str]:
    """One line per code cell that carries outputs or an execution count (committed
    notebooks must not); empty when all are clean."""
    problems = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        for i, cell in enumerate(nb.cells, start=1):
            if cell.cell_type != "code":
                continue
            if cell.get("outputs"):
                problems.append(f"{path}: cell {i} has {len(cell.outputs)} output(s)")
            elif cell.get("execution_count") is not None:
                problems.append(f"{path}: cell {i} has an execution count")
    return problems


def strip_outputs(paths: Iterable[Path]) -> list[Path]:
    """Remove outputs and execution counts in place; returns the files changed."""
    changed = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        dirty = False
        for cell in nb.cells:
            if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
                cell.outputs, cell.execution_count, dirty = [], None, True
        if dirty:
            nbformat.write(nb, path)
            changed.append(path)
    return changed


def committed_notebooks() -> list[Path]:
    return sorted(NOTEBOOK_DIR.glob("*.ipynb"))


# ---------------------------------------------------------------------------- JupyterLab


def lab_command(uid: int, python: str = sys.executable) -> list[str]:
    """The JupyterLab command line for a user ``uid``: the notebooks folder as its root,
    listening on 127.0.0.1 only; ``--allow-root`` for uid 0 alone, because JupyterLab
    refuses to start as root without it and the flag means nothing to anyone else."""
    cmd = [python, "-m", "jupyterlab", f"--ServerApp.root_dir={NOTEBOOK_DIR}", "--ip=127.0.0.1"]
    if uid == 0:
        cmd.append("--allow-root")
    return cmd


def start_lab() -> int:
    """Replace this process with JupyterLab (:func:`lab_command` for the current user)."""
    cmd = lab_command(os.getuid())
    print(f"[notebooks] {' '.join(cmd)}", flush=True)
    os.execv(cmd[0], cmd)
    return 1  # not reached: execv returns only by raising


# ---------------------------------------------------------------------------- command line


def plan_parameters(
    name: str,
    *,
    quick: bool,
    measured: Path | None,
    outage: Path | None,
    calibration: Path | None,
    codecs_csv: Path | None = None,
) -> dict[str, Any]:
    """The parameters the command line gives notebook ``name``."""
    params: dict[str, Any] = {"quick": True} if quick else {}
    if measured is not None and name in MEASURED_PARAM:
        params[MEASURED_PARAM[name]] = str(measured)
    if outage is not None and name in OUTAGE_PARAM:
        params[OUTAGE_PARAM[name]] = str(outage)
    if calibration is not None and name in CALIBRATION_PARAM:
        params[CALIBRATION_PARAM[name]] = str(calibration)
    if codecs_csv is not None and name in CODECS_PARAM:
        params[CODECS_PARAM[name]] = str(codecs_csv)
    return params


def parse_params(texts: Sequence[str], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["replications=2", "capacity-planning:duration_s=3.0"]`` → per notebook of
    ``names``, the parameters it gets: an unqualified NAME goes to every notebook whose
    parameters cell assigns it. Raises :class:`NotebookError` for a bad form, a value that
    is not a Python literal, an unknown notebook, or a NAME that no notebook has."""
    known = {n: parameter_names(nbformat.read(NOTEBOOK_DIR / f"{n}.ipynb", as_version=4))
             for n in names}  # fmt: skip
    out: dict[str, dict[str, Any]] = {n: {} for n in names}
    for text in texts:
        target, eq, raw = text.partition("=")
        book, colon, key = target.rpartition(":")
        key = key.strip()
        if not eq or not key.isidentifier():
            raise NotebookError(f"--param {text!r}: expected [NOTEBOOK:]NAME=VALUE")
        try:
            value = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            raise NotebookError(f"--param {text!r}: {raw!r} is not a Python literal") from None
        if colon and book not in known:
            raise NotebookError(f"--param {text!r}: no notebook {book!r} in this run")
        books = [book] if colon else [n for n in names if key in known[n]]
        if not books or any(key not in known[b] for b in books):
            raise NotebookError(f"--param {text!r}: no notebook in this run has {key!r}")
        for b in books:
            out[b][key] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench notebooks", description="run the notebooks headless"
    )
    p.add_argument("--quick", action="store_true", help="small model runs (seconds each)")
    p.add_argument("--only", action="append", choices=NOTEBOOKS, help="run only NAME")
    p.add_argument("--measured", type=Path, help="measured run folder (python -m bench run)")
    p.add_argument("--measured-outage", type=Path, help="measured run of the store outage")
    p.add_argument("--calibration", type=Path, help="calibration JSON for the model's costs")
    p.add_argument("--codecs-csv", type=Path, help="codecs.csv of bench codecs (json-vs-protobuf)")
    p.add_argument("--out", type=Path, help="output folder (default results/notebooks/<id>)")
    p.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="[NOTEBOOK:]NAME=VALUE",
        help="a parameter (Python literal) for every notebook that has NAME, or for one",
    )
    p.add_argument("--no-html", action="store_true", help="skip the HTML export")
    p.add_argument("--check", action="store_true", help="list committed notebooks with outputs")
    p.add_argument("--strip", action="store_true", help="strip outputs of committed notebooks")
    p.add_argument(
        "--lab",
        action="store_true",
        help="start JupyterLab on notebooks/ (127.0.0.1; --allow-root when run as root)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.lab:
        return start_lab()
    if args.check or args.strip:
        return _check_or_strip(args.strip)
    for opt in ("measured", "measured_outage", "calibration", "codecs_csv"):
        value = getattr(args, opt)
        if value is not None and not value.exists():
            print(f"error: --{opt.replace('_', '-')} {value}: no such path", file=sys.stderr)
            return 2
    from bench.analysis import is_sample, measured_run_for

    measured = args.measured.resolve() if args.measured else measured_run_for(None, args.quick)
    if measured is not None and is_sample(measured):
        print(f"[notebooks] no measured run under results/: the committed sample {measured}")
    created = datetime.now(UTC)
    out = args.out or ROOT / "results" / "notebooks" / new_run_id(created, "quick" * args.quick)
    names = list(args.only or NOTEBOOKS)
    try:
        extra = parse_params(args.param, names)
    except NotebookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    runs = []
    for name in names:
        if name == "model-vs-measured" and measured is None:
            print(
                f"[notebooks] {name}: skipped — no measured run (python -m bench run; "
                "--quick uses the committed sample)"
            )
            continue
        params = plan_parameters(
            name,
            quick=args.quick,
            measured=measured,
            outage=args.measured_outage.resolve() if args.measured_outage else None,
            calibration=args.calibration.resolve() if args.calibration else None,
            codecs_csv=args.codecs_csv.resolve() if args.codecs_csv else None,
        )
        params.update(extra[name])
        print(f"[notebooks] {name} {params or ''} …", end="", flush=True)
        run = execute_notebook(NOTEBOOK_DIR / f"{name}.ipynb", out, params, html=not args.no_html)
        runs.append(run)
        status = "ok" if run.ok else f"FAILED: {run.error}"
        print(f" {run.seconds:.1f} s, {len(run.figures)} figure(s) — {status}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    index = {"created_utc": created.isoformat(), "runs": [r.to_json() for r in runs]}
    (out / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    print(f"[notebooks] {sum(r.ok for r in runs)}/{len(runs)} ok → {out}")
    return 0 if all(r.ok for r in runs) else 1


def _check_or_strip(strip: bool) -> int:
    paths = committed_notebooks()
    if strip:
        for path in strip_outputs(paths):
            print(f"stripped {path}")
        return 0
    problems = check_no_outputs(paths)
    for line in problems:
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
