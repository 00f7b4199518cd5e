"""Running long-lived processes: HTTP services, and workers (relays, projectors)
until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Awaitable, Callable
from typing import Any


def collect_less_often() -> None:
    """Tune the garbage collector of a long-lived process, once it has started.

    At the default thresholds the collector runs every 700 allocations and keeps
    walking what startup loaded (frameworks, models, the FHIR classes) and, in a
    projector, the thousands of decoded events a batch holds until it is written:
    a third of a rebuild's CPU, mostly in full collections. What startup loaded is
    frozen out of the collections; young collections run every 50 000
    allocations, full ones every ten million.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


def serve_http(app: Any, host: str, port: int) -> None:
    """Serve a service's ASGI app with uvicorn until SIGINT or SIGTERM.

    ``log_config=None`` keeps the process's own handlers (``configure_logging``);
    uvicorn's access log is off because it prints query strings, ours does not.
    """
    import uvicorn

    collect_less_often()
    uvicorn.run(app, host=host, port=port, access_log=False, log_config=None)


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's event loop where it is installed (it comes with ``uvicorn[standard]``,
    which the HTTP services already run on), else asyncio's own."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def run_worker(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``main(stop)`` in a fresh event loop; a signal sets ``stop``."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner_:
        runner_.run(runner())
