"""The OAuth token endpoint, the JWKS and key rotation."""

from typing import Annotated, Any

from fastapi import APIRouter, Form
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ..domain.errors import LoginRefused, LoginThrottled
from .deps import ClientAddress, Identity

#: RFC 6749 §5.1: token responses (and their errors) must not be cached.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
#: Longest username and password a token request may carry.
MAX_USERNAME = 256
MAX_PASSWORD = 1024


class TokenPublic(BaseModel):
    access_token: str
    token_type: str = "Bearer"
    expires_in: int


class OAuthError(BaseModel):
    error: str
    error_description: str


class JwksPublic(BaseModel):
    keys: list[dict[str, str]]


class KeyRotated(BaseModel):
    kid: str
    retired_kid: str


def oauth_error(
    error: str, description: str, status: int = 400, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An RFC 6749 §5.2 error response."""
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status,
        headers={**NO_STORE, **(headers or {})},
    )


def build_router(admin: Any) -> APIRouter:
    """The /auth router; ``admin`` is the principal dependency of role admin."""
    router = APIRouter(prefix="/auth", tags=["auth"])

    @router.post(
        "/token",
        response_model=TokenPublic,
        responses={400: {"model": OAuthError}, 429: {"model": OAuthError}},
    )
    def issue_token(
        identity: Identity,
        address: ClientAddress,
        grant_type: Annotated[str | None, Form()] = None,
        username: Annotated[str | None, Form()] = None,
        password: Annotated[str | None, Form()] = None,
        scope: Annotated[str | None, Form()] = None,
    ) -> JSONResponse:
        """Exchange a username and password for an access token (OAuth 2.0 password grant)."""
        if not grant_type:
            return oauth_error("invalid_request", "The grant_type parameter is required.")
        if grant_type != "password":
            return oauth_error("unsupported_grant_type", "Only the password grant is supported.")
        if not username or not password:
            return oauth_error("invalid_request", "The username and password are required.")
        if len(username) > MAX_USERNAME or len(password) > MAX_PASSWORD:
            return oauth_error("invalid_request", "The username or password is too long.")
        try:
            token = identity.login(username, password, address)
        except LoginThrottled as exc:
            return oauth_error(
                "temporarily_unavailable",
                "Too many failed sign-in attempts. Retry later.",
                status=429,
                headers={"Retry-After": str(exc.retry_after)},
            )
        except LoginRefused:
            return oauth_error("invalid_grant", "The username or password is incorrect.")
        body = TokenPublic(access_token=token.access_token, expires_in=token.expires_in)
        return JSONResponse(body.model_dump(), headers=NO_STORE)

    @router.get("/jwks", response_model=JwksPublic)
    def jwks(identity: Identity) -> JSONResponse:
        """The public keys that verify access tokens (RFC 7517 JWK Set)."""
        return JSONResponse(
            identity.jwks(),
            headers={"Cache-Control": "no-cache"},
        )

    @router.post("/keys/rotate", response_model=KeyRotated)
    def rotate_key(identity: Identity, principal: admin) -> KeyRotated:
        """Activate a new signing key and retire the current one."""
        kid, retired = identity.rotate_signing_key(actor=principal.actor())
        return KeyRotated(kid=kid, retired_kid=retired)

    return router
