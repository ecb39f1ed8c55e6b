"""The ``/proc`` readers: CPU and memory of a process, a thread, the machine (Linux).

One parser of ``/proc/<pid>/stat`` (:func:`stat_fields`, the fields after ``pid
(comm)``, so a ``comm`` with spaces cannot shift them) serves every reader:

* :func:`process_cpu_s` — utime + stime of a process (all its threads);
* :func:`thread_cpu_s` — the same for one thread (``/proc/<pid>/task/<tid>/stat``);
* :func:`rss_kib` — ``VmRSS`` from ``/proc/<pid>/status``;
* :func:`cpus_allowed_list` — ``Cpus_allowed_list`` from the same file (its CPU set);
* :func:`machine_jiffies` — (busy, total) ticks of all CPUs from ``/proc/stat``;
* :class:`ProcessTree` — a started process and its direct children (Locust workers).
"""

from __future__ import annotations

import contextlib
import glob
import os
import signal

CLK_TCK = os.sysconf("SC_CLK_TCK")
# after "pid (comm) ": state is field 3, so utime (14) and stime (15) are at 11, 12
_UTIME, _STIME, _PPID, _STARTTIME = 11, 12, 1, 19


def _fields(path: str) -> list[bytes]:
    with open(path, "rb") as fh:
        stat = fh.read()
    return stat[stat.rindex(b")") + 2 :].split()


def stat_fields(pid: int) -> list[bytes] | None:
    """Fields of ``/proc/<pid>/stat`` after ``pid (comm)``; None when it is gone."""
    try:
        return _fields(f"/proc/{pid}/stat")
    except OSError:
        return None


def process_cpu_s(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads), in seconds."""
    fields = _fields(f"/proc/{pid}/stat")
    return (int(fields[_UTIME]) + int(fields[_STIME])) / CLK_TCK


def thread_cpu_s(pid: int, tid: int | None = None) -> float:
    """utime + stime of thread ``tid`` of ``pid`` (default: its main thread), seconds."""
    fields = _fields(f"/proc/{pid}/task/{pid if tid is None else tid}/stat")
    return (int(fields[_UTIME]) + int(fields[_STIME])) / CLK_TCK


def precise_cpu_s(pid: int) -> tuple[float, str]:
    """CPU time of every thread of ``pid`` so far in ns resolution
    (``/proc/<pid>/task/*/schedstat``), and where it was read from: ``"schedstat"``, or
    ``"stat"`` (clock ticks, :func:`process_cpu_s`) where schedstat is missing — a few
    hundred messages at a low rate are only a few clock ticks of CPU."""
    total_ns, found = 0, False
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(path, "rb") as fh:
                total_ns += int(fh.read().split()[0])
            found = True
    if found:
        return total_ns / 1e9, "schedstat"
    return process_cpu_s(pid), "stat"


def rss_kib(pid: int) -> int:
    """VmRSS of process ``pid``, KiB."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS line")


def cpus_allowed_list(pid: int) -> str:
    """``Cpus_allowed_list`` of ``/proc/<pid>/status`` (e.g. ``"0"``, ``"0-3,5"``): the
    CPUs the kernel lets the process run on; ``""`` when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("Cpus_allowed_list:"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return ""
    return ""


def machine_jiffies() -> tuple[float, float]:
    """(busy, total) clock ticks of all CPUs since boot, from ``/proc/stat``."""
    try:
        with open("/proc/stat") as fh:
            values = [float(v) for v in fh.readline().split()[1:]]
    except OSError:
        return (0.0, 0.0)
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)  # idle + iowait
    total = sum(values[:8])
    return (total - idle, total)


class ProcessTree:
    """A process this run started and its direct children (Locust ``--processes`` workers).

    Children are remembered with their start time, so a later kill by PID never hits a
    recycled PID, and with the CPU set each had when first seen (:attr:`cpus_allowed`:
    a pinned root's workers should show the root's).
    """

    def __init__(self, pid: int) -> None:
        self.root = pid
        self.children: dict[int, bytes] = {}  # pid → starttime field
        self.cpus_allowed: dict[int, str] = {pid: cpus_allowed_list(pid)}

    def scan(self) -> None:
        """Find the root's children (reads every ``/proc/<pid>/stat``)."""
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) not in self.children:
                fields = stat_fields(int(entry))
                if fields is not None and int(fields[_PPID]) == self.root:
                    self.children[int(entry)] = fields[_STARTTIME]
                    self.cpus_allowed[int(entry)] = cpus_allowed_list(int(entry))

    def cpu_s(self) -> dict[int, float]:
        """CPU seconds (user + system) of each live process of the tree."""
        out: dict[int, float] = {}
        for pid in (self.root, *self.children):
            try:
                out[pid] = process_cpu_s(pid)
            except (OSError, IndexError, ValueError):
                continue
        return out

    def kill_children(self) -> None:
        """SIGKILL the children still alive (same PID *and* start time)."""
        for pid, started in self.children.items():
            fields = stat_fields(pid)
            if fields is not None and fields[_STARTTIME] == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
