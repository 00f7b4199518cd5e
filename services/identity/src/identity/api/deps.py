"""Per-request dependencies: the application and the caller's address."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ..application import IdentityApplication
from ..forwarding import client_address


def get_identity(request: Request) -> IdentityApplication:
    return request.app.state.identity


def get_client_address(request: Request) -> str | None:
    peer = request.client.host if request.client else None
    return client_address(
        peer, request.headers.getlist("x-forwarded-for"), request.app.state.trusted_proxies
    )


Identity = Annotated[IdentityApplication, Depends(get_identity)]
ClientAddress = Annotated[str | None, Depends(get_client_address)]
