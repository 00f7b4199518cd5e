"""The bare-endpoint baseline: the services' HTTP stack with nothing behind it.

``python -m bench.bare --port N --log-dir DIR`` serves the app every service is
built on (:func:`ehr_events.web.create_app`: problem handlers, body limit, access
log to a file) under uvicorn with the services' settings, plus two routes that do
no work: ``GET /bare`` answers a small JSON document, ``POST /bare`` parses the
JSON body and answers it. The load generator drives it exactly as it drives the
gateway, so every gateway figure can be held against the stack's own cost.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from ehr_events import web
from ehr_events.logs import configure_logging


def create_app() -> Any:
    app = web.create_app("bench bare endpoint")

    @app.get("/bare")
    async def bare_get() -> JSONResponse:
        """A constant answer."""
        return JSONResponse({"resourceType": "Bare", "status": "ok"})

    @app.post("/bare", status_code=201)
    async def bare_post(request: Request) -> JSONResponse:
        """The body, parsed and sent back."""
        return JSONResponse(await request.json(), status_code=201)

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m bench.bare")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-dir", type=Path, required=True)
    args = parser.parse_args()
    configure_logging("bench-bare", args.log_dir)
    # the same call as every service's ``serve``
    uvicorn.run(create_app(), host="127.0.0.1", port=args.port, access_log=False, log_config=None)


if __name__ == "__main__":
    main()
