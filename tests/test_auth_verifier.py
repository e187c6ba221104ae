from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastapi_channels.auth import AuthenticationError, AuthFailure, Key, KeySet, TokenVerifier
from fastapi_channels.wire.errors import ConfigurationError

from .auth_support import (
    AUDIENCE,
    ISSUER,
    OTHER_SECRET,
    SECRET,
    claims,
    ec_private_key,
    forge,
    hs256,
    rsa_private_pem,
    rsa_public_pem,
)

VERIFIER = TokenVerifier(Key.hmac(SECRET), issuer=ISSUER, audience=AUDIENCE)


def refusal(verifier: TokenVerifier, token: str) -> AuthenticationError:
    with pytest.raises(AuthenticationError) as caught:
        verifier.verify(token)
    error = caught.value
    # The wire reason is generic, and neither it nor the log detail carries the token.
    assert error.reason == "authentication failed"
    assert token not in error.detail and token not in str(error)
    return error


def test_issued_token_verifies() -> None:
    token = VERIFIER.issue("7", lifetime=timedelta(minutes=5), claims={"role": "admin", "sub": "x"})
    verified = VERIFIER.verify(token)
    assert verified.claims["sub"] == "7"
    assert verified.claims["role"] == "admin"
    assert verified.claims["iss"] == ISSUER and verified.claims["aud"] == AUDIENCE
    assert verified.algorithm == "HS256" and verified.kid is None
    assert verified.expires_at == pytest.approx(time.time() + 300, abs=2)
    with pytest.raises(TypeError):
        verified.claims["sub"] = "8"  # type: ignore[index]


def base_claims(**changes: Any) -> dict[str, Any]:
    payload = claims(iss=ISSUER, aud=AUDIENCE)
    payload.update(changes)
    return {key: value for key, value in payload.items() if value is not None}


NOW = int(time.time())
CASES: list[tuple[str, str, AuthFailure]] = [
    ("wrong-signature", hs256(base_claims(), OTHER_SECRET), AuthFailure.SIGNATURE),
    ("expired", hs256(base_claims(exp=NOW - 30)), AuthFailure.EXPIRED),
    ("not-yet-valid", hs256(base_claims(nbf=NOW + 300)), AuthFailure.NOT_YET_VALID),
    ("issued-in-future", hs256(base_claims(iat=NOW + 300)), AuthFailure.NOT_YET_VALID),
    ("wrong-audience", hs256(base_claims(aud="someone-else")), AuthFailure.AUDIENCE),
    ("wrong-issuer", hs256(base_claims(iss="https://evil.test")), AuthFailure.ISSUER),
    ("no-exp", hs256(base_claims(exp=None)), AuthFailure.CLAIMS),
    ("no-sub", hs256(base_claims(sub=None)), AuthFailure.CLAIMS),
    ("sub-not-string", hs256(base_claims(sub=42)), AuthFailure.CLAIMS),
    ("iat-not-number", hs256(base_claims(iat="yesterday")), AuthFailure.CLAIMS),
    ("unknown-kid", hs256(base_claims(), kid="nope"), AuthFailure.UNKNOWN_KEY),
    (
        "kid-not-string",
        forge({"alg": "HS256", "kid": 5}, base_claims(), SECRET),
        AuthFailure.MALFORMED,
    ),
    ("alg-none", forge({"alg": "none", "typ": "JWT"}, base_claims(), None), AuthFailure.ALGORITHM),
    ("alg-None", forge({"alg": "None"}, base_claims(), SECRET), AuthFailure.ALGORITHM),
    ("alg-missing", forge({"typ": "JWT"}, base_claims(), SECRET), AuthFailure.ALGORITHM),
    (
        "hs512-not-allowed",
        jwt.encode(base_claims(), SECRET * 2, algorithm="HS512"),
        AuthFailure.ALGORITHM,
    ),
    ("garbage", "not-a-token", AuthFailure.MALFORMED),
    ("two-segments", "abc.def", AuthFailure.MALFORMED),
    ("jwe-five-segments", "a.b.c.d.e", AuthFailure.MALFORMED),
    ("header-not-json", "bm90IGpzb24.e30.c2ln", AuthFailure.MALFORMED),
    (
        "payload-not-json",
        hs256(base_claims()).split(".")[0] + ".bm90IGpzb24.c2ln",
        AuthFailure.SIGNATURE,
    ),
    ("oversized", "a" * 9000, AuthFailure.OVERSIZED),
    ("padded-base64", hs256(base_claims()) + "==", AuthFailure.MALFORMED),
]


