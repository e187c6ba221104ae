from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from fastapi_channels.auth import AuthenticationError, AuthFailure, Key, KeySet
from fastapi_channels.wire.errors import ConfigurationError

from .auth_support import SECRET, ec_private_key, rsa_private_pem, rsa_public_pem


@pytest.mark.parametrize(
    ("secret", "algorithms", "message"),
    [
        (b"short", ("HS256",), "needs at least 32"),
        (b"x" * 40, ("HS512",), "needs at least 64"),
        (SECRET, ("RS256",), "cannot be used with an HMAC secret"),
        (SECRET, (), "at least one algorithm"),
    ],
    ids=["too-short", "too-short-for-hs512", "rsa-algorithm", "no-algorithm"],
)
def test_hmac_key_refuses_unsafe_configuration(
    secret: bytes, algorithms: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Key.hmac(secret, algorithms=algorithms)


def test_a_public_key_cannot_become_an_hmac_secret() -> None:
    with pytest.raises(ConfigurationError, match="PEM or SSH public key"):
        Key.hmac(rsa_public_pem())


def test_hmac_key_signs_and_verifies_with_its_algorithms() -> None:
    key = Key.hmac(SECRET.decode(), kid="k1", algorithms=["HS256", "HS256"])
    assert key.algorithms == ("HS256",)
    assert key.signing_key == key.verifying_key == SECRET
    assert key.kid == "k1"


def test_rsa_keys_from_pem() -> None:
    public = Key.from_pem(rsa_public_pem(), kid="pub")
    private = Key.from_pem(rsa_private_pem().decode(), algorithms=["PS256", "RS512"])
    assert public.algorithms == ("RS256",)
    assert public.signing_key is None
    assert private.algorithms == ("PS256", "RS512")
    assert isinstance(private.verifying_key, rsa.RSAPublicKey)
    assert isinstance(private.signing_key, rsa.RSAPrivateKey)


def test_rsa_key_refuses_hmac_algorithms_and_short_keys() -> None:
    with pytest.raises(ConfigurationError, match="HS256 cannot be used with an RSA key"):
        Key.from_pem(rsa_public_pem(), algorithms=["HS256"])
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ConfigurationError, match="1024 bits"):
        Key.from_crypto(weak)


def test_ec_key_takes_its_curve_algorithm() -> None:
    key = Key.from_crypto(ec_private_key())
    assert key.algorithms == ("ES256",)
    assert isinstance(key.verifying_key, ec.EllipticCurvePublicKey)
    with pytest.raises(ConfigurationError, match="ES384 cannot be used with an EC key"):
        Key.from_crypto(ec_private_key().public_key(), algorithms=["ES384"])


def test_eddsa_key() -> None:
    assert Key.from_crypto(ed25519.Ed25519PrivateKey.generate()).algorithms == ("EdDSA",)


def test_unreadable_pem_and_unsupported_key() -> None:
    with pytest.raises(ConfigurationError, match="cannot read the PEM key"):
        Key.from_pem("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    with pytest.raises(ConfigurationError, match="unsupported key type"):
        Key.from_crypto("not a key")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("keys", "current", "message"),
    [
        ([], None, "at least one key"),
        ([Key.hmac(SECRET, kid="a"), Key.hmac(SECRET, kid="a")], None, "two keys have kid 'a'"),
        ([Key.hmac(SECRET), Key.hmac(SECRET)], None, "two keys have no kid"),
        ([Key.hmac(SECRET, kid="a")], "b", "current names no key"),
    ],
    ids=["empty", "duplicate-kid", "two-without-kid", "unknown-current"],
)
def test_key_set_configuration_errors(keys: list[Key], current: str | None, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        KeySet(keys, current=current)


def test_key_set_selects_by_kid() -> None:
    old, new, default = Key.hmac(SECRET, kid="old"), Key.hmac(SECRET, kid="new"), Key.hmac(SECRET)
    keys = KeySet([old, new, default], current="new")
    assert keys.current is new
    assert keys.select("old") is old
    assert keys.select(None) is default
    assert len(keys) == 3 and list(keys) == [old, new, default]
    with pytest.raises(AuthenticationError) as caught:
        keys.select("gone")
    assert caught.value.failure is AuthFailure.UNKNOWN_KEY
    assert "gone" in caught.value.detail and "gone" not in caught.value.reason
    with pytest.raises(AuthenticationError) as caught:
        keys.select(7)
    assert caught.value.failure is AuthFailure.MALFORMED


def test_a_token_without_kid_needs_a_default_key() -> None:
    single = KeySet(Key.hmac(SECRET, kid="only"))
    assert single.select(None).kid == "only"
    rotating = KeySet([Key.hmac(SECRET, kid="a"), Key.hmac(SECRET, kid="b")])
    with pytest.raises(AuthenticationError) as caught:
        rotating.select(None)
    assert caught.value.failure is AuthFailure.UNKNOWN_KEY


def test_restricting_a_key_set_to_foreign_algorithms_fails() -> None:
    keys = KeySet([Key.hmac(SECRET, kid="h"), Key.from_pem(rsa_public_pem(), kid="r")])
    assert [key.algorithms for key in keys.restricted_to({"HS256", "RS256"})] == [
        ("HS256",),
        ("RS256",),
    ]
    with pytest.raises(ConfigurationError, match="key 'r' verifies RS256"):
        keys.restricted_to({"HS256"})


def test_public_key_from_a_certificate() -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    private = serialization.load_pem_private_key(rsa_private_pem(), password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer.test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(private, hashes.SHA256())
    )
    key = Key.from_pem(certificate.public_bytes(serialization.Encoding.PEM), kid="cert")
    assert key.algorithms == ("RS256",) and key.signing_key is None
    assert isinstance(key.verifying_key, rsa.RSAPublicKey)
