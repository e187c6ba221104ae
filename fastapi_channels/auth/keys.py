"""Verification keys, and key sets that select one by the token's ``kid`` for rotation.

A `Key` binds key material to the algorithms it may verify, so a token can never choose
how it is checked: an HMAC secret only ever verifies ``HS*`` signatures and an RSA public key
only ``RS*``/``PS*`` ones, which rules out the classic confusion where an attacker signs an
``HS256`` token with the server's RSA public key as the secret.

A `KeySet` holds several keys, each named by a ``kid``. Rotating keys means adding the new
key as ``current`` (the one `issue` signs with) and
keeping the old one until the last token it signed has expired.

RSA, EC and EdDSA keys need the ``cryptography`` package (``pip install
fastapi-ws-channels[crypto]``); HMAC secrets do not.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from jwt.algorithms import HMACAlgorithm
from jwt.exceptions import InvalidKeyError

from fastapi_channels.wire.errors import AuthenticationError, AuthFailure, ConfigurationError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import (
        PrivateKeyTypes,
        PublicKeyTypes,
    )

__all__ = ["HMAC_ALGORITHMS", "RSA_ALGORITHMS", "Key", "KeySet"]

HMAC_ALGORITHMS: Final = {"HS256": 32, "HS384": 48, "HS512": 64}
"""The HMAC algorithms, each with the shortest secret (in bytes) it accepts (RFC 7518 §3.2)."""
RSA_ALGORITHMS: Final = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
"""The algorithms an RSA key may verify."""
MIN_RSA_BITS: Final = 2048
_EC_CURVES: Final = {
    "secp256r1": "ES256",
    "secp384r1": "ES384",
    "secp521r1": "ES512",
    "secp256k1": "ES256K",
}
_MAX_KID_IN_LOG: Final = 64


@dataclass(frozen=True, slots=True)
class Key:
    """One verification key, the algorithms it verifies, and optionally what signs with it.

    Build keys with `hmac`, `from_pem` or `from_crypto`; they check the key
    material and the algorithms when the application starts, and raise
    `ConfigurationError` on anything unsafe.

    Attributes:
        kid: the key id tokens name in their header, or ``None`` for a key that verifies only
            tokens without a ``kid``.
        algorithms: the algorithms this key verifies; the first is the one it signs with.
        verifying_key: the HMAC secret, or the public key object.
        signing_key: the HMAC secret, the private key object, or ``None`` for a public key that
            can only verify.
    """

    kid: str | None
    algorithms: tuple[str, ...]
    verifying_key: Any
    signing_key: Any = None

    @classmethod
    def hmac(
        cls,
        secret: str | bytes,
        *,
        kid: str | None = None,
        algorithms: Sequence[str] = ("HS256",),
    ) -> Key:
        """A shared HMAC secret, which both verifies and signs.

        Args:
            secret: the secret; at least as long as the hash (32 bytes for ``HS256``, 48 for
                ``HS384``, 64 for ``HS512``). Use random bytes, not a password.
            kid: the key id, if tokens name it.
            algorithms: the ``HS*`` algorithms it verifies.

        Raises:
            ConfigurationError: a non-HMAC algorithm, a secret that is too short, or a secret
                that is a PEM or SSH public key (which would let anyone who knows the public
                key forge tokens).
        """
        raw = secret.encode() if isinstance(secret, str) else bytes(secret)
        algorithms = _check_algorithms(algorithms, HMAC_ALGORITHMS.keys(), "an HMAC secret")
        shortest = max(HMAC_ALGORITHMS[name] for name in algorithms)
        if len(raw) < shortest:
            raise ConfigurationError(
                f"the HMAC secret is {len(raw)} bytes long; {'/'.join(algorithms)} needs at "
                f"least {shortest} random bytes"
            )
        try:
            HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(raw)
        except InvalidKeyError:
            raise ConfigurationError(
                "the HMAC secret is a PEM or SSH public key; pass public keys to Key.from_pem"
            ) from None
        return cls(kid=_check_kid(kid), algorithms=algorithms, verifying_key=raw, signing_key=raw)

    @classmethod
    def from_pem(
        cls,
        pem: str | bytes,
        *,
        kid: str | None = None,
        algorithms: Sequence[str] | None = None,
    ) -> Key:
        """An RSA, EC or EdDSA key from PEM text: a public key verifies, a private key also signs.

        Args:
            pem: the PEM text of a public key, an X.509 certificate (its public key is used;
                the certificate itself is not validated), or an unencrypted private key (load
                an encrypted one with ``cryptography`` and use `from_crypto`).
            kid: the key id, if tokens name it.
            algorithms: the algorithms it verifies; by default ``RS256`` for RSA, the curve's
                algorithm for EC (``ES256`` for P-256) and ``EdDSA`` for Ed25519/Ed448.

        Raises:
            ConfigurationError: the PEM text cannot be read, ``cryptography`` is missing, or
                the key does not suit the algorithms (see `from_crypto`).
        """
        _require_cryptography()
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        data = pem.encode() if isinstance(pem, str) else bytes(pem)
        key: Any
        try:
            if b"CERTIFICATE-----" in data:
                key = x509.load_pem_x509_certificate(data).public_key()
            elif b"PRIVATE KEY-----" in data:
                key = serialization.load_pem_private_key(data, password=None)
            else:
                key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"cannot read the PEM key: {exc}") from None
        return cls.from_crypto(key, kid=kid, algorithms=algorithms)

    @classmethod
    def from_crypto(
        cls,
        key: PublicKeyTypes | PrivateKeyTypes,
        *,
        kid: str | None = None,
        algorithms: Sequence[str] | None = None,
    ) -> Key:
        """An RSA, EC or EdDSA key from a ``cryptography`` key object.

        A private key is kept for signing and its public half is used to verify.

        Raises:
            ConfigurationError: an unsupported key type, an RSA key shorter than 2048 bits, or
                algorithms that do not belong to the key's type (or curve).
        """
        _require_cryptography()
        from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

        private: PrivateKeyTypes | None = None
        public: Any = key
        if isinstance(
            key,
            rsa.RSAPrivateKey
            | ec.EllipticCurvePrivateKey
            | ed25519.Ed25519PrivateKey
            | ed448.Ed448PrivateKey,
        ):
            private, public = key, key.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            if public.key_size < MIN_RSA_BITS:
                raise ConfigurationError(
                    f"the RSA key has {public.key_size} bits; use at least {MIN_RSA_BITS}"
                )
            usable: Iterable[str] = RSA_ALGORITHMS
            default = ("RS256",)
            kind = "an RSA key"
        elif isinstance(public, ec.EllipticCurvePublicKey):
            curve_algorithm = _EC_CURVES.get(public.curve.name)
            if curve_algorithm is None:
                raise ConfigurationError(f"the EC curve {public.curve.name} is not supported")
            usable = default = (curve_algorithm,)
            kind = f"an EC key on {public.curve.name}"
        elif isinstance(public, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            usable = default = ("EdDSA",)
            kind = "an EdDSA key"
        else:
            raise ConfigurationError(
                f"unsupported key type {type(key).__name__}; use RSA, EC, Ed25519 or Ed448"
            )
        return cls(
            kid=_check_kid(kid),
            algorithms=_check_algorithms(algorithms or default, usable, kind),
            verifying_key=public,
            signing_key=private,
        )

    def restricted_to(self, allowed: Iterable[str]) -> Key:
        """This key limited to the ``allowed`` algorithms.

        Raises:
            ConfigurationError: none of the key's algorithms is allowed.
        """
        allowed = frozenset(allowed)
        kept = tuple(name for name in self.algorithms if name in allowed)
        if not kept:
            raise ConfigurationError(
                f"key {self.kid!r} verifies {', '.join(self.algorithms)}, "
                f"none of which is among the allowed {', '.join(sorted(allowed))}"
            )
        return Key(self.kid, kept, self.verifying_key, self.signing_key)


class KeySet:
    """The keys a verifier trusts, selected by a token's ``kid`` header.

    A token naming a ``kid`` is verified only with the key of that id. A token without one is
    verified with the key that has no ``kid`` or, when the set holds a single key, with that key.
    Anything else is refused with `UNKNOWN_KEY`; the
    verifier never tries keys one after another.

    Args:
        keys: the keys; ids must be unique and at most one key may lack an id.
        current: the id of the key `issue` signs
            with; by default the first key.

    Raises:
        ConfigurationError: no keys, a duplicate ``kid``, two keys without one, or ``current``
            naming no key.
    """

    def __init__(self, keys: Key | Iterable[Key], *, current: str | None = None) -> None:
        self._keys: tuple[Key, ...] = (keys,) if isinstance(keys, Key) else tuple(keys)
        if not self._keys:
            raise ConfigurationError("a key set needs at least one key")
        self._by_kid: dict[str | None, Key] = {}
        for key in self._keys:
            if key.kid in self._by_kid:
                what = f"kid {key.kid!r}" if key.kid is not None else "no kid"
                raise ConfigurationError(f"two keys have {what}")
            self._by_kid[key.kid] = key
        if current is not None and current not in self._by_kid:
            raise ConfigurationError(f"current names no key: {current!r}")
        self._current = self._by_kid[current] if current is not None else self._keys[0]

    def __iter__(self) -> Iterator[Key]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def current(self) -> Key:
        """The key new tokens are signed with."""
        return self._current

    def select(self, kid: object) -> Key:
        """The key for a token whose header holds ``kid`` (``None`` when it has none).

        Raises:
            AuthenticationError: ``kid`` is not a string, names no key, or is absent while no
                key is meant for tokens without one.
        """
        if kid is not None and not isinstance(kid, str):
            raise AuthenticationError(AuthFailure.MALFORMED, "the kid header is not a string")
        key = self._by_kid.get(kid)
        if key is None and kid is None and len(self._keys) == 1:
            key = self._keys[0]
        if key is None:
            raise AuthenticationError(
                AuthFailure.UNKNOWN_KEY,
                "the token has no kid and no key is configured for that"
                if kid is None
                else f"no key has kid {kid[:_MAX_KID_IN_LOG]!r}",
            )
        return key

    def restricted_to(self, allowed: Iterable[str]) -> KeySet:
        """This set with every key limited to the ``allowed`` algorithms.

        See `Key.restricted_to`.
        """
        allowed = frozenset(allowed)
        return KeySet([key.restricted_to(allowed) for key in self._keys], current=self._current.kid)


def _check_kid(kid: str | None) -> str | None:
    if kid is not None and (not isinstance(kid, str) or not kid):
        raise ConfigurationError("a kid must be a non-empty string")
    return kid


def _check_algorithms(
    requested: Sequence[str], usable: Iterable[str], kind: str
) -> tuple[str, ...]:
    if isinstance(requested, str):
        requested = (requested,)
    names = tuple(dict.fromkeys(requested))
    if not names:
        raise ConfigurationError(f"{kind} needs at least one algorithm")
    usable = frozenset(usable)
    wrong = [name for name in names if name not in usable]
    if wrong:
        raise ConfigurationError(
            f"{', '.join(wrong)} cannot be used with {kind}; it verifies "
            f"{', '.join(sorted(usable))}"
        )
    return names


def _require_cryptography() -> None:
    try:
        import cryptography  # noqa: F401
    except ImportError:  # pragma: no cover - the crypto extra is installed in the test setup
        raise ConfigurationError(
            "RSA, EC and EdDSA keys need the cryptography package: "
            "pip install 'fastapi-ws-channels[crypto]'"
        ) from None