@pytest.mark.parametrize(("token", "failure"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refusals_name_their_specific_failure(token: str, failure: AuthFailure) -> None:
    assert refusal(VERIFIER, token).failure is failure


def test_token_for_an_audience_refused_where_none_is_configured() -> None:
    verifier = TokenVerifier(Key.hmac(SECRET))
    assert refusal(verifier, hs256(claims(aud="api"))).failure is AuthFailure.AUDIENCE
    assert verifier.verify(hs256(claims())).claims["sub"] == "42"


def test_several_issuers_and_audiences() -> None:
    verifier = TokenVerifier(Key.hmac(SECRET), issuer=["a", "b"], audience=["x", "y"])
    assert verifier.verify(hs256(claims(iss="b", aud=["z", "y"]))).claims["iss"] == "b"
    assert refusal(verifier, hs256(claims(iss="c", aud="x"))).failure is AuthFailure.ISSUER


def test_leeway_tolerates_clock_skew() -> None:
    now = int(time.time())
    late = hs256(claims(exp=now - 5))
    early = hs256(claims(nbf=now + 5, iat=now + 5))
    strict = TokenVerifier(Key.hmac(SECRET))
    lenient = TokenVerifier(Key.hmac(SECRET), leeway=timedelta(seconds=30))
    assert refusal(strict, late).failure is AuthFailure.EXPIRED
    assert refusal(strict, early).failure is AuthFailure.NOT_YET_VALID
    assert lenient.verify(late).claims["sub"] == "42"
    assert lenient.verify(early).claims["sub"] == "42"
    assert refusal(lenient, hs256(claims(exp=now - 60))).failure is AuthFailure.EXPIRED


def test_required_claims_are_configurable() -> None:
    verifier = TokenVerifier(Key.hmac(SECRET), required_claims=("exp", "sub", "jti"))
    assert refusal(verifier, hs256(claims())).failure is AuthFailure.CLAIMS
    assert verifier.verify(hs256(claims(jti="1"))).claims["jti"] == "1"
    relaxed = TokenVerifier(Key.hmac(SECRET), required_claims=())
    assert relaxed.verify(hs256({"sub": "1"})).expires_at is None


def test_algorithm_confusion_with_the_rsa_public_key_as_hmac_secret() -> None:
    verifier = TokenVerifier(Key.from_pem(rsa_public_pem()))
    forged = forge({"alg": "HS256", "typ": "JWT"}, claims(), rsa_public_pem())
    assert refusal(verifier, forged).failure is AuthFailure.ALGORITHM
    genuine = jwt.encode(claims(), rsa_private_pem(), algorithm="RS256")
    assert verifier.verify(genuine).algorithm == "RS256"


def test_rsa_token_refused_by_an_hmac_verifier() -> None:
    token = jwt.encode(claims(), rsa_private_pem(), algorithm="RS256")
    assert refusal(VERIFIER, token).failure is AuthFailure.ALGORITHM


def test_ec_and_rsa_keys_issue_and_verify() -> None:
    for key in (
        Key.from_pem(rsa_private_pem(), algorithms=["PS256"]),
        Key.from_crypto(ec_private_key()),
    ):
        verifier = TokenVerifier(key)
        assert verifier.verify(verifier.issue("9")).claims["sub"] == "9"


def test_a_public_key_cannot_issue() -> None:
    with pytest.raises(ConfigurationError, match="cannot sign"):
        TokenVerifier(Key.from_pem(rsa_public_pem())).issue("1")


def test_rotation_by_kid() -> None:
    old, new = Key.hmac(SECRET, kid="2024-01"), Key.hmac(OTHER_SECRET, kid="2024-02")
    before = TokenVerifier(KeySet([old]))
    during = TokenVerifier(KeySet([old, new], current="2024-02"))
    after = TokenVerifier(KeySet([new]))
    old_token = before.issue("1")
    new_token = during.issue("1")
    assert jwt.get_unverified_header(new_token)["kid"] == "2024-02"
    assert during.verify(old_token).kid == "2024-01"
    assert during.verify(new_token).kid == "2024-02"
    assert after.verify(new_token).kid == "2024-02"
    assert refusal(after, old_token).failure is AuthFailure.UNKNOWN_KEY
    # A token naming the new kid but signed with the old secret does not verify.
    mislabelled = hs256(claims(), SECRET, kid="2024-02")
    assert refusal(during, mislabelled).failure is AuthFailure.SIGNATURE


def test_rotation_between_algorithms() -> None:
    keys = KeySet([Key.hmac(SECRET, kid="hmac"), Key.from_pem(rsa_private_pem(), kid="rsa")])
    verifier = TokenVerifier(KeySet(list(keys), current="rsa"))
    token = verifier.issue("1")
    assert verifier.verify(token).algorithm == "RS256"
    hmac_with_rsa_kid = hs256(claims(), SECRET, kid="rsa")
    assert refusal(verifier, hmac_with_rsa_kid).failure is AuthFailure.ALGORITHM


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"algorithms": ["none"]}, "'none' algorithm"),
        ({"algorithms": ["HS256", "NONE"]}, "'none' algorithm"),
        ({"algorithms": ["HS999"]}, "unknown algorithms: HS999"),
        ({"algorithms": ["RS256"]}, "none of which is among the allowed"),
        ({"leeway": -1}, "leeway"),
        ({"max_token_size": 10}, "max_token_size"),
    ],
)
def test_verifier_configuration_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        TokenVerifier(Key.hmac(SECRET), **options)


def test_size_limit_applies_before_decoding() -> None:
    verifier = TokenVerifier(Key.hmac(SECRET), max_token_size=64)
    token = hs256(claims())
    assert len(token) > 64
    assert refusal(verifier, token).failure is AuthFailure.OVERSIZED


@given(st.text(max_size=300))
def test_any_text_is_refused_cleanly(text: str) -> None:
    with pytest.raises(AuthenticationError):
        VERIFIER.verify(text)


SEGMENT = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=60
)


@given(st.lists(SEGMENT, min_size=3, max_size=3))
def test_token_shaped_garbage_is_refused_cleanly(segments: list[str]) -> None:
    with pytest.raises(AuthenticationError):
        VERIFIER.verify(".".join(segments))


@given(
    header=st.dictionaries(
        st.sampled_from(["alg", "kid", "typ", "crit"]),
        st.one_of(st.text(max_size=8), st.integers(), st.none()),
    )
)
def test_arbitrary_headers_are_refused_cleanly(header: dict[str, Any]) -> None:
    with pytest.raises(AuthenticationError):
        VERIFIER.verify(forge(header, claims(iss=ISSUER, aud=AUDIENCE), OTHER_SECRET))
