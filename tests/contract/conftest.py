from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ehr_events.devplatform import Platform


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """The whole platform in processes, development profile, for one test module."""
    running = Platform(var_dir=Path(tmp_path_factory.mktemp("platform")) / "var")
    try:
        running.start()
        yield running
    finally:
        running.stop()
