"""Calls to the services behind the gateway, over one shared ``httpx.AsyncClient``.

Each call carries the caller's original bearer token (the services verify it
again), the client address and the decision id as a request id. A service's
4xx problem is raised as a :class:`UpstreamProblem` with the same status; a
service that is down, slow or failing becomes 503 or 502. Nothing here logs a
URL with its query string or a body.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from ehr_events.problems import Problem

from .config import GatewaySettings


@dataclass(frozen=True)
class Caller:
    """What the gateway forwards about the caller on every upstream call."""

    token: str | None = None
    client_address: str | None = None
    request_id: str | None = None
    traceparent: str | None = None

    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.client_address:
            headers["X-Forwarded-For"] = self.client_address
        if self.request_id:
            headers["X-Request-ID"] = self.request_id
        if self.traceparent:
            headers["traceparent"] = self.traceparent
        return headers


class UpstreamUnavailable(Problem):
    """A service could not be reached in time."""

    status = 503
    title = "Service unavailable"


class UpstreamOutcomeUnknown(Problem):
    """A service took the request but did not answer: it may or may not have acted.

    504, not 503: a 503 would tell the client its write certainly did not happen.
    A retried create is safe (a duplicate MRN answers 409); an update carries its
    version, so a retry is refused if the first attempt went through.
    """

    status = 504
    title = "Gateway timeout"


class UpstreamFailed(Problem):
    """A service answered with a server error or an unreadable response."""

    status = 502
    title = "Bad gateway"


class UpstreamProblem(Problem):
    """A service refused the request (4xx); status and field errors are kept."""

    @classmethod
    def from_response(cls, service: str, response: httpx.Response) -> UpstreamProblem:
        body: Any = None
        if response.headers.get("content-type", "").split(";")[0].endswith("json"):
            try:
                body = response.json()
            except ValueError:
                body = None
        body = body if isinstance(body, dict) else {}
        errors = body.get("errors")
        # services never echo submitted values in problems; only what names the fields is kept
        kept = [
            {"field": str(e.get("field", "")), "message": str(e.get("message", "invalid"))[:200]}
            for e in errors or ()
            if isinstance(e, dict)
        ] or None
        headers = {
            k: v
            for k, v in response.headers.items()
            if k.lower() in {"retry-after", "www-authenticate"}
        }
        detail = body.get("detail") or body.get("title") or f"The {service} service refused it."
        return cls(
            str(detail)[:500],
            status=response.status_code,
            title=str(body.get("title") or "Refused"),
            errors=kept,
            headers=headers,
        )


class ServiceClient:
    """One upstream service, at its base URL."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, name: str) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.name = name

    async def send(
        self,
        method: str,
        path: str,
        caller: Caller,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """The service's response; 5xx, time-outs and refused connections are raised."""
        all_headers = caller.headers()
        all_headers.update(headers or {})
        try:
            response = await self.http.request(
                method,
                self.base_url + path,
                json=json,
                params=params,
                content=content,
                headers=all_headers,
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout):
            # the request never reached the service: nothing happened
            raise UpstreamUnavailable(
                f"The {self.name} service is unavailable.", headers={"Retry-After": "1"}
            ) from None
        except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.RemoteProtocolError, httpx.ReadError):
            raise UpstreamOutcomeUnknown(
                f"The {self.name} service did not answer in time; the outcome is unknown.",
                headers={"Retry-After": "1"},
            ) from None
        except httpx.HTTPError:
            raise UpstreamUnavailable(
                f"The {self.name} service is unavailable.", headers={"Retry-After": "1"}
            ) from None
        if response.status_code == 503:
            # the service is up but cannot serve now (its database is away): transient
            # for our caller too, with the service's own advice on when to retry
            raise UpstreamUnavailable(
                f"The {self.name} service is unavailable.",
                headers={"Retry-After": response.headers.get("retry-after", "1")},
            )
        if response.status_code >= 500:
            raise UpstreamFailed(f"The {self.name} service failed.")
        return response

    async def call(
        self,
        method: str,
        path: str,
        caller: Caller,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        missing_ok: bool = False,
    ) -> Any:
        """The JSON body of a 2xx answer; a 4xx is raised (404 is None if ``missing_ok``)."""
        response = await self.send(method, path, caller, json=json, params=params)
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code >= 400:
            raise UpstreamProblem.from_response(self.name, response)
        try:
            return response.json()
        except ValueError:
            raise UpstreamFailed(f"The {self.name} service answered with invalid JSON.") from None


class Upstream:
    """The three services behind the gateway, sharing one connection pool."""

    def __init__(self, settings: GatewaySettings, http: httpx.AsyncClient | None = None) -> None:
        timeout = settings.upstream_timeout_seconds
        self.http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(2.0, timeout)),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            follow_redirects=False,
            trust_env=False,
        )
        self.identity = ServiceClient(self.http, settings.identity_url, "identity")
        self.records = ServiceClient(self.http, settings.records_url, "records")
        self.projections = ServiceClient(self.http, settings.projections_url, "projections")

    async def aclose(self) -> None:
        await self.http.aclose()
