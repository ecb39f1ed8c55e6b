"""bench._support.cpus: cpu-list parsing and its errors, the default split of the server and
the generator, the plan's note when they cannot be kept apart, the CLI options, and a real
child pinned before exec reading its own affinity back."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from bench._support.args import BadInput, OneLineParser
from bench._support.cpus import (
    CpuPlan,
    add_cpu_arguments,
    affinity_of,
    available_cpus,
    cpu_plan_from_args,
    format_cpus,
    parse_cpus,
    pin_current,
    pinned,
    pinned_preexec,
    plan_cpus,
)


def test_parse_cpus_reads_single_ids_ranges_and_lists_sorted() -> None:
    available = range(8)
    assert parse_cpus("0", "--server-cpus", available) == (0,)
    assert parse_cpus("0-3", "--server-cpus", available) == (0, 1, 2, 3)
    assert parse_cpus("7, 1,3,5-6", "--server-cpus", available) == (1, 3, 5, 6, 7)
    assert parse_cpus("2,2-3", "--server-cpus", available) == (2, 3)


@pytest.mark.parametrize("text", ["", "a", "1-", "-1", "3-1", "1,,2", "0x1"])
def test_parse_cpus_rejects_malformed_text_naming_option_value_and_allowed(text: str) -> None:
    with pytest.raises(BadInput) as caught:
        parse_cpus(text, "--generator-cpus", (0, 1))
    message = str(caught.value)
    assert message.startswith(f"--generator-cpus {text!r}:")
    assert message.endswith("allowed CPUs: 0-1")
    assert "\n" not in message


def test_parse_cpus_rejects_a_cpu_this_process_may_not_use() -> None:
    with pytest.raises(BadInput, match=r"--server-cpus '99': CPU 99 not available.*0-1$"):
        parse_cpus("99", "--server-cpus", (0, 1))


def test_format_cpus_writes_the_kernel_cpu_list_form() -> None:
    assert format_cpus((5, 0, 1, 2)) == "0-2,5"
    assert format_cpus((3,)) == "3"
    assert format_cpus(()) == ""


def test_default_on_two_cpus_puts_the_server_on_the_last_and_the_generator_on_the_other() -> None:
    plan = plan_cpus(available=(0, 1))
    assert plan == CpuPlan(server=(1,), generator=(0,), isolated=True, note="")
    assert plan.describe() == {
        "server_cpus": "1",
        "generator_cpus": "0",
        "isolated": True,
        "note": "",
    }
    assert plan.server_cores() == 1


def test_default_on_one_cpu_shares_it_and_says_so() -> None:
    plan = plan_cpus(available=(3,))
    assert (plan.server, plan.generator, plan.isolated) == ((3,), (3,), False)
    assert "only CPU 3 is available" in plan.note


def test_a_given_server_set_leaves_the_rest_to_the_generator_and_vice_versa() -> None:
    assert plan_cpus(server="0-1", available=range(4)).generator == (2, 3)
    assert plan_cpus(generator="1-3", available=range(4)).server == (0,)
    both = plan_cpus(server="0", generator="2", available=range(4))
    assert (both.server, both.generator, both.isolated) == ((0,), (2,), True)


def test_overlapping_sets_are_allowed_but_not_isolated_with_a_note() -> None:
    plan = plan_cpus(server="0-1", generator="1", available=(0, 1))
    assert not plan.isolated
    assert plan.note == (
        "not isolated: the server (CPUs 0-1) and the load generator (CPU 1) share CPU 1"
    )


def test_a_server_set_taking_every_cpu_leaves_the_generator_sharing_it() -> None:
    plan = plan_cpus(server="0-1", available=(0, 1))
    assert plan.generator == (0, 1)
    assert not plan.isolated
    assert plan.note.endswith("share CPUs 0-1")


def test_cli_options_reach_the_plan_and_bad_values_are_one_line() -> None:
    parser = OneLineParser()
    add_cpu_arguments(parser)
    allowed = available_cpus()
    last = str(allowed[-1])
    plan = cpu_plan_from_args(parser.parse_args(["--server-cpus", last]))
    assert plan.server == (allowed[-1],)
    with pytest.raises(BadInput, match=r"^--server-cpus '9999': .*allowed CPUs: "):
        cpu_plan_from_args(parser.parse_args(["--server-cpus", "9999"]))
    assert cpu_plan_from_args(argparse.Namespace()) == plan_cpus()


def test_pinned_preexec_pins_the_child_before_exec() -> None:
    cpu = available_cpus()[-1]
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
        preexec_fn=pinned_preexec([cpu]),
        capture_output=True,
        text=True,
        check=True,
    )
    assert child.stdout.strip() == f"[{cpu}]"


def test_a_pinned_child_and_its_children_show_the_set_in_proc_status() -> None:
    cpu = available_cpus()[0]
    # The child starts a grandchild and both wait on stdin, so /proc can be read while they live.
    script = (
        "import subprocess, sys; "
        "g = subprocess.Popen([sys.executable, '-c', 'import sys; sys.stdin.read()'], "
        "stdin=subprocess.PIPE); print(g.pid, flush=True); sys.stdin.read(); "
        "g.stdin.close(); g.wait()"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script],
        preexec_fn=pinned_preexec([cpu]),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdin is not None and child.stdout is not None
        try:
            grandchild = int(child.stdout.readline())
            for pid in (child.pid, grandchild):
                assert _cpus_allowed_list(pid) == str(cpu)
                assert affinity_of(pid) == (cpu,)
        finally:
            child.stdin.close()
            child.wait(timeout=10)


def test_pin_current_pins_this_process() -> None:
    before = available_cpus()
    try:
        pin_current(before[:1])
        assert available_cpus() == before[:1]
    finally:
        pin_current(before)
    assert available_cpus() == before


def test_pinned_restores_the_set_this_process_had_even_after_an_error() -> None:
    before = available_cpus()
    with pytest.raises(RuntimeError), pinned(before[-1:]):
        assert available_cpus() == before[-1:]
        raise RuntimeError("inside")
    assert available_cpus() == before


def _cpus_allowed_list(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no Cpus_allowed_list in /proc/{pid}/status")
