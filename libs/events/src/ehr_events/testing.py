"""Test helpers every service uses: signed tokens, settings, contract base cases.

:class:`TokenFactory` makes real ES256 tokens with its own key pair, and primes a
:class:`~ehr_events.security.TokenVerifier` with the matching JWKS, so service
tests exercise the real verification code without the identity service.
"""

from __future__ import annotations

import base64
import os
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from .config import Profile, ServiceSettings
from .security import TokenVerifier

TEST_ISSUER = "http://127.0.0.1:8000/auth"
TEST_AUDIENCE = "ehr"


def random_cipher_key() -> str:
    """A fresh AES-256 key, base64, as ``EHR_CIPHER_KEY`` expects."""
    return base64.b64encode(os.urandom(32)).decode()


class TokenFactory:
    """Issues ES256 tokens under one key id, and the JWKS to verify them."""

    def __init__(self, issuer: str = TEST_ISSUER, audience: str = TEST_AUDIENCE) -> None:
        self.issuer = issuer
        self.audience = audience
        self.kid = uuid.uuid4().hex
        self.private_key = ec.generate_private_key(ec.SECP256R1())

    def jwks(self) -> dict[str, Any]:
        jwk = ECAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        jwk.update({"kid": self.kid, "alg": "ES256", "use": "sig"})
        return {"keys": [jwk]}

    def verifier(self) -> TokenVerifier:
        verifier = TokenVerifier("http://127.0.0.1:9/unused", self.issuer, self.audience)
        verifier.set_jwks(self.jwks())
        verifier.cache_seconds = 10**9
        return verifier

    def token(
        self,
        roles: list[str] | tuple[str, ...] = ("physician",),
        *,
        subject: str | None = None,
        organization_id: str | None = "org-test",
        ttl: int = 600,
        **overrides: Any,
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject or str(uuid.uuid4()),
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": uuid.uuid4().hex,
            "roles": list(roles),
            "org": organization_id,
            "preferred_username": "tester",
        }
        claims.update(overrides)
        return jwt.encode(claims, self.private_key, algorithm="ES256", headers={"kid": self.kid})

    def headers(
        self, roles: list[str] | tuple[str, ...] = ("physician",), **kw: Any
    ) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(roles, **kw)}"}


def settings_for_test(
    settings_class: type[ServiceSettings],
    var_dir: Path,
    *,
    database_url: str = "",
    db_schema: str = "",
    **overrides: Any,
) -> Any:
    """Settings of the ``test`` profile, with a fresh cipher key and its own folder."""
    # every secret key of the settings gets a fresh random value (the defaults are
    # development secrets, refused in the test profile)
    for name, info in settings_class.model_fields.items():
        fresh = name.endswith("_key") and name not in (*overrides, "cipher_key")
        if fresh and info.annotation is str:
            overrides[name] = base64.b64encode(os.urandom(32)).decode()
    return settings_class(
        profile=Profile.test,
        var_dir=var_dir,
        database_url=database_url,
        db_schema=db_schema,
        cipher_key=random_cipher_key(),
        token_issuer=TEST_ISSUER,
        token_audience=TEST_AUDIENCE,
        **overrides,
    )


class ProducerContract:
    """Base test case for a service that publishes integration events.

    Subclass it (the subclass name must start with ``Test``) and provide
    ``source``, :meth:`translate` and :meth:`domain_events`, a realistic story
    driven through the service's own application. The tests prove that what
    the service would publish is in the catalogue, validates against its schema,
    belongs to the service's context, and that the story covers every type the
    context declares.
    """

    source: str = ""
    #: Catalogue types of the context the story need not produce (with a reason).
    not_covered: dict[str, str] = {}

    def translate(self, domain_event: Any) -> Any:
        raise NotImplementedError

    def domain_events(self) -> list[Any]:
        raise NotImplementedError

    def published(self) -> list[Any]:
        return [e for e in (self.translate(d) for d in self.domain_events()) if e is not None]

    def test_every_published_event_is_in_the_catalogue_and_validates(self) -> None:
        from .catalogue import load_all

        catalogue = load_all()
        published = self.published()
        assert published, "the story publishes nothing"
        for event in published:
            assert event.event_type in catalogue, f"{event.event_type} is not in the catalogue"
            catalogue.validate(event.event_type, event.model_dump(mode="json"))

    def test_published_events_belong_to_the_source_context(self) -> None:
        for event in self.published():
            assert event.event_type.startswith(f"ehr.{self.source}."), event.event_type

    def test_the_story_covers_every_type_of_the_context(self) -> None:
        from .catalogue import load_all

        catalogue = load_all()
        declared = {
            catalogue.latest_type(t)
            for t in catalogue.types()
            if t.startswith(f"ehr.{self.source}.")
        }
        produced = {e.event_type for e in self.published()}
        missing = declared - produced - set(self.not_covered)
        assert not missing, f"never published by the story: {sorted(missing)}"


class ConsumerContract:
    """Base test case for a projection: it must accept every type on its topics.

    Subclass it and provide :meth:`make_runner` (a runner on a scratch database)
    and :meth:`envelopes` (decoded events, typically what the producers' stories
    publish). Applying them twice must change nothing the second time.
    """

    def make_runner(self, tmp_path: Path) -> Any:
        raise NotImplementedError

    def envelopes(self) -> list[Any]:
        raise NotImplementedError

    def test_the_projection_applies_every_event_once(self, tmp_path: Path) -> None:
        from .catalogue import load_all

        catalogue = load_all()
        runner = self.make_runner(tmp_path)
        items = [
            (envelope, catalogue.upcast(envelope.type, envelope.data))
            for envelope in self.envelopes()
        ]
        assert items, "no events to apply"
        assert runner.apply_envelopes(items) == len({e.id for e, _ in items})
        assert runner.apply_envelopes(items) == 0

    def test_the_projection_follows_topics_that_carry_its_types(self) -> None:
        runner_topics = set(self.make_runner_topics())
        contexts = {e.type.split(".")[1] for e in self.envelopes()}
        assert {f"ehr.{c}.events" for c in contexts} <= runner_topics

    def make_runner_topics(self) -> list[str]:
        raise NotImplementedError
