"""Per-request objects of the routes, as ``Annotated`` dependencies.

All ``async def``: FastAPI runs a plain ``def`` dependency in its thread pool, a
thread hop per dependency per request for what is an attribute lookup.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from .config import GatewaySettings
from .edge import AccessContext, access_context
from .fhir.search import PagingTokens
from .upstream import Upstream


async def _settings(request: Request) -> GatewaySettings:
    return request.app.state.settings


async def _upstream(request: Request) -> Upstream:
    return request.app.state.upstream


async def _paging(request: Request) -> PagingTokens:
    return request.app.state.paging


Access = Annotated[AccessContext, Depends(access_context)]
Settings = Annotated[GatewaySettings, Depends(_settings)]
Services = Annotated[Upstream, Depends(_upstream)]
Paging = Annotated[PagingTokens, Depends(_paging)]
