from __future__ import annotations

import pytest
from starlette.requests import HTTPConnection

from fastapi_channels.auth import AuthenticationError, AuthFailure, OriginPolicy
from fastapi_channels.wire.errors import ConfigurationError


def handshake(
    *origins: str, host: str = "api.example.com", kind: str = "websocket"
) -> HTTPConnection:
    headers = [(b"host", host.encode())] + [(b"origin", o.encode()) for o in origins]
    return HTTPConnection({"type": kind, "path": "/ws", "headers": headers})


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("example.com", "has no scheme; write it as 'https://example.com'"),
        ("https://example.com/app", "no path, query or credentials"),
        ("https://user@example.com", "no path, query or credentials"),
        ("ftp://example.com", "scheme://host"),
        ("https://example.com:99999", "scheme://host"),
        ("", "non-empty string"),
    ],
)
def test_bad_entries_are_explained(entry: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        OriginPolicy([entry])


def test_star_cannot_be_mixed() -> None:
    with pytest.raises(ConfigurationError, match=r"OriginPolicy.any\(\)"):
        OriginPolicy(["https://a.example", "*"])


POLICY = OriginPolicy(
    ["https://App.Example.com:443", "http://localhost:5173", "https://*.example.org"],
    same_origin=False,
)


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example.com", True),
        ("HTTPS://APP.EXAMPLE.COM", True),
        ("https://app.example.com:443", True),
        ("https://app.example.com/", True),
        ("http://app.example.com", False),
        ("https://app.example.com:8443", False),
        ("https://app.example.com.evil.test", False),
        ("http://localhost:5173", True),
        ("http://localhost:5174", False),
        ("https://a.example.org", True),
        ("https://a.b.example.org", True),
        ("https://example.org", False),
        ("https://evilexample.org", False),
        ("https://a.example.org:444", False),
        ("null", False),
        ("", False),
        ("https://exa mple.org", False),
        (None, True),
    ],
)
def test_allow_list(origin: str | None, allowed: bool) -> None:
    assert POLICY.is_allowed(origin, host="api.example.com") is allowed


def test_same_origin_compares_host_and_port() -> None:
    policy = OriginPolicy()
    assert policy.is_allowed("https://api.example.com", host="api.example.com")
    assert policy.is_allowed("http://localhost:8000", host="localhost:8000")
    assert not policy.is_allowed("http://localhost:8001", host="localhost:8000")
    assert not policy.is_allowed("https://evil.test", host="api.example.com")
    assert not policy.is_allowed("https://evil.test", host=None)


def test_missing_origin_can_be_refused() -> None:
    assert not OriginPolicy(allow_missing=False).is_allowed(None, host="x")


def test_check_refuses_a_forbidden_handshake_with_a_generic_reason() -> None:
    with pytest.raises(AuthenticationError) as caught:
        POLICY.check(handshake("https://evil.test"))
    error = caught.value
    assert error.failure is AuthFailure.ORIGIN and error.status_code == 403
    assert error.reason == "origin not allowed"
    assert "evil.test" in error.detail and "evil.test" not in error.reason
    with pytest.raises(AuthenticationError, match="origin not allowed"):
        POLICY.check(handshake("https://app.example.com", "https://evil.test"))
    POLICY.check(handshake("https://app.example.com"))
    POLICY.check(handshake())


def test_http_requests_are_not_checked() -> None:
    POLICY.check(handshake("https://evil.test", kind="http"))


def test_any_allows_everything() -> None:
    policy = OriginPolicy.any()
    assert policy.is_allowed("https://evil.test", host="x")
    assert policy.is_allowed("null", host=None)
    assert repr(policy) == "OriginPolicy.any()"


def test_repr_lists_the_normalised_entries() -> None:
    assert repr(POLICY) == (
        "OriginPolicy(['http://localhost:5173', 'https://app.example.com', "
        "'https://*.example.org'], same_origin=False, allow_missing=True)"
    )
