import asyncio
import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from ehr_events.security import InvalidToken, bearer_token
from ehr_events.testing import TokenFactory


def verify(factory: TokenFactory, token: str):
    return asyncio.run(factory.verifier().verify(token))


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.fixture
def factory() -> TokenFactory:
    return TokenFactory()


def test_a_valid_token_yields_its_principal(factory: TokenFactory) -> None:
    principal = verify(factory, factory.token(["nurse"], subject="u-1"))
    assert principal.subject == "u-1"
    assert principal.roles == {"nurse"}
    assert principal.actor() == {"sub": "u-1", "role": "nurse", "org": "org-test"}


def test_alg_none_is_refused(factory: TokenFactory) -> None:
    claims = jwt.decode(factory.token(), options={"verify_signature": False})
    forged = f"{b64({'alg': 'none', 'kid': factory.kid})}.{b64(claims)}."
    with pytest.raises(InvalidToken, match="algorithm"):
        verify(factory, forged)


def test_hs256_signed_with_the_public_key_is_refused(factory: TokenFactory) -> None:
    public_pem = factory.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = jwt.decode(factory.token(), options={"verify_signature": False})
    header = b64({"alg": "HS256", "kid": factory.kid, "typ": "JWT"})
    import hashlib
    import hmac

    signing_input = f"{header}.{b64(claims)}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
    with pytest.raises(InvalidToken):
        verify(factory, forged)


def test_a_token_signed_by_another_key_is_refused(factory: TokenFactory) -> None:
    other = TokenFactory()
    other.kid = factory.kid  # same kid, different key
    with pytest.raises(InvalidToken, match="signature"):
        verify(factory, other.token())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"exp": int(time.time()) - 60}, "expired"),
        ({"nbf": int(time.time()) + 600}, "not yet valid"),
        ({"iss": "https://elsewhere.example/auth"}, "issuer"),
        ({"aud": "another-api"}, "audience"),
    ],
)
def test_expired_future_and_foreign_tokens_are_refused(
    factory: TokenFactory, overrides: dict, message: str
) -> None:
    with pytest.raises(InvalidToken, match=message):
        verify(factory, factory.token(**overrides))


def test_an_unknown_key_id_is_refused_without_a_reachable_jwks(factory: TokenFactory) -> None:
    stranger = TokenFactory()
    with pytest.raises(InvalidToken):
        verify(factory, stranger.token())


def test_a_token_without_jti_is_refused(factory: TokenFactory) -> None:
    token = jwt.encode(
        {
            "iss": factory.issuer,
            "aud": factory.audience,
            "sub": "u",
            "iat": int(time.time()),
            "exp": int(time.time()) + 60,
        },
        factory.private_key,
        algorithm="ES256",
        headers={"kid": factory.kid},
    )
    with pytest.raises(InvalidToken, match="jti"):
        verify(factory, token)


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer ", "token"])
def test_missing_or_malformed_authorization_is_refused(header: str | None) -> None:
    with pytest.raises(InvalidToken):
        bearer_token(header)


def test_a_remembered_token_is_still_refused_once_it_expires(factory: TokenFactory) -> None:
    verifier = factory.verifier()
    verifier.leeway = 0
    token = factory.token(ttl=1)

    async def scenario() -> None:
        assert (await verifier.verify(token)).roles == {"physician"}
        await asyncio.sleep(2.1)
        with pytest.raises(InvalidToken, match="expired"):
            await verifier.verify(token)

    asyncio.run(scenario())


def test_a_remembered_token_is_refused_once_its_key_leaves_the_key_set(
    factory: TokenFactory,
) -> None:
    verifier = factory.verifier()
    token = factory.token()

    async def scenario() -> None:
        await verifier.verify(token)
        verifier.set_jwks(TokenFactory().jwks())  # identity dropped the key
        with pytest.raises(InvalidToken, match="unknown signing key"):
            await verifier.verify(token)

    asyncio.run(scenario())


def test_remembered_tokens_are_bounded(factory: TokenFactory) -> None:
    verifier = factory.verifier()
    verifier.remember = 2
    tokens = [factory.token(subject=f"u-{i}") for i in range(3)]

    async def scenario() -> list[str]:
        return [(await verifier.verify(t)).subject for t in tokens + tokens]

    assert asyncio.run(scenario()) == ["u-0", "u-1", "u-2"] * 2
    assert len(verifier._verified) == 2
