"""Long-lived workers: their event loop, and stopping on a signal."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

WORKER = textwrap.dedent(
    """
    import asyncio
    from ehr_events.process import run_worker

    async def main(stop):
        print(type(asyncio.get_running_loop()).__module__, flush=True)
        await stop.wait()
        print("stopped cleanly", flush=True)

    run_worker(main)
    """
)


def test_a_worker_runs_on_uvloop_and_stops_cleanly_on_sigterm() -> None:
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert worker.stdout is not None
        loop_module = worker.stdout.readline().strip()
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert loop_module.startswith("uvloop"), loop_module
    assert out.strip() == "stopped cleanly", err
    assert worker.returncode == 0, err
