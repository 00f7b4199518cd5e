"""Fixtures of the gateway's tests: the upstream stand-in, tokens, settings, an app client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ehr_events.security import TokenVerifier
from ehr_events.testing import TokenFactory
from gateway.main import create_app

from .builders import gateway_settings
from .standin import StandIn


@pytest.fixture(scope="session")
def standin() -> Iterator[StandIn]:
    server = StandIn()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tokens() -> TokenFactory:
    return TokenFactory()


@pytest.fixture
def upstream(standin: StandIn, tokens: TokenFactory) -> StandIn:
    """The stand-in, emptied, publishing the token factory's key."""
    standin.reset()
    standin.jwks = tokens.jwks()
    return standin


@pytest.fixture
def make_client(tmp_path: Path, upstream: StandIn) -> Iterator[Callable[..., TestClient]]:
    """Start a gateway with settings overrides; stopped at the end of the test."""
    clients: list[TestClient] = []

    def make(verifier: TokenVerifier | None = None, **overrides: Any) -> TestClient:
        settings = gateway_settings(tmp_path / f"gw{len(clients)}", upstream.url, **overrides)
        client = TestClient(create_app(settings, verifier))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()
