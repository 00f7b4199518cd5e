"""The event catalogue: one frozen, versioned schema per integration event type.

Integration events are the public contract on Kafka. A type name reads
``ehr.<context>.<EventName>.v<N>``. Old versions stay in the catalogue and are
upcast on read, one version at a time, to the newest version of their event.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ..envelope import parse_json

TYPE_PATTERN = re.compile(r"^ehr\.(?P<context>[a-z]+)\.(?P<name>[A-Za-z]+)\.v(?P<version>\d+)$")


class CatalogueError(LookupError):
    """An event type is not in the catalogue, or its data does not match its schema."""


class IntegrationEvent(BaseModel):
    """Base of every integration event schema. Subclasses set ``event_type``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]

    @classmethod
    def type_context(cls) -> str:
        return _split(cls.event_type)[0]

    @classmethod
    def type_name(cls) -> str:
        return _split(cls.event_type)[1]

    @classmethod
    def type_version(cls) -> int:
        return _split(cls.event_type)[2]


Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


def _split(event_type: str) -> tuple[str, str, int]:
    match = TYPE_PATTERN.match(event_type)
    if match is None:
        raise CatalogueError(f"malformed event type {event_type!r}")
    return match["context"], match["name"], int(match["version"])


class Catalogue:
    """Registry of integration event schemas and the upcasters between their versions."""

    def __init__(self) -> None:
        self._schemas: dict[str, type[IntegrationEvent]] = {}
        self._upcasters: dict[str, Upcaster] = {}
        #: newest type of each type asked about; reset whenever a schema is registered
        self._latest: dict[str, str] = {}

    def register(self, schema: type[IntegrationEvent]) -> type[IntegrationEvent]:
        """Add a schema (usable as a class decorator)."""
        _split(schema.event_type)
        if schema.event_type in self._schemas and self._schemas[schema.event_type] is not schema:
            raise CatalogueError(f"{schema.event_type} is registered twice")
        self._schemas[schema.event_type] = schema
        self._latest.clear()
        return schema

    def upcaster(self, from_type: str) -> Callable[[Upcaster], Upcaster]:
        """Register the function that turns ``from_type`` data into the next version."""

        def decorate(fn: Upcaster) -> Upcaster:
            self._upcasters[from_type] = fn
            return fn

        return decorate

    def __contains__(self, event_type: str) -> bool:
        return event_type in self._schemas

    def types(self) -> list[str]:
        return sorted(self._schemas)

    def schema(self, event_type: str) -> type[IntegrationEvent]:
        try:
            return self._schemas[event_type]
        except KeyError:
            raise CatalogueError(f"{event_type} is not in the event catalogue") from None

    def validate(self, event_type: str, data: dict[str, Any]) -> IntegrationEvent:
        """Validate data against exactly the schema of ``event_type`` (no upcasting)."""
        try:
            return self.schema(event_type).model_validate(data)
        except ValidationError as exc:
            raise _mismatch(event_type, exc) from None

    def latest_type(self, event_type: str) -> str:
        latest = self._latest.get(event_type)
        if latest is None:
            context, name, version = _split(event_type)
            while f"ehr.{context}.{name}.v{version + 1}" in self._schemas:
                version += 1
            latest = f"ehr.{context}.{name}.v{version}"
            if event_type in self._schemas:  # no cache entries for unknown types
                self._latest[event_type] = latest
        return latest

    def upcast(self, event_type: str, data: dict[str, Any]) -> IntegrationEvent:
        """Validate ``data`` of ``event_type`` and upcast it to the newest version.

        Data of the newest version is validated once; older data is validated
        against its own schema, upcast step by step, and validated again at the end.
        """
        latest = self.latest_type(event_type)
        if latest == event_type:
            return self.validate(event_type, data)
        self.validate(event_type, data)
        context, name, version = _split(event_type)
        current, current_data = event_type, dict(data)
        while current != latest:
            step = self._upcasters.get(current)
            if step is None:
                raise CatalogueError(f"no upcaster from {current}")
            version += 1
            current, current_data = f"ehr.{context}.{name}.v{version}", step(current_data)
        return self.validate(current, current_data)

    def upcast_json(self, event_type: str, value: bytes | None) -> IntegrationEvent:
        """:meth:`upcast` of the data a message's value holds as JSON text.

        Data of the newest version is read from the text straight into its schema,
        with no dict in between. Older data, and text pydantic's parser refuses but
        ``json.loads`` reads (see :func:`~ehr_events.envelope.parse_json`), go the
        way of :meth:`upcast`. What either refuses raises :class:`CatalogueError`,
        or :class:`~ehr_events.envelope.EnvelopeError` if it is not JSON at all.
        """
        text = value or b"{}"
        if self.latest_type(event_type) == event_type:
            try:
                return self.schema(event_type).model_validate_json(text)
            except ValidationError as exc:
                if not any(e["type"] == "json_invalid" for e in exc.errors()):
                    raise _mismatch(event_type, exc) from None
        data = parse_json(text)
        if not isinstance(data, dict):
            raise CatalogueError(f"{event_type} data is not a JSON object")
        return self.upcast(event_type, data)


def _mismatch(event_type: str, exc: ValidationError) -> CatalogueError:
    """The error for data that does not match its schema: it names the fields, never
    their values (they may be PHI)."""
    fields = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors()})
    return CatalogueError(
        f"{event_type} data does not match its schema "
        f"(fields: {', '.join(fields) or 'the data as a whole'})"
    )


#: The platform's catalogue; the context modules below register into it.
catalogue = Catalogue()


def load_all() -> Catalogue:
    """Import every context module so the catalogue is complete."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return catalogue
