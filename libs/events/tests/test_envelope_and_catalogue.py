from datetime import UTC, datetime

import pytest

from ehr_events.catalogue import CatalogueError, load_all
from ehr_events.envelope import Envelope, EnvelopeError

from .builders import NoteTakenV1, NoteTakenV2, envelope_for, test_catalogue


def test_envelope_round_trips_through_kafka_binary_mode() -> None:
    envelope = Envelope(
        source="records",
        type="ehr.records.AllergyRefuted.v1",
        subject="agg-1",
        time=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        aggregateversion=3,
        patientid="pat-1",
        actor="user-9",
        actorrole="nurse",
        organization="org-1",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        sequence=42,
        data={"allergy_id": "agg-1"},
    )
    key, value, headers = envelope.to_kafka()
    names = dict(headers)
    assert key == b"pat-1"
    assert names["ce_specversion"] == b"1.0"
    assert names["ce_type"] == b"ehr.records.AllergyRefuted.v1"
    assert names["content-type"] == b"application/json"
    assert Envelope.from_kafka(headers, value) == envelope


def test_key_falls_back_to_the_aggregate_without_a_patient() -> None:
    envelope = Envelope(source="identity", type="ehr.identity.UserDisabled.v1", subject="u-1")
    assert envelope.to_kafka()[0] == b"u-1"


def test_message_without_cloudevents_headers_is_refused() -> None:
    with pytest.raises(EnvelopeError):
        Envelope.from_kafka([("ce_id", b"1")], b"{}")


def test_message_with_non_json_data_is_refused() -> None:
    _, _, headers = Envelope(source="x", type="ehr.x.Y.v1").to_kafka()
    with pytest.raises(EnvelopeError):
        Envelope.from_kafka(headers, b"not json")


def test_catalogue_refuses_an_unknown_type() -> None:
    with pytest.raises(CatalogueError, match="not in the event catalogue"):
        load_all().validate("ehr.records.PatientTeleported.v1", {})


def test_catalogue_names_the_fields_that_do_not_validate() -> None:
    with pytest.raises(CatalogueError) as caught:
        load_all().validate(
            "ehr.records.AllergyRefuted.v1",
            {"allergy_id": "a", "refuted_at": "not-a-date", "surprise": 1},
        )
    message = str(caught.value)
    assert "patient_id" in message and "refuted_at" in message and "surprise" in message
    assert "not-a-date" not in message  # values are never echoed: they may be PHI


def test_old_versions_are_upcast_on_read() -> None:
    old = NoteTakenV1(note_id="n", patient_id="p", text="t").model_dump()
    upcast = test_catalogue.upcast("ehr.testing.NoteTaken.v1", old)
    assert isinstance(upcast, NoteTakenV2)
    assert upcast.language == "und"
    assert test_catalogue.latest_type("ehr.testing.NoteTaken.v1") == "ehr.testing.NoteTaken.v2"


def test_integration_events_are_frozen() -> None:
    event = NoteTakenV2(note_id="n", patient_id="p", text="t", language="en")
    with pytest.raises(ValueError):
        event.text = "changed"  # type: ignore[misc]


def test_every_catalogue_type_follows_the_naming_rule() -> None:
    for event_type in load_all().types():
        context, name, version = event_type.split(".")[1:]
        assert context in {"records", "identity", "gateway"}
        assert name[0].isupper() and version.startswith("v")


def test_envelope_builder_sets_the_partition_key() -> None:
    envelope = envelope_for(NoteTakenV2(note_id="n", patient_id="p-7", text="t", language="en"))
    assert envelope.key == "p-7"


class _LooseNoteTaken(NoteTakenV2):
    """Claims the catalogue's type but is not its schema, and lets a field be anything."""

    model_config = {"frozen": True, "extra": "allow"}


def test_the_relay_checks_an_event_that_is_not_of_its_catalogue_schema() -> None:
    from eventsourcing.application import Application

    from ehr_events.outbox import envelope_of

    from .builders import Notes, translate

    notes = Notes()  # the in-memory store: no I/O
    notes.take("patient-1", "fine")
    notification = notes.recorder.select_notifications(start=None, limit=1)[0]
    app: Application = notes
    envelope = envelope_of(app, translate, "testing", notification, test_catalogue)
    assert envelope is not None and envelope.data["text"] == "fine"

    def loose(domain_event: object) -> NoteTakenV2 | None:
        built = translate(domain_event)
        assert built is not None
        return _LooseNoteTaken(**built.model_dump(), surprise=1)

    # the same event from a class the catalogue does not hold: checked, and refused
    with pytest.raises(CatalogueError, match="surprise"):
        envelope_of(app, loose, "testing", notification, test_catalogue)
