"""The chart's Patient resources: built field by field, they are what ``compact`` keeps.

The reference below renders a Patient the plain way (every field, then
``fhir.compact``); the chart's builders skip that filtering, and must give the
same JSON, key order included, for every shape of demographics.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from ehr_events.catalogue.records import Demographics
from projections import fhir
from projections.chart import to_json

MRN_SYSTEM = "urn:ehr:mrn"


def reference_patient(
    patient_id: str,
    demographics: Demographics,
    *,
    mrn: str | None,
    mrn_system: str,
    version: int,
    last_updated: datetime,
) -> dict[str, Any]:
    compact = fhir.compact
    identifiers: list[dict[str, Any]] = []
    mrn_seen = False
    for identifier in demographics.identifiers:
        item = compact(
            {"use": identifier.use, "system": identifier.system, "value": identifier.value}
        )
        if mrn is not None and identifier.value == mrn and not mrn_seen:
            mrn_seen = True
            identifiers.insert(0, compact({**item, "type": fhir.MRN_TYPE}))
        else:
            identifiers.append(item)
    if mrn is not None and not mrn_seen:
        identifiers.insert(0, fhir.mrn_identifier(mrn_system, mrn))
    return compact(
        {
            "resourceType": "Patient",
            "id": patient_id,
            "meta": fhir.meta(version, last_updated),
            "identifier": identifiers,
            "name": [
                compact({"use": n.use, "family": n.family, "given": list(n.given)})
                for n in demographics.name
            ],
            "telecom": [
                compact({"system": t.system, "value": t.value, "use": t.use})
                for t in demographics.telecom
            ],
            "gender": demographics.sex,
            "birthDate": demographics.birth_date.isoformat(),
            "address": [
                compact(
                    {
                        "use": a.use,
                        "line": list(a.line),
                        "city": a.city,
                        "state": a.state,
                        "postalCode": a.postal_code,
                        "country": a.country,
                    }
                )
                for a in demographics.address
            ],
        }
    )


def maybe(rng: random.Random, value: Any) -> Any:
    """The value, None, or (for text) an empty string: FHIR JSON keeps "" but drops None."""
    return rng.choice([value, value, None, "" if isinstance(value, str) else None])


def random_demographics(rng: random.Random, mrn: str) -> dict[str, Any]:
    identifiers = [
        {"system": rng.choice(["urn:a", "urn:b", ""]), "value": rng.choice([mrn, "X-1", "X-2"])}
        for _ in range(rng.randint(1, 3))
    ]
    for identifier in identifiers:
        if rng.random() < 0.5:
            identifier["use"] = rng.choice(["usual", "official", "secondary"])
    return {
        "identifiers": identifiers,
        "name": [
            {
                "family": rng.choice(["Müller", "O'Brien", ""]),
                "given": rng.sample(["Anna", "Maria", "Zoë", ""], rng.randint(0, 3)),
                **({"use": "official"} if rng.random() < 0.5 else {}),
            }
            for _ in range(rng.randint(1, 2))
        ],
        "birth_date": (date(1930, 1, 1) + timedelta(days=rng.randint(0, 30000))).isoformat(),
        "sex": rng.choice(["male", "female", "other", "unknown"]),
        "telecom": [
            {
                "system": rng.choice(["phone", "email"]),
                "value": rng.choice(["+41 44 000 00 00", ""]),
                **({"use": "home"} if rng.random() < 0.5 else {}),
            }
            for _ in range(rng.randint(0, 2))
        ],
        "address": [
            {
                key: value
                for key, value in {
                    "line": rng.sample(["12 Lantern Row", "Flat 3", ""], rng.randint(0, 2)),
                    "city": maybe(rng, "Springfield"),
                    "state": maybe(rng, "ZH"),
                    "postal_code": maybe(rng, "01010"),
                    "country": maybe(rng, "CH"),
                    "use": rng.choice(["home", None]),
                }.items()
                if value is not None or rng.random() < 0.5
            }
            for _ in range(rng.randint(0, 2))
        ],
    }


@pytest.mark.parametrize("seed", range(100))
def test_a_patient_is_what_compact_keeps_of_every_field(seed: int) -> None:
    rng = random.Random(seed)
    demographics = Demographics.model_validate(random_demographics(rng, "MRN-7"))
    arguments: dict[str, Any] = {
        "mrn": rng.choice(["MRN-7", "MRN-8", None]),
        "mrn_system": MRN_SYSTEM,
        "version": rng.randint(1, 9),
        "last_updated": datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
        + timedelta(microseconds=rng.randint(0, 10**12)),
    }
    if seed % 7 == 0:
        arguments["last_updated"] = arguments["last_updated"].astimezone(
            timezone(timedelta(hours=-5))
        )
    built = fhir.patient("p-1", demographics, **arguments)
    expected = reference_patient("p-1", demographics, **arguments)
    # the same JSON text: the same keys, values and order, at every level
    assert to_json(built) == to_json(expected)
    assert built == expected
