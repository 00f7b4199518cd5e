"""One real platform for every fault drill, and a physician's session on it.

Starting the platform takes a quarter of a minute on a small machine, so the
drills share one: each uses a family name of its own, and repairs what it
breaks. After each drill every process must still be running (a process that
died on its own is a failure, and is started again for the next drill). The
platform is stopped as soon as the last drill of this folder has run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ehr_events.devplatform import Platform

from .fhirclient import login

HERE = Path(__file__).parent
_running: list[Platform] = []


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """Every process of the platform, development profile, SQLite files in a temp ``var``."""
    running = Platform(var_dir=Path(tmp_path_factory.mktemp("faults")) / "var")
    _running.append(running)
    try:
        running.start()
        yield running
    finally:
        _stop(running)


def _stop(running: Platform) -> None:
    # the data is thrown away: no need for the broker's slow graceful stop
    running.kill()


@pytest.hookimpl(trylast=True)  # after the drill's own fixtures are torn down
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop the shared platform once no drill of this folder follows."""
    if _running and (nextitem is None or HERE not in nextitem.path.parents):
        _stop(_running.pop())


@pytest.fixture(autouse=True)
def every_process_survives(platform: Platform) -> Iterator[None]:
    """After a drill: every process runs; one that exited by itself fails the drill."""
    yield
    names = list(platform.commands())
    crashed = [n for n, p in platform.processes.items() if p.poll() is not None]
    for name in crashed:
        platform.processes.pop(name)
    # a drill that failed half-way may have left a process stopped
    absent = [n for n in names if n not in platform.processes]
    if absent:
        platform.start(*absent)
    assert not crashed, f"exited during the drill: {crashed}"


@pytest.fixture(scope="session")
def client(platform: Platform) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=platform.gateway_url, timeout=30) as http:
        yield http


@pytest.fixture(scope="session")
def physician(platform: Platform) -> dict[str, str]:
    return {"Authorization": f"Bearer {login(platform)}"}
