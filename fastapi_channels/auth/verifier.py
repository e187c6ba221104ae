"""Verifying (and issuing) JWTs with algorithms, keys and claims fixed by configuration.

The token's own header is read only to pick the key by ``kid`` and to refuse an algorithm early
with a precise log reason; which algorithms are acceptable is always decided by the selected
`Key` (and the verifier's ``algorithms``), and ``none`` is never acceptable.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType
from typing import Any, Final

import jwt
from jwt import exceptions as jwt_errors

from fastapi_channels.auth.jwks import JWKS
from fastapi_channels.auth.keys import Key, KeySet
from fastapi_channels.wire.errors import AuthenticationError, AuthFailure, ConfigurationError

__all__ = ["DEFAULT_MAX_TOKEN_SIZE", "TokenVerifier", "VerifiedToken", "looks_like_jwt"]

DEFAULT_MAX_TOKEN_SIZE: Final = 8192
"""Tokens longer than this many characters are refused before any decoding."""

_COMPACT_JWS: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
"""Header, payload and (possibly empty) signature, base64url without padding."""

# Most specific first: InvalidSignatureError is a DecodeError, every one is an InvalidTokenError.
_FAILURES: Final[tuple[tuple[type[Exception], AuthFailure], ...]] = (
    (jwt_errors.ExpiredSignatureError, AuthFailure.EXPIRED),
    (jwt_errors.ImmatureSignatureError, AuthFailure.NOT_YET_VALID),
    (jwt_errors.InvalidAudienceError, AuthFailure.AUDIENCE),
    (jwt_errors.InvalidIssuerError, AuthFailure.ISSUER),
    (jwt_errors.InvalidSignatureError, AuthFailure.SIGNATURE),
    (jwt_errors.InvalidAlgorithmError, AuthFailure.ALGORITHM),
    (jwt_errors.MissingRequiredClaimError, AuthFailure.CLAIMS),
    (jwt_errors.InvalidIssuedAtError, AuthFailure.CLAIMS),
    (jwt_errors.InvalidSubjectError, AuthFailure.CLAIMS),
    (jwt_errors.InvalidJTIError, AuthFailure.CLAIMS),
)


def looks_like_jwt(value: str) -> bool:
    """Whether ``value`` has the shape of a compact JWS (it may still be invalid)."""
    return _COMPACT_JWS.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """A token whose signature and claims verified.

    Attributes:
        claims: the payload, read-only.
        kid: the id of the key that verified it.
        algorithm: the algorithm it was signed with.
        expires_at: ``exp`` as a UNIX timestamp, or ``None`` when the token has none.
    """

    claims: Mapping[str, Any]
    kid: str | None
    algorithm: str
    expires_at: float | None


class TokenVerifier:
    """Checks JWTs against fixed keys, algorithms and claims, and issues tokens it accepts.

    Verification is pure CPU work (a signature check and a few comparisons, tens of
    microseconds for HMAC and RSA-2048, somewhat more for EC) and takes no lock, so one
    verifier serves any number of concurrent handshakes. With a `JWKS` key source,
    `verify_async` may first wait for the provider's keys (see `JWKS.key_for`).

    Args:
        keys: a `KeySet`, one key, several keys, or a `JWKS` (keys fetched from a provider).
        algorithms: the algorithms accepted at all; each key is restricted to these (a `JWKS`
            key at verification, as its keys arrive later). By default every key keeps its own
            algorithms. ``none`` is refused.
        leeway: the clock skew tolerated on ``exp``, ``nbf`` and ``iat``, in seconds or as a
            ``timedelta``.
        issuer: the required ``iss`` (one value, or any of several); ``None`` skips the check.
        audience: the required ``aud`` (one value, or any of several). With ``None``, a token
            that carries an ``aud`` is refused, as it was meant for a named audience.
        required_claims: claims a token must carry. ``exp`` is required by default so that no
            token is valid for ever, and ``sub`` because it identifies the user.
        max_token_size: tokens longer than this many characters are refused undecoded.

    Raises:
        ConfigurationError: ``none`` or an unknown algorithm, a key left with no allowed
            algorithm, a negative leeway or a size limit below 16.
    """

    def __init__(
        self,
        keys: KeySet | Key | Iterable[Key] | JWKS,
        *,
        algorithms: Iterable[str] | None = None,
        leeway: float | timedelta = 0,
        issuer: str | Sequence[str] | None = None,
        audience: str | Sequence[str] | None = None,
        required_claims: Iterable[str] = ("exp", "sub"),
        max_token_size: int = DEFAULT_MAX_TOKEN_SIZE,
    ) -> None:
        key_set = keys if isinstance(keys, KeySet | JWKS) else KeySet(keys)
        self._allowed: frozenset[str] | None = None
        if algorithms is not None:
            allowed = frozenset([algorithms] if isinstance(algorithms, str) else algorithms)
            if any(name.lower() == "none" for name in allowed):
                raise ConfigurationError("the 'none' algorithm can never be allowed")
            unknown = allowed - jwt.algorithms.get_default_algorithms().keys()
            if unknown:
                raise ConfigurationError(f"unknown algorithms: {', '.join(sorted(unknown))}")
            if isinstance(key_set, KeySet):
                key_set = key_set.restricted_to(allowed)
            else:
                self._allowed = allowed
        self.keys: KeySet | JWKS = key_set
        self.leeway = leeway.total_seconds() if isinstance(leeway, timedelta) else float(leeway)
        if self.leeway < 0:
            raise ConfigurationError("leeway cannot be negative")
        if max_token_size < 16:
            raise ConfigurationError("max_token_size must be at least 16")
        self.issuer = issuer
        self.audience = audience
        self.required_claims = tuple(required_claims)
        self.max_token_size = max_token_size
        self._jwt = jwt.PyJWT(options={"enforce_minimum_key_length": True})

    def verify(self, token: str) -> VerifiedToken:
        """Verify ``token`` and return its claims.

        With a `JWKS`, only the keys already fetched are used; `verify_async` fetches.

        Raises:
            AuthenticationError: the token is oversized, malformed, names an unknown ``kid`` or
                an algorithm its key does not allow, its signature fails, or a claim check
                fails. ``failure`` says which; nothing in the error holds the token.
        """
        header = self._header(token)
        return self._verify(token, header, self.keys.select(header.get("kid")))

    async def verify_async(self, token: str) -> VerifiedToken:
        """Verify ``token`` like `verify`, first fetching a `JWKS` if its ``kid`` may be new.

        With a `KeySet` this never suspends. With a `JWKS` it suspends only while the set is
        fetched for a ``kid`` not seen before (at most once per the set's ``cooldown``; see
        `JWKS.key_for`).

        Raises:
            AuthenticationError: as `verify`.
        """
        header = self._header(token)
        kid = header.get("kid")
        keys = self.keys
        key = await keys.key_for(kid) if isinstance(keys, JWKS) else keys.select(kid)
        return self._verify(token, header, key)

    def _header(self, token: str) -> dict[str, Any]:
        if len(token) > self.max_token_size:
            raise AuthenticationError(
                AuthFailure.OVERSIZED,
                f"the token has {len(token)} characters, more than {self.max_token_size}",
            )
        if not looks_like_jwt(token):
            raise AuthenticationError(AuthFailure.MALFORMED, "not a compact JWS")
        try:
            return jwt.get_unverified_header(token)
        except jwt_errors.PyJWTError:
            raise AuthenticationError(AuthFailure.MALFORMED, "unreadable header") from None

    def _verify(self, token: str, header: Mapping[str, Any], key: Key) -> VerifiedToken:
        algorithm = header.get("alg")
        if (
            not isinstance(algorithm, str)
            or algorithm not in key.algorithms
            or (self._allowed is not None and algorithm not in self._allowed)
        ):
            raise AuthenticationError(
                AuthFailure.ALGORITHM,
                f"algorithm {str(algorithm)[:16]!r} is not allowed for key {key.kid!r}",
            )
        try:
            claims = self._jwt.decode(
                token,
                key.verifying_key,
                algorithms=[algorithm],
                leeway=self.leeway,
                issuer=self.issuer,
                audience=self.audience,
                options={"require": list(self.required_claims)},
            )
        except jwt_errors.PyJWTError as exc:
            raise _translate(exc) from None
        expires = claims.get("exp")
        return VerifiedToken(
            claims=MappingProxyType(claims),
            kid=key.kid,
            algorithm=algorithm,
            expires_at=float(expires) if expires is not None else None,
        )

    def issue(
        self,
        subject: str,
        *,
        lifetime: timedelta | float = timedelta(minutes=15),
        claims: Mapping[str, Any] | None = None,
    ) -> str:
        """Sign a token this verifier accepts, with the key set's current key.

        The token carries ``sub``, ``iat``, ``exp`` (now plus ``lifetime``), the configured
        ``iss`` and ``aud`` (the first of several), the key's ``kid`` in its header, and any
        extra ``claims`` (which cannot override those).

        Raises:
            ConfigurationError: the current key is a public key and cannot sign, or the keys
                are a `JWKS` (the provider issues those tokens).
        """
        if isinstance(self.keys, JWKS):
            raise ConfigurationError("keys from a JWKS are public keys and cannot sign tokens")
        key = self.keys.current
        if key.signing_key is None:
            raise ConfigurationError(f"key {key.kid!r} is a public key and cannot sign tokens")
        seconds = lifetime.total_seconds() if isinstance(lifetime, timedelta) else lifetime
        now = int(time.time())
        payload: dict[str, Any] = {**(claims or {}), "sub": subject, "iat": now}
        payload["exp"] = now + int(seconds)
        for name, value in (("iss", self.issuer), ("aud", self.audience)):
            if value is not None:
                payload[name] = value if isinstance(value, str) else value[0]
        headers = {"kid": key.kid} if key.kid is not None else None
        return jwt.encode(payload, key.signing_key, algorithm=key.algorithms[0], headers=headers)


def _translate(exc: jwt_errors.PyJWTError) -> AuthenticationError:
    for error_type, failure in _FAILURES:
        if isinstance(exc, error_type):
            return AuthenticationError(failure, str(exc))
    # DecodeError (bad base64 or JSON, a non-integer nbf) and anything newer pyjwt may add.
    return AuthenticationError(AuthFailure.MALFORMED, type(exc).__name__)
