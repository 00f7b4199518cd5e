"""Per-request objects of the API."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ..application import RecordsApplication


async def get_records(request: Request) -> RecordsApplication:
    # async: a plain ``def`` dependency costs a trip through the thread pool, and
    # this one only reads the app's state
    records: RecordsApplication = request.app.state.records
    return records


Records = Annotated[RecordsApplication, Depends(get_records)]
