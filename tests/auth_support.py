"""Keys and token builders shared by the authentication tests."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import math
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fastapi_channels.auth import JWTAuth, Key, TokenVerifier

SECRET = b"s" * 32
OTHER_SECRET = b"o" * 32
ISSUER = "https://issuer.test"
AUDIENCE = "channels-test"


@functools.cache
def rsa_private_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@functools.cache
def rsa_public_pem() -> bytes:
    private = serialization.load_pem_private_key(rsa_private_pem(), password=None)
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@functools.cache
def ec_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def claims(sub: str = "42", lifetime: float = 60, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": sub, "iat": now, "exp": now + lifetime, **extra}


def short_lived(sub: str = "42", **extra: Any) -> tuple[str, float]:
    """An HS256 token expiring between 0.5 s and 1.5 s from now, and its expiry time."""
    expires = math.ceil(time.time() + 0.5)
    return hs256({**claims(sub, **extra), "exp": expires}), expires


def hs256(payload: dict[str, Any], secret: bytes = SECRET, **headers: Any) -> str:
    return jwt.encode(payload, secret, algorithm="HS256", headers=headers or None)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], secret: bytes | None) -> str:
    """A token built by hand, as an attacker would: HMAC-SHA256 with ``secret``, or unsigned."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    if secret is None:
        return signing_input + "."
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def hmac_auth(**options: Any) -> JWTAuth[Any]:
    return JWTAuth(TokenVerifier(Key.hmac(SECRET)), **options)
