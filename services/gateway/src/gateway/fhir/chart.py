"""Reading resources from the chart, with read-your-writes.

The chart (projections service) is eventually consistent with the records
service: a resource just written may not be there yet. So:

* after a write, the gateway asks the chart for the written version with
  ``min_version=<version>&wait_ms=<wait>``; the chart answers as soon as it has it;
* on a read, a chart 404 is not trusted alone: the records service is asked
  whether the resource exists, and if it does the chart is asked again, waiting
  for that version. A create followed by a read therefore never answers 404.

Should the chart still lag after the wait, the resource is rendered from the
records service's own JSON, so a write the records service holds is never
reported missing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..upstream import Caller, Upstream, UpstreamFailed
from .outcome import FhirProblem

Renderer = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Kind:
    """Where a FHIR resource type lives upstream."""

    resource_type: str
    records_path: str  # format string with {id}
    render: Renderer


class Chart:
    """The chart, read on behalf of one caller."""

    def __init__(self, upstream: Upstream, caller: Caller, wait_ms: int) -> None:
        self.upstream = upstream
        self.caller = caller
        self.wait_ms = wait_ms

    async def get(
        self, resource_type: str, resource_id: str, min_version: int | None = None
    ) -> dict[str, Any] | None:
        """The chart's resource (at ``min_version`` or later, waiting for it), or None."""
        params: dict[str, Any] = {}
        if min_version is not None:
            params = {"min_version": min_version, "wait_ms": self.wait_ms}
        body = await self.upstream.projections.call(
            "GET",
            f"/chart/{resource_type}/{resource_id}",
            self.caller,
            params=params,
            missing_ok=True,
        )
        if body is None:
            return None
        resource = chart_resource(body)
        if min_version is not None and version_of(resource) < min_version:
            return None
        return resource

    async def read(self, kind: Kind, resource_id: str) -> dict[str, Any]:
        """A read that never misses what the records service holds."""
        found = await self.get(kind.resource_type, resource_id)
        if found is not None:
            return found
        record = await self._record(kind, resource_id)
        if record is None:
            raise FhirProblem(
                f"{kind.resource_type}/{resource_id} is not known.",
                status=404,
                title="Not found",
            )
        found = await self.get(kind.resource_type, resource_id, int(record["version"]))
        return found if found is not None else kind.render(record)

    async def written(self, kind: Kind, resource_id: str, version: int) -> dict[str, Any]:
        """The resource as stored by a write that returned ``version``."""
        found = await self.get(kind.resource_type, resource_id, version)
        if found is not None:
            return found
        record = await self._record(kind, resource_id)
        if record is None:
            raise UpstreamFailed(f"{kind.resource_type} was written but cannot be read back.")
        return kind.render(record)

    async def _record(self, kind: Kind, resource_id: str) -> dict[str, Any] | None:
        path = kind.records_path.format(id=resource_id)
        return await self.upstream.records.call("GET", path, self.caller, missing_ok=True)


def chart_resource(body: Any) -> dict[str, Any]:
    """The FHIR resource of a chart answer, with ``meta.versionId`` and ``lastUpdated``."""
    if not isinstance(body, dict) or not isinstance(body.get("resource"), dict):
        raise UpstreamFailed("The projections service answered with an unexpected shape.")
    resource = dict(body["resource"])
    meta = dict(resource.get("meta") or {})
    if "versionId" not in meta:
        if body.get("version") is None:
            raise UpstreamFailed("The projections service answered without a version.")
        meta["versionId"] = str(body["version"])
    if "lastUpdated" not in meta and body.get("last_updated"):
        meta["lastUpdated"] = str(body["last_updated"])
    resource["meta"] = meta
    return resource


def version_of(resource: dict[str, Any]) -> int:
    """``meta.versionId`` as a number (0 when it is not one)."""
    try:
        return int(str((resource.get("meta") or {}).get("versionId")))
    except (TypeError, ValueError):
        return 0
