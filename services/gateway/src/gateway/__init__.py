"""The gateway: the platform's only public door.

It verifies every caller, applies the permission table, limits rates, records
each access decision as an event, and serves the FHIR R4 facade over the
records and projections services.
"""
