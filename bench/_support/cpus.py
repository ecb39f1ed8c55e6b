"""Which CPUs the server and the load generator run on, so that neither steals the other's core.

A benchmark that lets the server and its load generator share cores measures both at once:
the generator's CPU shows up as server latency and the server's as generator lag. Each
command that starts both (``bench run``, ``bench generator``, ``bench calibrate``,
``bench regress``, the demo) plans two CPU sets with :func:`plan_cpus` and pins each side
with :func:`pinned_preexec` (a child, before it execs, so all its threads and children
inherit the set) or :func:`pin_current` / :func:`pinned` (this process, when it is itself
one side, or while the clients it starts are).

Defaults: the server gets the last available CPU, the generator all the others. With one
CPU available, or when the user asks for overlapping sets on purpose, both run where asked,
:attr:`CpuPlan.isolated` is False and :attr:`CpuPlan.note` says why in one sentence, for a
result row's ``note``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from bench._support.args import BadInput


@dataclass(frozen=True)
class CpuPlan:
    """The server's and the generator's CPU sets (sorted ids) and whether they are apart."""

    server: tuple[int, ...]
    generator: tuple[int, ...]
    isolated: bool
    note: str

    def describe(self) -> dict[str, Any]:
        """For manifests, e.g.
        ``{"server_cpus": "1", "generator_cpus": "0", "isolated": True, "note": ""}``."""
        return {
            "server_cpus": format_cpus(self.server),
            "generator_cpus": format_cpus(self.generator),
            "isolated": self.isolated,
            "note": self.note,
        }

    def server_cores(self) -> int:
        """How many cores the server may use (what the model is told)."""
        return len(self.server)


def available_cpus() -> tuple[int, ...]:
    """The CPUs this process may run on, sorted."""
    return tuple(sorted(os.sched_getaffinity(0)))


def format_cpus(cpus: Sequence[int]) -> str:
    """``(0, 1, 2, 5)`` → ``"0-2,5"`` (the kernel's cpu-list format, as taskset prints it)."""
    ids = sorted(set(cpus))
    parts: list[str] = []
    start = 0
    while start < len(ids):
        end = start
        while end + 1 < len(ids) and ids[end + 1] == ids[end] + 1:
            end += 1
        parts.append(str(ids[start]) if end == start else f"{ids[start]}-{ids[end]}")
        start = end + 1
    return ",".join(parts)


def parse_cpus(text: str, option: str, available: Sequence[int]) -> tuple[int, ...]:
    """``"0"``, ``"0-3"``, ``"1,3,5-7"`` → sorted ids; anything else, or a CPU not in
    ``available``, is :class:`BadInput` naming ``option``, the value and the allowed CPUs."""
    allowed = format_cpus(available)

    def bad(why: str) -> BadInput:
        return BadInput(f"{option} {text!r}: {why}; allowed CPUs: {allowed}")

    cpus: set[int] = set()
    for item in (part.strip() for part in text.split(",")):
        low, dash, high = item.partition("-")
        try:
            first, last = int(low), int(high if dash else low)
        except ValueError:
            raise bad("expected CPU ids such as 0, 0-3 or 1,3,5-7") from None
        if first < 0 or last < first:
            raise bad(f"{item!r} is not a range of CPU ids")
        cpus.update(range(first, last + 1))
    missing = sorted(cpus - set(available))
    if missing:
        raise bad(f"CPU {format_cpus(missing)} not available to this process")
    return tuple(sorted(cpus))


def plan_cpus(
    server: str | None = None,
    generator: str | None = None,
    available: Sequence[int] | None = None,
) -> CpuPlan:
    """The CPU plan from ``--server-cpus`` / ``--generator-cpus`` text (None = default).

    Defaults: the server on the last available CPU, the generator on the others (or, when
    only the server's set is given, on every available CPU outside it; when only the
    generator's, the server on the CPUs outside that). Sets that cannot be kept apart are
    allowed — a user may share on purpose — but the plan says so.
    """
    cpus = tuple(sorted(available_cpus() if available is None else available))
    server_set = parse_cpus(server, "--server-cpus", cpus) if server is not None else None
    generator_set = (
        parse_cpus(generator, "--generator-cpus", cpus) if generator is not None else None
    )
    if server_set is None:
        server_set = (_rest(cpus, generator_set) if generator_set else ()) or cpus[-1:]
    if generator_set is None:
        generator_set = _rest(cpus, server_set) or server_set
    return CpuPlan(server_set, generator_set, *_isolation(server_set, generator_set, cpus))


def _rest(cpus: tuple[int, ...], taken: tuple[int, ...]) -> tuple[int, ...]:
    """The CPUs outside ``taken``, sorted."""
    return tuple(c for c in cpus if c not in taken)


def _isolation(
    server: tuple[int, ...], generator: tuple[int, ...], cpus: tuple[int, ...]
) -> tuple[bool, str]:
    shared = sorted(set(server) & set(generator))
    if not shared:
        return True, ""
    if len(cpus) == 1:
        return False, (
            f"not isolated: only CPU {cpus[0]} is available, "
            "so the server and the load generator share it"
        )
    return False, (
        f"not isolated: the server ({_cpus_text(server)}) and the load generator "
        f"({_cpus_text(generator)}) share {_cpus_text(shared)}"
    )


def _cpus_text(cpus: Sequence[int]) -> str:
    """``CPU 1`` or ``CPUs 0-1``."""
    return f"CPU{'s' if len(cpus) > 1 else ''} {format_cpus(cpus)}"


def add_cpu_arguments(parser: argparse.ArgumentParser) -> None:
    """``--server-cpus`` and ``--generator-cpus``: kernel cpu-list text, checked by
    :func:`plan_cpus` when :func:`cpu_plan_from_args` reads them."""
    parser.add_argument(
        "--server-cpus",
        metavar="LIST",
        help="CPUs the server runs on, e.g. 0 or 0-3 or 1,3,5-7 "
        "(default: the last available CPU, or those the generator does not use)",
    )
    parser.add_argument(
        "--generator-cpus",
        metavar="LIST",
        help="CPUs the load generator runs on (default: every available CPU "
        "the server does not use; the server's CPU when it is the only one)",
    )


def cpu_plan_from_args(args: argparse.Namespace) -> CpuPlan:
    """The plan from a namespace parsed with :func:`add_cpu_arguments` (missing = default)."""
    return plan_cpus(getattr(args, "server_cpus", None), getattr(args, "generator_cpus", None))


def pin_current(cpus: Sequence[int]) -> None:
    """Pin this process (its threads started from now on inherit the set)."""
    os.sched_setaffinity(0, set(cpus))


@contextlib.contextmanager
def pinned(cpus: Sequence[int]) -> Iterator[None]:
    """Pin this process for a ``with`` block, then give it back the set it had: an
    orchestrator that is one side for a while (its client subprocesses inherit the set)
    and a test process calling a command in-process both stay as they were after."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(cpus))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def pinned_preexec(cpus: Sequence[int]) -> Callable[[], None]:
    """A ``subprocess.Popen(preexec_fn=…)`` that pins the child before it execs, so every
    thread and child process it makes inherits the set."""
    wanted = frozenset(cpus)

    def pin() -> None:
        os.sched_setaffinity(0, wanted)

    return pin


def affinity_of(pid: int) -> tuple[int, ...]:
    """The CPUs a running process may use, sorted (what its ``Cpus_allowed_list`` says)."""
    return tuple(sorted(os.sched_getaffinity(pid)))
