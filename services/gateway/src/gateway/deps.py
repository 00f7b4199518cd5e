"""Per-request objects of the routes, as ``Annotated`` dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from .config import GatewaySettings
from .edge import AccessContext, access_context
from .fhir.search import PagingTokens
from .upstream import Upstream


def _settings(request: Request) -> GatewaySettings:
    return request.app.state.settings


def _upstream(request: Request) -> Upstream:
    return request.app.state.upstream


def _paging(request: Request) -> PagingTokens:
    return request.app.state.paging


Access = Annotated[AccessContext, Depends(access_context)]
Settings = Annotated[GatewaySettings, Depends(_settings)]
Services = Annotated[Upstream, Depends(_upstream)]
Paging = Annotated[PagingTokens, Depends(_paging)]
