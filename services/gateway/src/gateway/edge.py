"""The edge: every request is matched, limited, authenticated, authorised and logged.

For each request, in order:

1. the route table finds its rule; no rule means 404 (or 405), before anything else;
2. the client address's token bucket (every route, public ones too);
3. for non-public rules, the bearer token is verified (401 with
   ``WWW-Authenticate: Bearer``), the caller's bucket is checked, and the
   caller's roles must hold the rule's permission (403);
4. the route runs with an :class:`AccessContext` in the ASGI scope;
5. the decision (allowed or denied, with the final status) is queued for the
   gateway's event store.

Nothing escapes as a stack trace: an unexpected error is a bare 500, logged by
its type only.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from ehr_events.policy import allows
from ehr_events.problems import Problem
from ehr_events.security import InvalidToken, Principal, TokenVerifier
from ehr_events.web import BodyTooLarge, ResponseWatch

from .access import Decision, DecisionLog, Outcome
from .auth import authenticate, challenge
from .errors import error_response
from .policy import Action, PatientFrom, RouteTable, Rule
from .ratelimit import RateLimiter, Verdict
from .upstream import Caller

log = logging.getLogger("gateway.edge")

SCOPE_KEY = "gateway.access"


@dataclass
class AccessContext:
    """What the edge knows about the request it let through; routes add the patient."""

    rule: Rule
    path_params: dict[str, str]
    client_address: str | None
    principal: Principal | None = None
    patient_id: str | None = None
    traceparent: str | None = None
    decision_id: uuid.UUID = field(default_factory=uuid.uuid4)

    def caller(self) -> Caller:
        """The identity to forward upstream: the caller's original token."""
        return Caller(
            token=self.principal.token if self.principal else None,
            client_address=self.client_address,
            request_id=str(self.decision_id),
            traceparent=self.traceparent,
        )

    @property
    def subject(self) -> str:
        return self.principal.subject if self.principal else ""


async def access_context(request: Request) -> AccessContext:
    """FastAPI dependency: the edge's context of this request."""
    return request.scope[SCOPE_KEY]


class EdgeMiddleware:
    """The zero-trust edge, as ASGI middleware in front of the routes."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        table: RouteTable,
        verifier: TokenVerifier,
        per_address: RateLimiter,
        per_subject: RateLimiter,
        decisions: DecisionLog,
    ) -> None:
        self.app = app
        self.table = table
        self.verifier = verifier
        self.per_address = per_address
        self.per_subject = per_subject
        self.decisions = decisions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        match = self.table.match(method, path)
        if match is None:
            if self.table.knows_path(path):
                problem = Problem("Method not allowed.", status=405, title="Method not allowed")
            else:
                problem = Problem("No such route.", status=404, title="Not found")
            await error_response(path, problem)(scope, receive, send)
            return
        rule = match.rule
        headers = _headers(scope)
        client = scope.get("client")
        context = AccessContext(
            rule=rule,
            path_params=match.path_params,
            client_address=client[0] if client else None,
            traceparent=headers.get("traceparent"),
        )
        query: dict[str, str] = {}
        if rule.patient is PatientFrom.query:
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        context.patient_id = rule.patient_id(match.path_params, query)

        verdict = self.per_address.check(context.client_address or "unknown")
        if not verdict.allowed:
            await self._throttled(context, verdict, scope, receive, send)
            return
        if not rule.public:
            try:
                principal = await authenticate(self.verifier, headers.get("authorization"))
            except InvalidToken as exc:
                await self._deny(context, 401, str(exc), scope, receive, send, challenge(exc))
                return
            except Exception as exc:  # noqa: BLE001 - e.g. a malformed key set from identity
                log.error("token verification failed: %s", type(exc).__name__)
                await self._deny(
                    context, 503, "token verification unavailable", scope, receive, send
                )
                return
            context.principal = principal
            verdict = self.per_subject.check(principal.subject)
            if not verdict.allowed:
                await self._throttled(context, verdict, scope, receive, send)
                return
            assert rule.permission is not None
            if not allows(principal, rule.permission):
                await self._deny(
                    context, 403, f"role lacks {rule.permission}", scope, receive, send
                )
                return
        scope[SCOPE_KEY] = context
        await self._forward(context, scope, receive, send)

    async def _forward(
        self, context: AccessContext, scope: Scope, receive: Receive, send: Send
    ) -> None:
        watch = ResponseWatch(send)
        failed: int | None = None  # the status an error stands for, over what was sent
        try:
            await self.app(scope, receive, watch)
        except BodyTooLarge:
            failed = 413
            raise
        except Exception as exc:  # noqa: BLE001 - never a stack trace to the caller
            # the exception text may hold PHI: its type only
            log.error("unhandled %s on %s %s", type(exc).__name__, scope["method"], scope["path"])
            failed = 500
            if not watch.started:
                problem = Problem(
                    "The server could not complete the request.", status=500, title="Error"
                )
                await error_response(scope["path"], problem)(scope, receive, send)
        finally:
            status = failed or watch.status or 500
            if context.rule.audited:
                # a service may refuse what the edge allowed; a refused login is a denial too
                refused = status in (401, 403) or (
                    context.rule.action is Action.login and 400 <= status < 500
                )
                self._record(
                    context,
                    "denied" if refused else "allowed",
                    status,
                    "refused upstream" if refused else None,
                )

    async def _throttled(
        self, context: AccessContext, verdict: Verdict, scope: Scope, receive: Receive, send: Send
    ) -> None:
        problem = Problem(
            "Too many requests; retry later.",
            status=429,
            title="Too many requests",
            headers={"Retry-After": str(verdict.retry_after)},
        )
        # a flood is recorded once, when it starts: the limit also bounds the log's writes
        if verdict.first_refusal and context.rule.audited:
            self._record(context, "denied", 429, "rate limited")
        await error_response(scope["path"], problem)(scope, receive, send)

    async def _deny(
        self,
        context: AccessContext,
        status: int,
        reason: str,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[str, str] | None = None,
    ) -> None:
        if status == 401:
            problem = Problem(reason, status=401, title="Unauthorized", headers=headers)
        elif status == 503:
            problem = Problem(
                "Tokens cannot be verified now; retry later.",
                status=503,
                title="Service unavailable",
                headers={"Retry-After": "1"},
            )
        else:
            problem = Problem(
                "Your role does not allow this action.", status=403, title="Forbidden"
            )
        self._record(context, "denied", status, reason)
        await error_response(scope["path"], problem)(scope, receive, send)

    def _record(
        self, context: AccessContext, outcome: Outcome, status: int, reason: str | None
    ) -> None:
        principal = context.principal
        self.decisions.record(
            Decision(
                decision_id=context.decision_id,
                method=context.rule.method,
                route=context.rule.template,
                action=context.rule.action.value,
                outcome=outcome,
                status=status,
                user_id=principal.subject if principal else None,
                roles=tuple(sorted(principal.roles)) if principal else (),
                organization_id=principal.organization_id if principal else None,
                patient_id=context.patient_id,
                reason=reason,
                client_address=context.client_address,
            )
        )


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
