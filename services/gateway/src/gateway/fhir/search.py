"""FHIR search: parameters, opaque paging links, and the searchset Bundle.

Search terms are PHI (a family name, a birth date), so they never appear in a
link: ``self``, ``next`` and ``previous`` point at ``<base>/<Type>?_page=<token>``
where the token is the search (parameters, offset, count) encrypted and
authenticated with the gateway's paging key (Fernet), bound to the caller and
valid for a limited time.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from ..policy import patient_id_from_reference
from .outcome import FhirProblem

DEFAULT_COUNT = 20
MAX_COUNT = 100

#: Search parameters by resource type (besides ``_count`` and ``_page``).
SEARCH_PARAMS: dict[str, frozenset[str]] = {
    "Patient": frozenset({"family", "given", "birthdate", "identifier"}),
    "AllergyIntolerance": frozenset({"patient"}),
}
#: ``_format`` is accepted when it asks for what we serve anyway.
JSON_FORMATS = frozenset({"json", "application/json", "application/fhir+json"})

DATE_PARAM = re.compile(r"^(eq|ne|lt|gt|le|ge)?(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")


@dataclass(frozen=True)
class Search:
    """One search: the resource type, its parameters, and the page asked for."""

    resource_type: str
    params: dict[str, list[str]] = field(default_factory=dict)
    count: int = DEFAULT_COUNT
    offset: int = 0

    def upstream_body(self) -> dict[str, Any]:
        """Body of the projections service's ``POST /chart/<Type>/_search``."""
        return {**self.params, "count": self.count, "offset": self.offset}

    def page(self, offset: int) -> Search:
        return Search(self.resource_type, self.params, self.count, max(0, offset))


def _bad(name: str, message: str) -> FhirProblem:
    return FhirProblem(
        f"Search parameter {name}: {message}.",
        status=400,
        errors=[{"field": name, "message": message, "code": "invalid"}],
    )


def parse_search(resource_type: str, pairs: Iterable[tuple[str, str]]) -> Search:
    """A search from query or form parameters; unknown parameters are refused (400)."""
    allowed = SEARCH_PARAMS[resource_type]
    params: dict[str, list[str]] = {}
    count = DEFAULT_COUNT
    for name, raw in pairs:
        value = raw.strip()
        if name == "_format":
            if value not in JSON_FORMATS:
                raise _bad(name, "only JSON is supported")
            continue
        if name == "_count":
            count = _count(value)
            continue
        if name == "_page":
            raise _bad(name, "a paging link cannot be combined with other parameters")
        if name not in allowed:
            raise _bad(name, f"is not a supported search parameter of {resource_type}")
        if not value:
            continue  # FHIR: an empty parameter is ignored
        params.setdefault(name, []).append(_normalise(name, value))
    return Search(resource_type, params, count, 0)


def _count(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise _bad("_count", "must be a positive integer")
    return min(int(value), MAX_COUNT)


def _normalise(name: str, value: str) -> str:
    if name == "birthdate":
        match = DATE_PARAM.match(value)
        if not match:
            raise _bad(name, "must be a date (YYYY, YYYY-MM or YYYY-MM-DD) with an optional prefix")
        year, month, day = match.group(2), match.group(3), match.group(4)
        try:
            date(int(year), int(month or 1), int(day or 1))
        except ValueError:
            raise _bad(name, "is not a valid date") from None
        return value
    if name == "patient":
        patient_id = patient_id_from_reference(value)
        if patient_id is None:
            raise _bad(name, "must be Patient/<id> or <id>")
        return patient_id
    return value


class PagingTokens:
    """Seals searches into opaque, expiring, caller-bound paging tokens."""

    def __init__(self, key: str, ttl_seconds: int = 3600) -> None:
        digest = hashlib.sha256(("ehr-gateway-paging:" + key).encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))
        self.ttl = ttl_seconds

    def seal(self, search: Search, subject: str) -> str:
        payload = {
            "t": search.resource_type,
            "p": search.params,
            "c": search.count,
            "o": search.offset,
            "s": subject,
        }
        token = self._fernet.encrypt(json.dumps(payload, separators=(",", ":")).encode())
        return token.decode()

    def open(self, token: str, resource_type: str, subject: str) -> Search:
        """The search of a token; 400 if forged, expired, or another caller's."""
        try:
            payload = json.loads(self._fernet.decrypt(token.encode(), ttl=self.ttl))
            valid = payload["t"] == resource_type and payload["s"] == subject
            search = Search(resource_type, dict(payload["p"]), int(payload["c"]), int(payload["o"]))
        except (InvalidToken, ValueError, KeyError, TypeError):
            valid = False
        if not valid:
            raise _bad("_page", "the paging link is invalid or has expired")
        return search


def search_from_query(
    resource_type: str, pairs: list[tuple[str, str]], tokens: PagingTokens, subject: str
) -> Search:
    """A search from request parameters, or from its paging token."""
    pages = [value for name, value in pairs if name == "_page"]
    if pages:
        others = [name for name, _ in pairs if name not in ("_page", "_format")]
        if len(pages) > 1 or others:
            raise _bad("_page", "a paging link cannot be combined with other parameters")
        return tokens.open(pages[0], resource_type, subject)
    return parse_search(resource_type, pairs)


def searchset(
    search: Search,
    result: dict[str, Any],
    *,
    base_url: str,
    tokens: PagingTokens,
    subject: str,
) -> dict[str, Any]:
    """The searchset Bundle of the projections service's search result."""
    resources = [r for r in result.get("resources") or () if isinstance(r, dict)]
    total = int(result.get("total") or 0)

    def link(relation: str, page: Search) -> dict[str, str]:
        url = f"{base_url}/{search.resource_type}?_page={tokens.seal(page, subject)}"
        return {"relation": relation, "url": url}

    links = [link("self", search)]
    if search.offset + search.count < total:
        links.append(link("next", search.page(search.offset + search.count)))
    if search.offset > 0:
        links.append(link("previous", search.page(search.offset - search.count)))
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links,
        "entry": [
            {
                "fullUrl": f"{base_url}/{search.resource_type}/{r.get('id')}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in resources
        ],
    }
