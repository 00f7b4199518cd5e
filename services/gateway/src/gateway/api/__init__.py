"""The gateway's non-FHIR routes: identity's token endpoints and the access log."""
