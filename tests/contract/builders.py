"""FHIR payloads for the end-to-end tests (shared with the benchmark)."""

from ehr_events.fhirsamples import MR_TYPE, allergy, patient

__all__ = ["MR_TYPE", "allergy", "patient"]
