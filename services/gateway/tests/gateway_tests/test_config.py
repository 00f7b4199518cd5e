"""Settings of the gateway refuse default secrets outside development."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ehr_events.testing import random_cipher_key
from gateway.config import DEV_PAGING_KEY, GatewaySettings


def test_the_default_paging_key_is_refused_outside_development() -> None:
    with pytest.raises(ValidationError, match="EHR_PAGING_KEY"):
        GatewaySettings(profile="production", cipher_key=random_cipher_key())


def test_development_runs_with_the_default_keys() -> None:
    settings = GatewaySettings(profile="development")

    assert settings.paging_key == DEV_PAGING_KEY
    assert settings.fhir_base == "http://127.0.0.1:8000/fhir"


def test_settings_are_read_from_ehr_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EHR_RATE_PER_SUBJECT", "5")
    monkeypatch.setenv("EHR_FHIR_BASE_URL", "https://ehr.example/fhir/")

    settings = GatewaySettings()

    assert settings.rate_per_subject == 5
    assert settings.fhir_base == "https://ehr.example/fhir"
