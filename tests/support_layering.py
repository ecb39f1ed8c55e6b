"""The import graph of the project's packages, read from source with ``ast`` (nothing is imported).

``scan(root)`` parses every ``.py`` under the given package folders and records each import
statement: who imports what, on which line, whether inside a function (it still counts: the
import runs the first time the function does), and whether under ``if TYPE_CHECKING:``
(it never runs). Relative imports are resolved against the importer's package, and
``from pkg import name`` points at the submodule ``pkg.name`` when there is one, else at
``pkg`` itself. ``importlib.import_module("literal")`` counts as an import; a module name
built at run time (``bench/cli.py``'s pass-through table) cannot be seen and does not.

The rules themselves are plain functions over a :class:`Tree`, each returning the
violations as readable lines (``path:line: importer imports target``), so that
``tests/test_layering.py`` can assert they are empty and plant each kind in a tiny tree.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

#: The top-level names that are ours: an import of one of these is a project import.
OURS = ("chatcap", "server", "sim", "bench", "tests", "notebooks")
#: The folders whose modules the layering test reads (tests/ is ours but not read).
SCANNED = ("chatcap", "server", "sim", "bench", "notebooks")
#: Generated code: no imports of interest, and excluded from lint as well.
SKIPPED = ("chatcap/protocol/chat_pb2.py",)

#: Modules that patch the standard library for gevent on import (``import locust`` runs
#: ``gevent.monkey.patch_all()``).
GEVENT_FAMILY = ("gevent", "locust", "geventhttpclient")
#: Modules that run on an asyncio event loop. The bare ``websockets`` package counts: its
#: top-level ``connect``/``serve`` are the asyncio implementation; ``websockets.sync``,
#: ``.exceptions``, ``.frames`` … do not.
ASYNCIO_FAMILY = ("asyncio", "uvloop", "websockets.asyncio", "websockets.legacy")
ASYNCIO_EXACT = ("websockets",)


@dataclass(frozen=True)
class Import:
    """One imported module, as seen in one statement of one module."""

    importer: str
    target: str
    path: str  # the importer's file, relative to the scanned root
    line: int
    in_function: bool = False
    type_only: bool = False

    def describe(self) -> str:
        where = " (inside a function)" if self.in_function else ""
        return f"{self.path}:{self.line}: {self.importer} imports {self.target}{where}"


@dataclass(repr=False)
class Tree:
    """The modules found under a root and every import statement they hold."""

    root: Path
    modules: dict[str, str] = field(default_factory=dict)  # dotted name -> relative path
    imports: list[Import] = field(default_factory=list)

    def __repr__(self) -> str:  # pytest prints fixtures of a failing test
        return f"Tree({len(self.modules)} modules, {len(self.imports)} imports)"

    def of(self, importer: str) -> list[Import]:
        return [i for i in self.imports if i.importer == importer]


def top(name: str) -> str:
    return name.partition(".")[0]


def is_within(name: str, prefix: str) -> bool:
    """``name`` is ``prefix`` or a submodule of it."""
    return name == prefix or name.startswith(prefix + ".")


def is_gevent(target: str) -> bool:
    return any(is_within(target, p) for p in GEVENT_FAMILY)


def is_asyncio(target: str) -> bool:
    return target in ASYNCIO_EXACT or any(is_within(target, p) for p in ASYNCIO_FAMILY)


# --- reading -------------------------------------------------------------------------


def module_name(relative: Path) -> str:
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def scan(root: Path, packages: Iterable[str] = SCANNED, skipped: Iterable[str] = SKIPPED) -> Tree:
    """Every module under ``root/<package>`` for each package, with its imports."""
    tree = Tree(root)
    skip = set(skipped)
    files: list[tuple[str, Path]] = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            relative = path.relative_to(root)
            if "__pycache__" in relative.parts:
                continue
            name = module_name(relative)
            tree.modules[name] = relative.as_posix()  # a skipped module can still be imported
            if relative.as_posix() not in skip:
                files.append((name, path))
    for name, path in files:
        source = path.read_text(encoding="utf-8")
        reader = _Reader(tree, name, path.name == "__init__.py")
        reader.visit(ast.parse(source, filename=str(path)))
    return tree


class _Reader(ast.NodeVisitor):
    def __init__(self, tree: Tree, name: str, is_package: bool) -> None:
        self.tree, self.name = tree, name
        self.package = name if is_package else name.rpartition(".")[0]
        self.depth = 0
        self.type_only = False
        self.seen: set[tuple[str, int]] = set()

    def add(self, target: str, node: ast.AST) -> None:
        line = getattr(node, "lineno", 0)
        if (target, line) in self.seen:  # ``from m import a, b``: one import of m
            return
        self.seen.add((target, line))
        path = self.tree.modules[self.name]
        self.tree.imports.append(
            Import(self.name, target, path, line, self.depth > 0, self.type_only)
        )

    def ours(self, dotted: str) -> str:
        """The deepest known module that ``import dotted`` names (itself if none is known)."""
        parts = dotted.split(".")
        for n in range(len(parts), 0, -1):
            candidate = ".".join(parts[:n])
            if candidate in self.tree.modules:
                return candidate
        return dotted

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.add(self.ours(alias.name), node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base_parts = self.package.split(".") if self.package else []
            base_parts = base_parts[: len(base_parts) - (node.level - 1)]
            base = ".".join([*base_parts, *([node.module] if node.module else [])])
        else:
            base = node.module or ""
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            self.add(submodule if submodule in self.tree.modules else self.ours(base), node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if called in ("import_module", "__import__") and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                self.add(self.ours(first.value), node)
        self.generic_visit(node)

    def _inside(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _inside

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        guarded = (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        )
        if not guarded:
            self.generic_visit(node)
            return
        self.visit(test)
        before, self.type_only = self.type_only, True
        for child in node.body:
            self.visit(child)
        self.type_only = before
        for child in node.orelse:
            self.visit(child)


# --- rules ---------------------------------------------------------------------------


def forbidden_imports(
    tree: Tree,
    importer_package: str,
    forbidden: Iterable[str],
    allowed: Callable[[Import], bool] = lambda _: False,
) -> list[str]:
    """Imports from modules of ``importer_package`` into any of the ``forbidden`` packages."""
    banned = tuple(forbidden)
    return [
        i.describe()
        for i in tree.imports
        if top(i.importer) == importer_package
        and any(is_within(i.target, b) for b in banned)
        and not allowed(i)
    ]


def runtime_edges(tree: Tree) -> dict[str, list[Import]]:
    """Project module -> the imports of project modules that run (TYPE_CHECKING ones don't)."""
    edges: dict[str, list[Import]] = {name: [] for name in tree.modules}
    for i in tree.imports:
        if i.target in tree.modules and i.target != i.importer and not i.type_only:
            edges[i.importer].append(i)
    return edges


def cycles(tree: Tree) -> list[list[Import]]:
    """One import cycle per strongly connected group of modules, each as its chain of imports.

    An import inside a function closes a cycle as well as a top-level one: the cycle is
    then only hidden until that function runs, in whatever order the modules were loaded.
    """
    edges = runtime_edges(tree)
    found = []
    for group in _strongly_connected(edges):
        if len(group) > 1:
            found.append(_a_cycle_through(min(group), edges, set(group)))
    return sorted(found, key=lambda chain: chain[0].importer)


def describe_cycle(chain: list[Import]) -> str:
    names = " -> ".join([chain[0].importer, *(i.target for i in chain)])
    return names + "\n" + "\n".join("    " + i.describe() for i in chain)


def _strongly_connected(edges: dict[str, list[Import]]) -> Iterator[list[str]]:
    """Tarjan's algorithm, iterative (the graph is a few hundred modules)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(edges[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                t = child.target
                if t not in index:
                    index[t] = low[t] = len(index)
                    stack.append(t)
                    on_stack.add(t)
                    work.append((t, iter(edges[t])))
                elif t in on_stack:
                    low[node] = min(low[node], index[t])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                yield group


def _a_cycle_through(start: str, edges: dict[str, list[Import]], group: set[str]) -> list[Import]:
    """The shortest chain of imports from ``start`` back to itself, within ``group``."""
    came_by: dict[str, Import] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for i in edges[node]:
                if i.target not in group:
                    continue
                if i.target == start:
                    chain = [i]
                    while chain[0].importer != start:
                        chain.insert(0, came_by[chain[0].importer])
                    return chain
                if i.target not in came_by:
                    came_by[i.target] = i
                    following.append(i.target)
        frontier = following
    raise AssertionError(f"{start} is in a cycle group but no cycle was found")  # unreachable


def meeting_in_one_module(tree: Tree) -> list[str]:
    """Modules that import both a gevent-family and an asyncio-family module themselves."""
    out = []
    for name in sorted(tree.modules):
        mine = [i for i in tree.of(name) if not i.type_only]
        gevent = [i for i in mine if is_gevent(i.target)]
        asyncio = [i for i in mine if is_asyncio(i.target)]
        if gevent and asyncio:
            out.append(f"{name}: {gevent[0].describe()}; {asyncio[0].describe()}")
    return out


def loaded_with(tree: Tree, start: str) -> dict[str, list[Import]]:
    """Every project module that loading ``start`` can load, each with the chain that loads it.

    Follows top-level and in-function imports alike (what a process may end up importing),
    and the packages above each module (``import bench.x`` runs ``bench/__init__.py``).
    """
    edges = runtime_edges(tree)
    reached: dict[str, list[Import]] = {start: []}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            steps = list(edges[node])
            parent = node.rpartition(".")[0]
            if parent in tree.modules:
                steps.append(Import(node, parent, tree.modules[node], 0))
            for i in steps:
                if i.target not in reached:
                    reached[i.target] = [*reached[node], i]
                    following.append(i.target)
        frontier = following
    return reached


def meeting_in_one_process(tree: Tree) -> list[str]:
    """Modules whose loading can bring both a gevent-family and an asyncio-family import.

    ``import locust`` patches the whole process for gevent, so the two must not meet through
    a chain of project imports either: a module the Locust file can load must not import
    asyncio, and a module the server can load must not import locust.
    """
    gevent = _first_import_by_module(tree, is_gevent)
    asyncio = _first_import_by_module(tree, is_asyncio)
    out = []
    for start in sorted(tree.modules):
        loaded = loaded_with(tree, start)
        by_gevent = sorted(loaded.keys() & gevent.keys())
        by_asyncio = sorted(loaded.keys() & asyncio.keys())
        if by_gevent and by_asyncio:
            g, a = by_gevent[0], by_asyncio[0]
            out.append(
                f"{start} loads {_route(start, loaded[g])} ({gevent[g].describe()}) "
                f"and {_route(start, loaded[a])} ({asyncio[a].describe()})"
            )
    return out


def _route(start: str, chain: list[Import]) -> str:
    return " -> ".join([start, *(i.target for i in chain)])


def _first_import_by_module(tree: Tree, family: Callable[[str], bool]) -> dict[str, Import]:
    first: dict[str, Import] = {}
    for i in tree.imports:
        if family(i.target) and not i.type_only:
            first.setdefault(i.importer, i)
    return first
