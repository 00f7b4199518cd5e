"""Optimistic concurrency: a command names the version it was decided on."""

from __future__ import annotations

from eventsourcing.domain import Aggregate

from .errors import VersionConflict


def check_version(aggregate: Aggregate, expected_version: int | None) -> None:
    """Refuse a command decided on another version than the aggregate's current one."""
    if expected_version is not None and expected_version != aggregate.version:
        raise VersionConflict(expected_version, aggregate.version)
