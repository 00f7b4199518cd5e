"""Organisations users belong to (a clinic, a hospital, a partner)."""

from __future__ import annotations

from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from .rules import check_organization_name, normalise_organization_name

ORGANIZATION_NAMESPACE = UUID("5d2e8f43-1b7a-4c6e-8f0d-9a3b2c1e4d57")


class Organization(Aggregate):
    """An organisation, keyed by its name (case and spacing do not make a new one)."""

    class Registered(Aggregate.Created):
        name: str
        actor: dict[str, str] | None

    @staticmethod
    def create_id(name: str) -> UUID:
        return uuid5(ORGANIZATION_NAMESPACE, normalise_organization_name(name))

    @classmethod
    def register(cls, name: str, actor: dict[str, str] | None = None) -> Organization:
        return cls(name=check_organization_name(name), actor=actor)

    @event(Registered)
    def __init__(self, name: str, actor: dict[str, str] | None = None) -> None:
        self.name = name
