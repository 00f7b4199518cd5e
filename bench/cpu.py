"""Where the CPU went: per-process and whole-machine CPU time from ``/proc``.

Every phase records the CPU seconds of each platform process, of the load
generator and of the rest of the machine (other people's processes on a shared
development box). The busiest process of a phase is the first suspect when a
target is missed; the rest of the machine says whether the run was disturbed.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from dataclasses import dataclass, field

TICKS = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


def _stat(pid: int | str) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first); None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far; 0 once it is gone."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / TICKS if fields else 0.0


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and all its descendants: the live ones, and the
    ones it (or they) waited for; 0 once the process is gone."""
    stats = {int(e): f for e in os.listdir("/proc") if e.isdigit() and (f := _stat(e))}
    if pid not in stats:
        return 0.0
    children: dict[int, list[int]] = {}
    for child, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(child)
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        fields = stats[current]
        # utime, stime, and cutime, cstime: children already waited for
        total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        todo.extend(children.get(current, []))
    return total / TICKS


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores, all processes)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / TICKS


@dataclass
class Snapshot:
    at: float
    busy: float
    processes: dict[str, float]


def snapshot(pids: dict[str, int]) -> Snapshot:
    return Snapshot(time.monotonic(), machine_busy(), {n: process_cpu(p) for n, p in pids.items()})


@dataclass
class Usage:
    """CPU use between two snapshots, as fractions of one core."""

    seconds: float
    #: Busy fraction of one core, per named process.
    processes: dict[str, float] = field(default_factory=dict)
    #: The whole machine, as cores busy (at most ``CORES``).
    machine: float = 0.0
    #: The machine less the named processes: everything else that ran meanwhile.
    foreign: float = 0.0

    def busiest(self, exclude: tuple[str, ...] = ("load-generator",)) -> tuple[str, float]:
        candidates = {n: v for n, v in self.processes.items() if n not in exclude}
        if not candidates:
            return "", 0.0
        name = max(candidates, key=lambda n: candidates[n])
        return name, candidates[name]

    def to_dict(self) -> dict[str, object]:
        return {
            "seconds": round(self.seconds, 3),
            "cores": CORES,
            "machine_cores_busy": round(self.machine, 3),
            "foreign_cores_busy": round(self.foreign, 3),
            "process_cores_busy": {n: round(v, 3) for n, v in self.processes.items()},
        }


def usage(before: Snapshot, after: Snapshot, extra: dict[str, float] | None = None) -> Usage:
    """CPU use between snapshots; ``extra`` adds CPU seconds measured elsewhere (the load process)."""
    seconds = max(1e-9, after.at - before.at)
    processes = {
        n: max(0.0, after.processes.get(n, 0.0) - before.processes[n]) / seconds
        for n in before.processes
    }
    for name, cpu_seconds in (extra or {}).items():
        processes[name] = cpu_seconds / seconds
    machine = max(0.0, after.busy - before.busy) / seconds
    return Usage(
        seconds=seconds,
        processes=processes,
        machine=machine,
        foreign=max(0.0, machine - sum(processes.values())),
    )


def wait_quiet(
    pids: dict[str, int], *, level: float, max_seconds: float, window: float = 0.5
) -> float:
    """Wait until the processes together use at most ``level`` cores; returns the wait.

    After a phase the platform still works off what it accepted (relays, projectors,
    the access-decision log): the next phase starts once that backlog is gone.
    """
    started = time.monotonic()
    while time.monotonic() - started < max_seconds:
        before = snapshot(pids)
        time.sleep(window)
        after = snapshot(pids)
        if sum(usage(before, after).processes.values()) <= level:
            break
    return time.monotonic() - started


def wait_for_quiet_machine(max_seconds: float, level: float = 0.25) -> tuple[float, float]:
    """Wait (up to ``max_seconds``) until the machine is nearly idle for two seconds.

    Returns the wait and the last level seen (cores busy). A benchmark on a shared
    development machine measures its neighbours too: better to start when they rest.
    """
    started = time.monotonic()
    quiet = 0
    busy = 0.0
    while True:
        before, at = machine_busy(), time.monotonic()
        time.sleep(1.0)
        busy = (machine_busy() - before) / (time.monotonic() - at)
        quiet = quiet + 1 if busy <= level else 0
        if quiet >= 2 or time.monotonic() - started >= max_seconds:
            return time.monotonic() - started, busy


def _fixed_work() -> int:
    total = 0
    for i in range(40_000):
        total += i * i % 7
    return total


class SpeedProbe:
    """How fast a core is right now: a fixed pure-Python workload, timed every 0.25 s.

    On a virtual machine the cycles a core delivers vary with the host's load, which
    no process inside can see: the same work then takes more CPU time everywhere at
    once. The probe's cost (CPU milliseconds of its thread per workload) over a
    phase's window says how slow the machine was meanwhile; a run whose probe moves
    cannot have steady figures.
    """

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="speed-probe", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            before = time.thread_time()
            _fixed_work()
            self.samples.append((time.monotonic(), (time.thread_time() - before) * 1000))
            self._stop.wait(self.interval)

    def median(self, start: float, end: float) -> float | None:
        """Median cost (ms) of the workload between two ``time.monotonic()`` moments."""
        costs = [cost for at, cost in self.samples if start <= at <= end]
        return statistics.median(costs) if costs else None
