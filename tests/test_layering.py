"""The layering rules of docs/design.md, checked on the source (an AST walk; nothing is imported).

Floors, from the bottom: ``chatcap`` (pure) · ``server`` (asyncio) and ``sim`` (SimPy) ·
``bench`` (Locust, gevent) · ``notebooks``. What each may import:

- ``chatcap``: nothing of ours (``server``, ``sim``, ``bench``, ``tests``, ``notebooks``).
- ``server``: ``chatcap`` only — never ``sim``, ``bench``, ``tests``.
- ``sim``: ``chatcap`` only — never ``server`` (the model is built from the core, not from
  the server's code), ``bench``, ``tests``.
- ``bench``: ``chatcap`` and ``sim`` (today ``sim``, ``sim.api``, ``sim.calibration``,
  ``sim.stats``, ``sim.theory``); ``server`` only to measure its parts: the calibration
  module imports ``server.store`` (it times real commits). It runs the server as a
  subprocess (``python -m server``), which is not an import. Never ``tests``.
- gevent (``import locust`` patches the process) and asyncio (``asyncio``, ``uvloop``,
  ``websockets.asyncio``) never meet: not in one module, and not through a chain of project
  imports (top-level or inside functions), so the Locust file loads no asyncio code and the
  server loads no Locust code.
- No import cycle among the project's modules; an import inside a function closes a cycle
  too. ``if TYPE_CHECKING:`` imports never run, so they count for the floors but not for
  cycles or for gevent/asyncio.

The checker is ``tests/support_layering.py``; the ``test_checker_*`` cases below plant each
kind of violation in a tiny tree and show that it is reported.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.support_layering import (
    Import,
    Tree,
    cycles,
    describe_cycle,
    forbidden_imports,
    loaded_with,
    meeting_in_one_module,
    meeting_in_one_process,
    scan,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def project() -> Tree:
    return scan(ROOT)


def bench_measures_server_parts(i: Import) -> bool:
    """The one documented way in: calibration times the real store."""
    calibration = any(part.startswith("calibrat") for part in i.importer.split("."))
    return calibration and i.target == "server.store"


def lines(found: list[str]) -> str:
    return "\n" + "\n".join(found)


# --- the project -----------------------------------------------------------------------


def test_every_package_is_read(project: Tree) -> None:
    for package in ("chatcap", "server", "sim", "bench"):
        assert any(name.startswith(package + ".") for name in project.modules), package
    assert "chatcap.protocol.chat_pb2" in project.modules  # known, though not parsed
    assert any(i.target == "bench.load.users" for i in project.of("bench.locustfile"))


def test_chatcap_imports_nothing_of_ours(project: Tree) -> None:
    found = forbidden_imports(project, "chatcap", ("server", "sim", "bench", "tests", "notebooks"))
    assert not found, lines(found)


def test_server_imports_neither_sim_nor_bench(project: Tree) -> None:
    found = forbidden_imports(project, "server", ("sim", "bench", "tests", "notebooks"))
    assert not found, lines(found)


def test_sim_imports_neither_server_nor_bench(project: Tree) -> None:
    found = forbidden_imports(project, "sim", ("server", "bench", "tests", "notebooks"))
    assert not found, lines(found)


def test_bench_imports_the_server_only_where_calibration_times_the_store(project: Tree) -> None:
    found = forbidden_imports(
        project, "bench", ("server", "tests", "notebooks"), allowed=bench_measures_server_parts
    )
    assert not found, lines(found)


def test_no_module_imports_both_gevent_and_asyncio(project: Tree) -> None:
    found = meeting_in_one_module(project)
    assert not found, lines(found)


def test_nothing_the_locust_file_can_load_imports_asyncio(project: Tree) -> None:
    loaded = loaded_with(project, "bench.locustfile")
    assert "bench.load.users" in loaded
    found = [
        i.describe()
        for i in project.imports
        if i.importer in loaded and not i.type_only and i.target.split(".")[0] == "asyncio"
    ]
    assert not found, lines(found)


def test_gevent_and_asyncio_never_meet_through_project_imports(project: Tree) -> None:
    found = meeting_in_one_process(project)
    assert not found, lines(found)


def test_the_project_has_no_import_cycle(project: Tree) -> None:
    found = [describe_cycle(chain) for chain in cycles(project)]
    assert not found, lines(found)


# --- the checker, on planted trees -----------------------------------------------------


def plant(tmp_path: Path, files: dict[str, str], skipped: tuple[str, ...] = ()) -> Tree:
    for relative, source in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    packages = sorted({relative.split("/")[0] for relative in files})
    return scan(tmp_path, packages, skipped)


def test_checker_reports_chatcap_importing_the_server(tmp_path: Path) -> None:
    tree = plant(
        tmp_path,
        {
            "chatcap/__init__.py": "",
            "chatcap/rules.py": "import json\n\nfrom server.app import ChatServer\n",
            "server/__init__.py": "",
            "server/app.py": "from chatcap import rules\n",
        },
    )
    found = forbidden_imports(tree, "chatcap", ("server",))
    assert found == ["chatcap/rules.py:3: chatcap.rules imports server.app"]
    assert forbidden_imports(tree, "server", ("sim", "bench")) == []


def test_checker_reports_a_layering_import_inside_a_function_or_for_types_only(
    tmp_path: Path,
) -> None:
    tree = plant(
        tmp_path,
        {
            "sim/__init__.py": "",
            "sim/model.py": """\
                from typing import TYPE_CHECKING

                if TYPE_CHECKING:
                    from server.writer import Writer

                def run():
                    import server.store
                """,
        },
    )
    assert forbidden_imports(tree, "sim", ("server",)) == [
        "sim/model.py:4: sim.model imports server.writer",
        "sim/model.py:7: sim.model imports server.store (inside a function)",
    ]


def test_checker_allows_only_what_the_allowance_names(tmp_path: Path) -> None:
    tree = plant(
        tmp_path,
        {
            "bench/micro/calibrate.py": "from server.store import StoreConnection\n",
            "bench/run.py": "from server.store import StoreConnection\n",
            "bench/probe.py": "from server.app import ChatServer\n",
        },
    )
    found = forbidden_imports(tree, "bench", ("server",), allowed=bench_measures_server_parts)
    assert found == [
        "bench/probe.py:1: bench.probe imports server.app",
        "bench/run.py:1: bench.run imports server.store",
    ]


def test_checker_reports_a_cycle_closed_by_an_import_inside_a_function(tmp_path: Path) -> None:
    tree = plant(
        tmp_path,
        {
            "bench/__init__.py": "",
            "bench/a.py": "from bench import b\n",
            "bench/b.py": "def main():\n    from . import a\n    return a\n",
            "bench/c.py": "from bench.a import thing\n",  # into the cycle, not part of it
        },
    )
    (chain,) = cycles(tree)
    assert [(i.importer, i.target, i.in_function) for i in chain] == [
        ("bench.a", "bench.b", False),
        ("bench.b", "bench.a", True),
    ]
    assert describe_cycle(chain).splitlines() == [
        "bench.a -> bench.b -> bench.a",
        "    bench/a.py:1: bench.a imports bench.b",
        "    bench/b.py:2: bench.b imports bench.a (inside a function)",
    ]


def test_checker_finds_a_longer_cycle_through_a_package_and_import_module(tmp_path: Path) -> None:
    tree = plant(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.x import f\n",  # pkg -> pkg.x
            "pkg/x.py": "import importlib\n\ndef f():\n    importlib.import_module('pkg.y')\n",
            "pkg/y.py": "from pkg import f\n",  # f is a name, not a submodule: pkg.y -> pkg
        },
    )
    assert [describe_cycle(c).splitlines()[0] for c in cycles(tree)] == [
        "pkg -> pkg.x -> pkg.y -> pkg"
    ]


def test_checker_sees_no_cycle_in_type_checking_imports_or_a_package_s_submodules(
    tmp_path: Path,
) -> None:
    tree = plant(
        tmp_path,
        {
            "server/__init__.py": "",
            "server/app.py": "from server.session import Session\n",
            "server/session.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from server.app import App\n"
            ),
            # a package re-exporting its parts, whose parts import each other by full name
            "bench/analysis/__init__.py": "from bench.analysis.plots import plot\n",
            "bench/analysis/plots.py": "from bench.analysis.stats import mean\n",
            "bench/analysis/stats.py": "import math\n",
        },
    )
    assert cycles(tree) == []


def test_checker_resolves_relative_imports_and_skipped_modules(tmp_path: Path) -> None:
    tree = plant(
        tmp_path,
        {
            "chatcap/__init__.py": "",
            "chatcap/protocol/__init__.py": "from .codec import Codec\nfrom . import gen_pb2\n",
            "chatcap/protocol/codec.py": "from ..policy import retry\nfrom .. import scenario\n",
            "chatcap/protocol/gen_pb2.py": "import server\n",  # skipped: not read
            "chatcap/policy/__init__.py": "",
            "chatcap/policy/retry.py": "",
            "chatcap/scenario.py": "",
        },
        skipped=("chatcap/protocol/gen_pb2.py",),
    )
    assert [i.target for i in tree.of("chatcap.protocol")] == [
        "chatcap.protocol.codec",
        "chatcap.protocol.gen_pb2",
    ]
    assert [i.target for i in tree.of("chatcap.protocol.codec")] == [
        "chatcap.policy.retry",
        "chatcap.scenario",
    ]
    assert tree.of("chatcap.protocol.gen_pb2") == []


def test_checker_reports_gevent_and_asyncio_in_one_module(tmp_path: Path) -> None:
    tree = plant(
        tmp_path,
        {
            "bench/users.py": "import gevent\n\ndef later():\n    import asyncio\n",
            "bench/client.py": "from websockets.asyncio.client import connect\n",
            "bench/sync_client.py": "import locust\nfrom websockets.sync.client import connect\n",
        },
    )
    assert meeting_in_one_module(tree) == [
        "bench.users: bench/users.py:1: bench.users imports gevent; "
        "bench/users.py:4: bench.users imports asyncio (inside a function)"
    ]


def test_checker_reports_gevent_and_asyncio_meeting_through_a_chain_of_imports(
    tmp_path: Path,
) -> None:
    tree = plant(
        tmp_path,
        {
            "bench/__init__.py": "",
            "bench/locustfile.py": "from bench.users import User\n",
            "bench/users.py": "from locust import task\ndef f():\n    from bench import helpers\n",
            "bench/helpers.py": "import uvloop\n",
            "bench/apart.py": "import asyncio\n",  # loaded by nothing gevent: fine
        },
    )
    found = meeting_in_one_process(tree)
    assert [line.split(" loads ")[0] for line in found] == ["bench.locustfile", "bench.users"]
    assert found[0] == (
        "bench.locustfile loads bench.locustfile -> bench.users "
        "(bench/users.py:1: bench.users imports locust) and "
        "bench.locustfile -> bench.users -> bench.helpers "
        "(bench/helpers.py:1: bench.helpers imports uvloop)"
    )


def test_checker_counts_a_package_s_init_as_loaded_with_its_modules(tmp_path: Path) -> None:
    tree = plant(
        tmp_path,
        {
            "bench/__init__.py": "import asyncio\n",
            "bench/locustfile.py": "import locust\n",
        },
    )
    assert [line.split(" loads ")[0] for line in meeting_in_one_process(tree)] == [
        "bench.locustfile"
    ]
