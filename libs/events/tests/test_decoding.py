"""Decoding Kafka records: the fast path reads exactly what ``json.loads`` and pydantic read.

The reference below is the decoder as it was before the fast path: every record,
valid or not, must decode to the same envelope and event, or be refused the same way.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from aiokafka import ConsumerRecord

from ehr_events.catalogue import CatalogueError
from ehr_events.config import ServiceSettings
from ehr_events.db import make_engine
from ehr_events.envelope import _HEADER_FIELDS, SPECVERSION, Envelope, EnvelopeError
from ehr_events.projection import ProjectionRunner
from ehr_events.testing import settings_for_test

from .builders import NotesProjection, NoteTakenV1, NoteTakenV2, envelope_for, test_catalogue

Headers = list[tuple[str, Any]]


def reference_from_kafka(headers: Any, value: bytes | None) -> Envelope:
    """``Envelope.from_kafka`` as it read records before the fast path."""
    attrs: dict[str, Any] = {}
    try:
        for name, raw in headers or ():
            field = _HEADER_FIELDS.get(name)
            if field is not None:
                attrs[field] = raw.decode() if isinstance(raw, bytes | bytearray) else str(raw)
    except UnicodeDecodeError as exc:
        raise EnvelopeError("a CloudEvents attribute is not UTF-8") from exc
    for required in ("id", "source", "type", "specversion"):
        if required not in attrs:
            raise EnvelopeError(f"missing CloudEvents attribute {required!r}")
    if attrs["specversion"] != SPECVERSION:
        raise EnvelopeError("unsupported CloudEvents specversion")
    try:
        attrs["data"] = json.loads(value or b"{}")
    except ValueError as exc:
        raise EnvelopeError("event data is not JSON") from exc
    try:
        return Envelope.model_validate(attrs)
    except ValueError as exc:
        raise EnvelopeError("invalid CloudEvents attributes") from exc


def outcome(decode: Any, headers: Any, value: bytes | None) -> str:
    """What a decoder makes of a record: the envelope (as repr: NaN is not equal to
    itself) or the error it raises."""
    try:
        return repr(decode(headers, value))
    except (EnvelopeError, CatalogueError) as exc:
        return f"{type(exc).__name__}: {exc}"


def note_headers(**changes: Any) -> Headers:
    event = NoteTakenV2(note_id="n-1", patient_id="p-1", text="t", language="en")
    _, _, headers = envelope_for(event, "e-1").to_kafka()
    named = dict(headers)
    for name, value in changes.items():
        if value is None:
            named.pop(name, None)
        else:
            named[name] = value
    return list(named.items())


#: Values a relay writes, and the odd ones json.loads reads but pydantic's parser does not.
VALUES = [
    b'{"language":"en","note_id":"n-1","patient_id":"p-1","text":"t"}',
    json.dumps({"note_id": "n", "patient_id": "p", "text": "ünï ✓", "language": "en"}).encode(),
    json.dumps({"text": "ünï ✓"}, ensure_ascii=False).encode(),
    b'\xef\xbb\xbf{"text":"byte-order mark"}',
    '{"text":"UTF-16"}'.encode("utf-16"),
    b'{"text":"\\ud800 lone surrogate"}',
    b'{"text":"a","text":"duplicate key, the last wins"}',
    b'{"n":NaN,"i":Infinity,"big":123456789012345678901234567890,"e":1e400,"f":0.1}',
    b' {"padded": true} ',
    b'{"nested":{"list":[1,{"deep":null}]}}',
    b"",
    None,
    b"[1, 2]",
    b"null",
    b'"a string"',
    b"not json",
    b'{"text":"trailing"} garbage',
    b'{"text":"\x01 raw control character"}',
    b'{"text":"\xff not UTF-8"}',
    b'{"text":"unterminated',
]


@pytest.mark.parametrize("value", VALUES)
def test_event_data_decodes_as_json_loads_reads_it(value: bytes | None) -> None:
    headers = note_headers()
    assert outcome(Envelope.from_kafka, headers, value) == outcome(
        reference_from_kafka, headers, value
    )


HEADERS = [
    note_headers(),
    note_headers(ce_id=None),
    note_headers(ce_specversion=b"0.3"),
    note_headers(ce_time=b"not a time"),
    note_headers(ce_time=b"2026-01-02T03:04:05Z"),
    note_headers(ce_aggregateversion=b"three"),
    note_headers(ce_aggregateversion=b"7"),
    note_headers(ce_source=b"\xff\xfe"),
    note_headers(ce_subject="a str, not bytes"),
    note_headers(ce_actor=bytearray(b"from a bytearray")),
    note_headers(ce_unknownextension=b"dropped", traceparent=b"not ours"),
    [*note_headers(), ("ce_type", b"ehr.testing.NoteTaken.v1")],  # the last one counts
    [],
]


@pytest.mark.parametrize("headers", HEADERS)
def test_attributes_decode_as_before(headers: Headers) -> None:
    value = b'{"note_id":"n","patient_id":"p","text":"t","language":"en"}'
    assert outcome(Envelope.from_kafka, headers, value) == outcome(
        reference_from_kafka, headers, value
    )


def record(offset: int, headers: Headers, value: bytes | None) -> ConsumerRecord:
    return ConsumerRecord(
        "ehr.testing.events", 0, offset, 0, 0, b"k", value, None, 1, len(value or b""), headers
    )


class TestRunnerDecoding:
    @pytest.fixture
    def runner(self, tmp_path: Path) -> ProjectionRunner:
        settings = settings_for_test(ServiceSettings, tmp_path)
        return ProjectionRunner(
            NotesProjection(),
            make_engine(settings, "testing", "notes"),
            bootstrap="127.0.0.1:1",
            catalogue=test_catalogue,
        )

    def reference_decode(self, runner: ProjectionRunner, rec: ConsumerRecord) -> str:
        """The runner's decoding before the fast path; its envelopes now keep no data."""
        try:
            envelope = reference_from_kafka(rec.headers, rec.value)
            event = runner.catalogue.upcast(envelope.type, envelope.data)
        except (EnvelopeError, CatalogueError):
            return "skipped"
        return repr((envelope.model_copy(update={"data": {}}), event))

    @pytest.mark.parametrize("value", VALUES)
    @pytest.mark.parametrize("version", [1, 2])
    def test_event_data_is_read_as_the_dict_json_loads_reads(
        self, runner: ProjectionRunner, value: bytes | None, version: int
    ) -> None:
        # each value as the newest version (read straight into the schema) and as
        # an old one (upcast from its dict); both sorts of values, good and bad
        event_type = f"ehr.testing.NoteTaken.v{version}"
        rec = record(0, note_headers(ce_type=event_type.encode()), value)
        decoded = runner.decode(rec)
        assert (repr(decoded) if decoded else "skipped") == self.reference_decode(runner, rec)
        fields = {"note_id": "n", "patient_id": "p", "text": "ünï"}
        good = json.dumps({**fields, "language": "en"} if version == 2 else fields)
        for text in (good.encode(), b"\xef\xbb\xbf" + good.encode(), good.encode("utf-16")):
            rec = record(0, note_headers(ce_type=event_type.encode()), text)
            decoded = runner.decode(rec)
            assert decoded is not None and isinstance(decoded[1], NoteTakenV2)
            assert repr(decoded) == self.reference_decode(runner, rec)

    def test_the_runner_decodes_every_record_as_before_and_skips_the_unusable(
        self, runner: ProjectionRunner, caplog: pytest.LogCaptureFixture
    ) -> None:
        old = NoteTakenV1(note_id="n-2", patient_id="p-1", text="old")
        records = [
            record(0, note_headers(), VALUES[0]),
            # an old version, upcast on read
            record(
                1,
                note_headers(ce_id=b"e-2", ce_type=old.event_type),
                old.model_dump_json().encode(),
            ),
            # data that is not its schema's, an unknown type, not JSON, not an object
            record(2, note_headers(ce_id=b"e-3"), b'{"note_id":"n"}'),
            record(3, note_headers(ce_id=b"e-4", ce_type=b"ehr.testing.Unknown.v1"), b"{}"),
            record(4, note_headers(ce_id=b"e-5"), b"junk"),
            record(5, note_headers(ce_id=b"e-6"), b"[]"),
            record(6, note_headers(ce_id=None), VALUES[0]),
            # a byte-order mark: json.loads reads it, so the record is as good as ever
            record(7, note_headers(ce_id=b"e-8"), b"\xef\xbb\xbf" + VALUES[0]),
        ]
        with caplog.at_level(logging.WARNING, logger="ehr.projection"):
            decoded = [runner.decode(r) for r in records]
        assert [repr(d) if d is not None else "skipped" for d in decoded] == [
            self.reference_decode(runner, r) for r in records
        ]
        assert [d is not None for d in decoded] == [1, 1, 0, 0, 0, 0, 0, 1]
        assert isinstance(decoded[1][1], NoteTakenV2)  # type: ignore[index]
        skipped = [r.getMessage() for r in caplog.records]
        assert len(skipped) == 5
        assert all("notes: skipping record at ehr.testing.events/0/" in m for m in skipped)
        # the schema error names the fields, never their values
        assert "patient_id" in skipped[0] and "text" in skipped[0]

        # and applied in one batch, the usable records count once each
        assert runner.apply_batch(records, runner.generation()) == 3
        assert runner.applied_count() == 3
