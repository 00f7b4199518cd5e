"""A real HTTP server standing in for identity, records and projections.

It speaks their contracts (paths, bodies, problem+json errors) from memory and
records every request it receives, so the gateway's edge tests can check what
was forwarded (the original token, the client address) and that nothing was
forwarded when the edge refused a request. It runs uvicorn in a thread on a free
loopback port. The lead's end-to-end tests run the real services instead.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ehr_events.devinfra import free_port

from .builders import chart_allergy, chart_patient

PROBLEM = "application/problem+json"


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


def problem(status: int, title: str, detail: str | None = None, **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, **extra}
    if detail:
        body["detail"] = detail
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


class StandIn:
    """Identity, records and projections, by their contracts, in memory."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[Seen] = []
        self.patients: dict[str, dict[str, Any]] = {}
        self.allergies: dict[str, dict[str, Any]] = {}
        self.jwks: dict[str, Any] = {"keys": []}
        #: The chart answers 404 unless asked to wait for a version (it lags).
        self.chart_lags = False
        #: The chart never has anything, waiting or not.
        self.chart_down = False
        #: Path prefixes answered with 500.
        self.failing: set[str] = set()
        self.position = 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = self._build()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # --- control -----------------------------------------------------------------------

    def start(self) -> None:
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the stand-in server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.patients.clear()
            self.allergies.clear()
            self.chart_lags = False
            self.chart_down = False
            self.failing.clear()

    def seen(self, prefix: str = "/") -> list[Seen]:
        """Requests received under ``prefix`` (key fetches are not counted)."""
        with self.lock:
            return [
                r for r in self.requests if r.path.startswith(prefix) and r.path != "/auth/jwks"
            ]

    # --- the services ------------------------------------------------------------------

    def _next_position(self) -> int:
        self.position += 1
        return self.position

    def _build(self) -> FastAPI:
        app = FastAPI()
        standin = self

        @app.middleware("http")
        async def record(request: Request, call_next: Any) -> Response:
            body = await request.body()
            with standin.lock:
                standin.requests.append(
                    Seen(
                        request.method,
                        request.url.path,
                        request.url.query,
                        {k.lower(): v for k, v in request.headers.items()},
                        body,
                    )
                )
            if any(request.url.path.startswith(p) for p in standin.failing):
                return problem(500, "Error", "boom")
            return await call_next(request)

        # identity ------------------------------------------------------------------
        @app.post("/auth/token")
        async def token(request: Request) -> Response:
            form = dict(
                pair.split("=", 1)
                for pair in (await request.body()).decode().split("&")
                if "=" in pair
            )
            if form.get("username") == "throttled":
                return JSONResponse(
                    {"error": "slow_down"}, status_code=429, headers={"Retry-After": "7"}
                )
            if form.get("username") == "alice" and form.get("password") == "right":
                return JSONResponse(
                    {"access_token": "issued", "token_type": "Bearer", "expires_in": 300},
                    headers={"Cache-Control": "no-store"},
                )
            return JSONResponse({"error": "invalid_grant"}, status_code=400)

        @app.get("/auth/jwks")
        def jwks() -> dict[str, Any]:
            return standin.jwks

        # records -------------------------------------------------------------------
        @app.post("/patients")
        async def register(request: Request) -> Response:
            body = await request.json()
            with standin.lock:
                if any(p["mrn"] == body["mrn"] for p in standin.patients.values()):
                    return problem(409, "Conflict", "A patient with this MRN is registered.")
                record = {
                    **body,
                    "id": str(uuid.uuid4()),
                    "version": 1,
                    "updated_at": datetime.now(UTC).isoformat(),
                }
                standin.patients[record["id"]] = record
                position = standin._next_position()
            return JSONResponse(
                {"id": record["id"], "version": 1, "position": position}, status_code=201
            )

        @app.get("/patients/{patient_id}")
        def patient(patient_id: str) -> Response:
            record = standin.patients.get(patient_id)
            if record is None:
                return problem(404, "Not found")
            return JSONResponse(record)

        @app.put("/patients/{patient_id}/demographics")
        async def update(patient_id: str, request: Request) -> Response:
            body = await request.json()
            with standin.lock:
                record = standin.patients.get(patient_id)
                if record is None:
                    return problem(404, "Not found")
                if body["expected_version"] != record["version"]:
                    return problem(409, "Conflict", "The patient has changed.")
                fields = {k: v for k, v in body.items() if k != "expected_version"}
                record.update(fields, version=record["version"] + 1)
                record["updated_at"] = datetime.now(UTC).isoformat()
                position = standin._next_position()
            return JSONResponse(
                {"id": patient_id, "version": record["version"], "position": position}
            )

        @app.post("/patients/{patient_id}/allergies")
        async def record_allergy(patient_id: str, request: Request) -> Response:
            body = await request.json()
            with standin.lock:
                if patient_id not in standin.patients:
                    return problem(404, "Not found")
                record = {
                    **body,
                    "id": str(uuid.uuid4()),
                    "patient_id": patient_id,
                    "version": 1,
                    "recorded_at": datetime.now(UTC).isoformat(),
                }
                standin.allergies[record["id"]] = record
                position = standin._next_position()
            return JSONResponse(
                {"id": record["id"], "patient_id": patient_id, "version": 1, "position": position},
                status_code=201,
            )

        @app.get("/allergies/{allergy_id}")
        def allergy(allergy_id: str) -> Response:
            record = standin.allergies.get(allergy_id)
            if record is None:
                return problem(404, "Not found")
            return JSONResponse(record)

        # projections ---------------------------------------------------------------
        @app.get("/chart/{resource_type}/{resource_id}")
        async def chart(
            resource_type: str,
            resource_id: str,
            min_version: int | None = None,
            wait_ms: int = 0,
        ) -> Response:
            store = standin.patients if resource_type == "Patient" else standin.allergies
            record = store.get(resource_id)
            hidden = standin.chart_down or (standin.chart_lags and min_version is None)
            if record is None or hidden or (min_version or 0) > record["version"]:
                if wait_ms:
                    await asyncio.sleep(min(wait_ms, 50) / 1000)
                return problem(404, "Not found")
            render = chart_patient if resource_type == "Patient" else chart_allergy
            stamp = record.get("updated_at") or record.get("recorded_at")
            return JSONResponse(
                {"resource": render(record), "version": record["version"], "last_updated": stamp}
            )

        @app.post("/chart/Patient/_search")
        async def search_patients(request: Request) -> Response:
            query = await request.json()
            families = [f.lower() for f in query.get("family", [])]
            found = [
                chart_patient(p)
                for p in standin.patients.values()
                if not families
                or any(n["family"].lower().startswith(f) for n in p["name"] for f in families)
            ]
            found.sort(key=lambda r: r["id"])
            start, count = query.get("offset", 0), query.get("count", 20)
            return JSONResponse({"total": len(found), "resources": found[start : start + count]})

        @app.post("/chart/AllergyIntolerance/_search")
        async def search_allergies(request: Request) -> Response:
            query = await request.json()
            patients = set(query.get("patient", []))
            found = [
                chart_allergy(a)
                for a in standin.allergies.values()
                if not patients or a["patient_id"] in patients
            ]
            start, count = query.get("offset", 0), query.get("count", 20)
            return JSONResponse({"total": len(found), "resources": found[start : start + count]})

        @app.get("/audit")
        def audit(request: Request) -> dict[str, Any]:
            return {"total": 0, "events": [], "query": dict(request.query_params)}

        return app
