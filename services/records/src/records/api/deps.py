"""Per-request objects of the API."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ..application import RecordsApplication


def get_records(request: Request) -> RecordsApplication:
    records: RecordsApplication = request.app.state.records
    return records


Records = Annotated[RecordsApplication, Depends(get_records)]
