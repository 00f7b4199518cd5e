"""Calls to the services behind the gateway, over one shared aiohttp session.

Each call carries the caller's original bearer token (the services verify it
again), the client address and the decision id as a request id. A service's
4xx problem is raised as a :class:`UpstreamProblem` with the same status; a
service that is down, slow or failing becomes 503, 504 or 502. Nothing here logs
a URL with its query string or a body.

aiohttp rather than httpx: on every request httpx's pool checks each pooled
connection's socket, which cost the gateway about half of its CPU per request
under load (``make bench ARGS=--profile``); aiohttp's connector hands out an idle
connection without that walk.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy
from pydantic_core import from_json, to_json

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


@dataclass(frozen=True)
class Answer:
    """A service's complete answer: status, headers and body."""

    status_code: int
    headers: CIMultiDictProxy[str]
    content: bytes

    def json(self) -> Any:
        """The body as JSON; ``ValueError`` if it is not (pydantic-core's parser: the
        same values as the standard library's, in half the time)."""
        return from_json(self.content)


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
    def from_response(cls, service: str, response: Answer) -> UpstreamProblem:
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

    def __init__(self, http: aiohttp.ClientSession, base_url: str, name: str) -> None:
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
    ) -> Answer:
        """The service's answer; 5xx, time-outs and refused connections are raised."""
        all_headers = caller.headers()
        all_headers.update(headers or {})
        url = self.base_url + path
        query = {k: str(v) for k, v in params.items()} if params else None
        # a GET changes nothing upstream: one that met a pooled connection the
        # service had just closed is sent once more
        attempts = 2 if method == "GET" else 1
        for attempt in range(attempts):
            try:
                async with self.http.request(
                    method, url, json=json, params=query, data=content, headers=all_headers
                ) as response:
                    answer = Answer(response.status, response.headers, await response.read())
                break
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError):
                # the request never reached the service: nothing happened
                raise self._unavailable() from None
            except aiohttp.ServerDisconnectedError:
                if attempt + 1 < attempts:
                    continue
                raise self._outcome_unknown() from None
            except (
                TimeoutError,
                aiohttp.ClientPayloadError,
                aiohttp.ClientOSError,
                aiohttp.ClientResponseError,
            ):
                raise self._outcome_unknown() from None
            except aiohttp.ClientError:
                raise self._unavailable() from None
        if answer.status_code == 503:
            # the service is up but cannot serve now (its database is away): transient
            # for our caller too, with the service's own advice on when to retry
            raise UpstreamUnavailable(
                f"The {self.name} service is unavailable.",
                headers={"Retry-After": answer.headers.get("retry-after", "1")},
            )
        if answer.status_code >= 500:
            raise UpstreamFailed(f"The {self.name} service failed.")
        return answer

    def _unavailable(self) -> UpstreamUnavailable:
        return UpstreamUnavailable(
            f"The {self.name} service is unavailable.", headers={"Retry-After": "1"}
        )

    def _outcome_unknown(self) -> UpstreamOutcomeUnknown:
        return UpstreamOutcomeUnknown(
            f"The {self.name} service did not answer in time; the outcome is unknown.",
            headers={"Retry-After": "1"},
        )

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
    """The three services behind the gateway, sharing one connection pool.

    Created inside the running event loop (the app's lifespan).
    """

    def __init__(self, settings: GatewaySettings) -> None:
        timeout = settings.upstream_timeout_seconds
        connector = aiohttp.TCPConnector(
            limit=settings.upstream_connections,
            # below the services' own keep-alive (uvicorn: 5 s), so the gateway drops
            # an idle connection before the service does
            keepalive_timeout=4.0,
            enable_cleanup_closed=True,
        )
        self.http = aiohttp.ClientSession(
            connector=connector,
            # ``connect`` includes waiting for a free connection of the pool
            timeout=aiohttp.ClientTimeout(total=timeout, connect=min(2.0, timeout)),
            auto_decompress=True,
            trust_env=False,
            raise_for_status=False,
            skip_auto_headers=("User-Agent",),
            json_serialize=_json_text,
        )
        self.identity = ServiceClient(self.http, settings.identity_url, "identity")
        self.records = ServiceClient(self.http, settings.records_url, "records")
        self.projections = ServiceClient(self.http, settings.projections_url, "projections")

    async def aclose(self) -> None:
        await self.http.close()


def _json_text(value: Any) -> str:
    """Request bodies as compact JSON, by pydantic-core (aiohttp's default is ``json.dumps``)."""
    return to_json(value).decode()
