"""Keys from a JWKS URL, against a real HTTP endpoint on a loopback port."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import AsyncIterator

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from fastapi_channels.auth import JWKS, AuthenticationError, AuthFailure, TokenVerifier
from fastapi_channels.auth.jwks import DEFAULT_COOLDOWN, DEFAULT_TTL, MAX_TTL, freshness
from fastapi_channels.wire.errors import ConfigurationError

from .auth_support import claims, forge, rsa_private_pem, rsa_public_pem
from .jwks_provider import Clock, Provider, SigningKey, gather_bounded, serving, unknown_kid_token

LOGGER = "fastapi_channels.auth.jwks"


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    async with serving(Provider(SigningKey.ec("a"))) as running:
        yield running


@pytest.fixture
def clock() -> Clock:
    return Clock()


def source(provider: Provider, clock: Clock, **options: float) -> JWKS:
    return JWKS(provider.url, clock=clock, **options)


async def refused(verifier: TokenVerifier, token: str) -> AuthenticationError:
    with pytest.raises(AuthenticationError) as caught:
        await verifier.verify_async(token)
    return caught.value


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= 30]


async def test_the_first_token_fetches_and_cached_keys_need_no_request(
    provider: Provider, clock: Clock
) -> None:
    keys = source(provider, clock)
    verifier = TokenVerifier(keys)
    assert keys.expires_at is None
    for _ in range(20):
        assert (await verifier.verify_async(provider.keys[0].sign())).kid == "a"
    assert provider.fetches == 1
    assert keys.kids == {"a"}
    assert verifier.verify(provider.keys[0].sign()).claims["sub"] == "42"  # cached: no await


async def test_rotation_a_new_kid_refetches_and_a_removed_key_is_refused(
    provider: Provider, clock: Clock
) -> None:
    keys = source(provider, clock)
    verifier = TokenVerifier(keys)
    old = provider.keys[0]
    assert (await verifier.verify_async(old.sign())).kid == "a"

    new = SigningKey.ec("b")
    provider.keys.append(new)
    clock.advance(DEFAULT_COOLDOWN)
    assert (await verifier.verify_async(new.sign())).kid == "b"  # refetched for the new kid
    assert provider.fetches == 2

    provider.keys.remove(old)
    clock.advance(DEFAULT_TTL)
    assert (await verifier.verify_async(old.sign())).kid == "a"  # stale: used, refetch started
    assert keys.fetching
    assert await keys.refresh()  # joins the refetch in flight
    assert provider.fetches == 3
    assert keys.kids == {"b"}
    assert (await refused(verifier, old.sign())).failure is AuthFailure.UNKNOWN_KEY
    assert (await verifier.verify_async(new.sign())).kid == "b"
    assert provider.fetches == 3  # the refused kid did not refetch within the cooldown


async def test_a_flood_of_unknown_kids_makes_a_bounded_number_of_fetches(
    provider: Provider, clock: Clock
) -> None:
    verifier = TokenVerifier(source(provider, clock))
    await verifier.verify_async(provider.keys[0].sign())
    clock.advance(DEFAULT_COOLDOWN)

    started = time.perf_counter()
    results = await gather_bounded(
        *(verifier.verify_async(unknown_kid_token()) for _ in range(1000))
    )
    concurrent = time.perf_counter() - started
    assert all(isinstance(r, AuthenticationError) for r in results)
    assert {r.failure for r in results} == {AuthFailure.UNKNOWN_KEY}
    assert provider.fetches == 2  # the 1000 concurrent handshakes shared one fetch

    started = time.perf_counter()
    for _ in range(1000):  # 0.1 s apart on the clock: 100 s in all, one fetch per 10 s at most
        clock.advance(0.1)
        assert (await refused(verifier, unknown_kid_token())).failure is AuthFailure.UNKNOWN_KEY
    spread = time.perf_counter() - started
    assert 2 + 9 <= provider.fetches <= 2 + 11
    print(f"1000 concurrent: {concurrent * 1000:.0f} ms; 1000 over 100 s: {spread * 1000:.0f} ms")


async def test_provider_down_keeps_the_last_good_keys_and_logs_once(
    provider: Provider, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    keys = source(provider, clock)
    verifier = TokenVerifier(keys)
    good = provider.keys[0]
    await verifier.verify_async(good.sign())
    provider.status = 503

    clock.advance(DEFAULT_TTL)
    with caplog.at_level(logging.INFO, LOGGER):
        assert (await verifier.verify_async(good.sign())).kid == "a"  # stale keys still serve
        assert not await keys.refresh()
        for _ in range(50):
            clock.advance(DEFAULT_COOLDOWN / 5)
            assert (await verifier.verify_async(good.sign())).kid == "a"
            assert (await refused(verifier, unknown_kid_token())).failure is AuthFailure.UNKNOWN_KEY
        assert provider.fetches <= 2 + 10  # 100 s of outage, at most one fetch per 10 s
        (warning,) = warnings(caplog)
        assert "HTTP 503" in warning
        assert "keeping the 1 keys fetched before" in warning

        provider.status = 200
        assert await keys.refresh()
    assert any("fetched again" in r.getMessage() for r in caplog.records if r.name == LOGGER)


async def test_provider_down_at_start_refuses_tokens_until_keys_arrive(
    provider: Provider, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    provider.status = 503
    verifier = TokenVerifier(source(provider, clock))
    token = provider.keys[0].sign()
    with caplog.at_level(logging.INFO, LOGGER):
        error = await refused(verifier, token)
        assert error.failure is AuthFailure.UNKNOWN_KEY
        assert "no keys fetched yet" in error.detail
        assert "HTTP 503" in error.detail
        results = await gather_bounded(*(verifier.verify_async(token) for _ in range(100)))
        assert all(isinstance(r, AuthenticationError) for r in results)
        assert provider.fetches == 1
        (warning,) = warnings(caplog)
        assert "no keys yet" in warning

    provider.status = 200
    clock.advance(DEFAULT_COOLDOWN)
    assert (await verifier.verify_async(token)).kid == "a"


async def test_an_unreachable_provider_is_named_in_the_refusal(clock: Clock) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    keys = JWKS(f"http://127.0.0.1:{port}/jwks", clock=clock)
    verifier = TokenVerifier(keys)
    error = await refused(verifier, SigningKey.ec("a").sign())
    assert "ConnectError" in error.detail
    assert not await keys.refresh()


async def test_cache_control_max_age_is_honoured(provider: Provider, clock: Clock) -> None:
    provider.headers = {"Cache-Control": "public, max-age=120"}
    keys = source(provider, clock)
    verifier = TokenVerifier(keys)
    token = provider.keys[0].sign()
    await verifier.verify_async(token)
    assert keys.expires_at == clock.now + 120

    clock.advance(119)
    await verifier.verify_async(token)
    assert not keys.fetching
    clock.advance(1)
    await verifier.verify_async(token)
    assert keys.fetching
    assert await keys.refresh()
    assert provider.fetches == 2


async def test_a_set_ttl_overrides_the_headers(provider: Provider, clock: Clock) -> None:
    provider.headers = {"Cache-Control": "max-age=3600"}
    keys = source(provider, clock, ttl=60)
    await keys.refresh()
    assert keys.expires_at == clock.now + 60


@pytest.mark.parametrize(
    ("cache_control", "age", "seconds"),
    [
        ("public, max-age=120", None, 120),
        ("max-age=120", "100", 20),
        ("max-age=120", "500", 0),
        ("no-store", None, 0),
        ("private, no-cache", None, 0),
        ("public", None, DEFAULT_TTL),
        (None, None, DEFAULT_TTL),
        ("max-age=soon", None, DEFAULT_TTL),
        ('max-age="60"', "x", 60),
    ],
)
def test_freshness_from_cache_headers(
    cache_control: str | None, age: str | None, seconds: float
) -> None:
    assert freshness(cache_control, age) == seconds


async def test_a_year_of_max_age_is_cut_to_a_day(provider: Provider, clock: Clock) -> None:
    provider.headers = {"Cache-Control": "max-age=31536000"}
    keys = source(provider, clock)
    await keys.refresh()
    assert keys.expires_at == clock.now + MAX_TTL


async def test_algorithms_come_from_the_keys_never_from_the_token(
    provider: Provider, clock: Clock
) -> None:
    rsa_key = SigningKey("r", load_pem_private_key(rsa_private_pem(), None), "RS256", False)
    provider.keys.append(rsa_key)
    verifier = TokenVerifier(source(provider, clock))
    assert (await verifier.verify_async(rsa_key.sign())).algorithm == "RS256"  # no alg: RS256

    ps256 = SigningKey("r", rsa_key.private, "PS256").sign()
    assert (await refused(verifier, ps256)).failure is AuthFailure.ALGORITHM
    es384 = SigningKey("a", ec.generate_private_key(ec.SECP384R1()), "ES384").sign()
    assert (await refused(verifier, es384)).failure is AuthFailure.ALGORITHM
    confused = forge({"alg": "HS256", "kid": "r"}, claims(), rsa_public_pem())
    assert (await refused(verifier, confused)).failure is AuthFailure.ALGORITHM
    unsigned = forge({"alg": "none", "kid": "a"}, claims(), None)
    assert (await refused(verifier, unsigned)).failure is AuthFailure.ALGORITHM

    only_rs256 = TokenVerifier(source(provider, clock), algorithms=["RS256"])
    assert (await only_rs256.verify_async(rsa_key.sign())).kid == "r"
    ec_token = provider.keys[0].sign()
    assert (await refused(only_rs256, ec_token)).failure is AuthFailure.ALGORITHM


async def test_unusable_keys_are_skipped_and_a_set_without_any_is_a_failed_fetch(
    provider: Provider, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    provider.extra = [
        {**SigningKey.ec("enc").jwk(), "use": "enc"},
        {"kty": "oct", "kid": "secret", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"},
        {key: value for key, value in SigningKey.ec("x").jwk().items() if key != "kid"},
        {**SigningKey.ec("none").jwk(), "alg": "none"},
        {**SigningKey.ec("hs").jwk(), "alg": "HS256"},
        SigningKey("small", small, "RS256").jwk(),
        {**SigningKey.ec("a").jwk(), "x": "AAAA"},  # a repeated kid
        "not a key",
    ]
    keys = source(provider, clock)
    assert await keys.refresh()
    assert keys.kids == {"a"}

    provider.keys = []
    provider.extra = provider.extra[:2]
    with caplog.at_level(logging.INFO, LOGGER):
        assert not await keys.refresh()
    (warning,) = warnings(caplog)
    assert "no usable signing key" in warning
    assert keys.kids == {"a"}


async def test_a_token_without_a_kid_is_refused() -> None:
    keys = JWKS("https://id.example.com/jwks")
    verifier = TokenVerifier(keys)
    token = SigningKey.ec("a").sign()
    headerless = forge({"alg": "ES256"}, claims(), None)
    assert "no kid" in (await refused(verifier, headerless)).detail
    with pytest.raises(AuthenticationError) as caught:
        verifier.verify(token)  # synchronous: never fetches
    assert "no keys fetched yet" in caught.value.detail


@pytest.mark.parametrize(
    "url", ["http://id.example.com/jwks", "ftp://id.example.com/jwks", "/jwks", "https:///jwks"]
)
def test_the_url_must_be_https(url: str) -> None:
    with pytest.raises(ConfigurationError):
        JWKS(url)


def test_plain_http_is_allowed_to_loopback_or_when_asked() -> None:
    JWKS("http://127.0.0.1:8080/jwks")
    JWKS("http://keycloak:8080/realms/r/protocol/openid-connect/certs", allow_http=True)
    with pytest.raises(ConfigurationError):
        JWKS("https://id.example.com/jwks", cooldown=-1)


def test_a_verifier_of_provider_keys_cannot_issue() -> None:
    verifier = TokenVerifier(JWKS("https://id.example.com/jwks"))
    with pytest.raises(ConfigurationError, match="cannot sign"):
        verifier.issue("42")
