"""Shared event platform of the EHR: envelope, catalogue, outbox relay, projection runner.

Every service depends on this package and on nothing of another service.
"""
