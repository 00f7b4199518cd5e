"""Token issuance and signing keys, proxied to the identity service."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import APIRouter, Request, Response

from ..deps import Access, Services

router = APIRouter(prefix="/auth", tags=["auth"])

#: Headers of identity's answer that the caller needs (OAuth: no caching of tokens).
PASSED_HEADERS = ("content-type", "cache-control", "pragma", "retry-after", "www-authenticate")


@router.post("/token")
async def issue_token(request: Request, access: Access, services: Services) -> Response:
    """Exchange credentials for an access token (OAuth 2.0 token endpoint)."""
    headers = {
        "Content-Type": request.headers.get("content-type", "application/x-www-form-urlencoded")
    }
    # client authentication (client_secret_basic) is meant for the token endpoint
    if "authorization" in request.headers:
        headers["Authorization"] = request.headers["authorization"]
    answer = await services.identity.send(
        "POST", "/auth/token", access.caller(), content=await request.body(), headers=headers
    )
    return _relay(answer.status_code, answer.content, answer.headers)


@router.get("/jwks")
async def signing_keys(access: Access, services: Services) -> Response:
    """The identity service's public signing keys (JWKS)."""
    answer = await services.identity.send("GET", "/auth/jwks", access.caller())
    return _relay(answer.status_code, answer.content, answer.headers)


def _relay(status: int, content: bytes, headers: Mapping[str, str]) -> Response:
    kept = {name: headers[name] for name in PASSED_HEADERS if name in headers}
    return Response(content=content, status_code=status, headers=kept)
