"""A JSON Web Key Set document (RFC 7517) read into `Key` objects, one per usable signing key.

pyjwt's `PyJWK` parses each key; `Key.from_crypto` then applies the same checks as to keys
configured by hand (an RSA modulus of at least 2048 bits, an algorithm that belongs to the key's
type and curve). A key is skipped, with the reason, when it is meant for encryption
(``use: enc``), has no ``kid``, is symmetric (``kty: oct``: a published set holds public keys
only), or fails those checks; one bad key never discards the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jwt import PyJWK

from fastapi_channels.auth.keys import Key
from fastapi_channels.wire.errors import ConfigurationError

__all__ = ["ReadKeys", "read_key_set"]


@dataclass(frozen=True, slots=True)
class ReadKeys:
    """The usable keys of a document, by ``kid``, and why the others were skipped."""

    keys: Mapping[str, Key]
    skipped: tuple[str, ...] = field(default=())


def read_key_set(document: object) -> ReadKeys:
    """The signing keys of a JWKS document (already decoded from JSON).

    Raises:
        ValueError: the document is not an object with a ``keys`` list.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("the document is not a JSON object with a 'keys' list")
    keys: dict[str, Key] = {}
    skipped: list[str] = []
    for index, entry in enumerate(document["keys"]):
        try:
            key = _read_key(entry)
        except ValueError as exc:
            skipped.append(f"key {index}: {exc}")
            continue
        if key.kid in keys:
            skipped.append(f"key {index}: kid {key.kid!r} is repeated")
            continue
        assert key.kid is not None  # _read_key refuses keys without one
        keys[key.kid] = key
    return ReadKeys(keys, tuple(skipped))


def _read_key(entry: object) -> Key:
    if not isinstance(entry, dict):
        raise ValueError("not a JSON object")
    kid = entry.get("kid")
    if not isinstance(kid, str) or not kid:
        raise ValueError("no kid")
    if entry.get("use", "sig") != "sig":
        raise ValueError(f"kid {kid!r} is for {str(entry.get('use'))[:16]!r}, not signatures")
    if entry.get("kty") == "oct":
        raise ValueError(f"kid {kid!r} is a symmetric key, which a published set must not hold")
    try:
        jwk = PyJWK(entry)
    # A hostile or broken document can make pyjwt raise more than PyJWTError (for example
    # NotImplementedError for "alg": "none"); whatever it is, only this key is skipped.
    except Exception as exc:
        raise ValueError(f"kid {kid!r} is unreadable: {type(exc).__name__}") from None
    material: Any = jwk.key
    if hasattr(material, "public_key"):  # a private key published by mistake: keep its public half
        material = material.public_key()
    algorithm = entry.get("alg")
    try:
        key = Key.from_crypto(
            material, kid=kid, algorithms=[algorithm] if isinstance(algorithm, str) else None
        )
    except ConfigurationError as exc:
        raise ValueError(f"kid {kid!r}: {exc}") from None
    return key
