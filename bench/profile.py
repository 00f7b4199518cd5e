"""Function-level profiles of the platform's processes with py-spy (``--profile``).

``py-spy record`` samples a running process from outside (no code change, no
restart) and writes collapsed stacks. :func:`summarize` turns them into the two
lists that name a bottleneck: where the samples sit (own time) and which calls
hold them (inclusive time), with the frames of the interpreter's machinery left
out. Only the thread holding the GIL is sampled (``--gil``): on a machine whose
cores are all busy, threads that merely wait for a core would otherwise look
busy. py-spy's sampling costs a little CPU itself: figures of a ``--profile``
run are a little lower than those of a plain run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any


def py_spy() -> str | None:
    """The py-spy executable (a dev dependency of the workspace), or None."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Recorder:
    """py-spy recording some processes for a while, in the background."""

    def __init__(self, folder: Path, rate: int = 67) -> None:
        self.folder = folder
        self.rate = rate
        self.running: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        self.binary = py_spy()

    @property
    def available(self) -> bool:
        return self.binary is not None

    def start(
        self, label: str, pids: dict[str, int], seconds: float, *, subprocesses: bool = False
    ) -> None:
        if self.binary is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for name, pid in pids.items():
            output = self.folder / f"{label}.{name}.txt"
            command = [
                self.binary, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))),
                "--rate", str(self.rate), "--format", "raw", "--output", str(output),
                "--threads", "--gil",
                *(["--subprocesses"] if subprocesses else []),
            ]  # fmt: skip
            process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            self.running[f"{label}.{name}"] = (process, output)

    def finish(self) -> dict[str, Path]:
        """Wait for every recording; returns the files written, by ``label.process``."""
        done: dict[str, Path] = {}
        for key, (process, output) in self.running.items():
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
            if output.exists() and output.stat().st_size:
                done[key] = output
        self.running.clear()
        return done


#: Top-level packages of the platform itself.
PROJECT = frozenset({"ehr_events", "gateway", "records", "projections", "identity"})


def _split(raw: str) -> tuple[str, str]:
    """``name (path/to/module.py:12)`` as (``name (to/module.py)``, top-level package)."""
    match = re.match(r"^(.*) \((.*?)(?::\d+)?\)$", raw)
    if not match:
        return raw, ""
    name, path = match.group(1), match.group(2)
    generated = re.match(r"^<(\w+) generated", path)
    if generated:  # code generated at run time: "<sqlalchemy generated ... wrapper for ...>"
        return f"{name} (generated)", generated.group(1)
    parts = path.split("/")
    package = parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")
    if package.startswith("<frozen"):
        package = package.strip("<>").removeprefix("frozen ")
    return f"{name} ({'/'.join(parts[-2:])})", package


def summarize(path: Path, top: int = 8) -> dict[str, Any]:
    """The leaders of a collapsed-stack file, as shares of its samples.

    * ``own``: the frames samples sit in (where the CPU is spent);
    * ``platform``: each sample charged to the deepest frame of the platform's own
      code on its stack (the platform function that spent it, itself or through
      the libraries it called);
    * ``by_library``: each sample charged to the library the platform called into
      last (``httpx`` when a route awaits an upstream call, ``sqlalchemy`` when a
      projection executes a statement), or to the platform module itself.
    """
    own: Counter[str] = Counter()
    project: Counter[str] = Counter()
    libraries: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        # with --threads the first frame names the thread
        frames = [_split(f) for f in stack.split(";") if not f.startswith("thread (")]
        if not frames:
            continue
        n = int(count)
        total += n
        own[frames[-1][0]] += n
        deepest = -1
        for i, (frame, package) in enumerate(frames):
            if package in PROJECT and not frame.startswith(("main ", "<module> ", "serve ")):
                deepest = i
        outside = f"(no platform frame; in {frames[-1][1]})"
        project[frames[deepest][0] if deepest >= 0 else outside] += n
        if deepest == -1:
            libraries[outside] += n
        elif deepest == len(frames) - 1:
            libraries[frames[deepest][1]] += n
        else:
            libraries[frames[deepest + 1][1]] += n

    def share(counter: Counter[str], limit: int = top) -> list[tuple[str, float]]:
        return [(f, round(100 * c / total, 1)) for f, c in counter.most_common(limit)]

    return {
        "samples": total,
        "own": share(own),
        "platform": share(project),
        "by_library": share(libraries, 6),
    }
