"""The ``Origin`` allow-list checked at the websocket handshake.

Browsers attach cookies to a websocket handshake whatever page opened it, and websockets are
not covered by CORS, so with cookie authentication a page on any site could open a socket as
the visiting user (cross-site websocket hijacking). Browsers always send the page's ``Origin``
on a handshake; checking it against an allow-list closes that hole. Clients that are not
browsers send no ``Origin`` and carry no ambient cookies, so a missing ``Origin`` is allowed
unless configured otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection

from fastapi_channels.wire.errors import AuthenticationError, AuthFailure, ConfigurationError

__all__ = ["OriginPolicy"]

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_MAX_ORIGIN_IN_LOG: Final = 100


def _normalise(origin: str) -> str | None:
    """``scheme://host[:port]`` in lower case without a default port, or ``None`` if invalid."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if scheme not in _DEFAULT_PORTS or not host or parts.username or parts.password:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _parse_entry(entry: str) -> str:
    if not isinstance(entry, str) or not entry.strip():
        raise ConfigurationError(f"an allowed origin must be a non-empty string, not {entry!r}")
    text = entry.strip()
    if text == "*":
        raise ConfigurationError("'*' cannot be mixed with other origins; use OriginPolicy.any()")
    if "://" not in text:
        raise ConfigurationError(
            f"allowed origin {entry!r} has no scheme; write it as 'https://{text}'"
        )
    scheme, _, rest = text.partition("://")
    wildcard = rest.startswith("*.")
    normalised = _normalise(f"{scheme}://{rest[2:] if wildcard else rest}")
    if normalised is None:
        raise ConfigurationError(
            f"allowed origin {entry!r} is not of the form scheme://host[:port] "
            "(http or https, no path, query or credentials)"
        )
    if wildcard:
        scheme, _, host = normalised.partition("://")
        return f"{scheme}://*.{host}"
    return normalised


class OriginPolicy:
    """Which page origins may open a websocket.

    Args:
        allowed: origins such as ``https://app.example.com`` or ``http://localhost:5173``, and
            ``https://*.example.com`` for any subdomain (not ``example.com`` itself). Scheme and
            host are compared case-insensitively and a default port may be written or not.
        same_origin: also allow a page served by this server, i.e. an ``Origin`` whose host
            and port equal the handshake's ``Host`` header. The scheme is not compared, so
            this still works behind a proxy that terminates TLS; it does not work behind one
            that rewrites ``Host`` (list the public origin instead).
        allow_missing: allow handshakes without an ``Origin`` header (clients that are not
            browsers).

    Raises:
        ConfigurationError: an entry without a scheme (``example.com``), with a path, query or
            credentials, an empty entry, or ``*`` among other entries.
    """

    def __init__(
        self,
        allowed: Iterable[str] = (),
        *,
        same_origin: bool = True,
        allow_missing: bool = True,
    ) -> None:
        if isinstance(allowed, str):
            allowed = (allowed,)
        entries = [_parse_entry(entry) for entry in allowed]
        self._exact = frozenset(entry for entry in entries if "://*." not in entry)
        self._suffixes = tuple(
            (scheme, "." + host.removeprefix("*."))
            for scheme, _, host in (entry.partition("://") for entry in entries)
            if host.startswith("*.")
        )
        self.same_origin = same_origin
        self.allow_missing = allow_missing
        self._any = False

    @classmethod
    def any(cls) -> OriginPolicy:
        """A policy that allows every origin.

        Only for token sources that browsers never attach on their own (not cookies).
        """
        policy = cls()
        policy._any = True
        return policy

    def __repr__(self) -> str:
        if self._any:
            return "OriginPolicy.any()"
        entries = sorted(self._exact) + [f"{s}://*{suffix}" for s, suffix in self._suffixes]
        return (
            f"OriginPolicy({entries!r}, same_origin={self.same_origin}, "
            f"allow_missing={self.allow_missing})"
        )

    def is_allowed(self, origin: str | None, host: str | None) -> bool:
        """Whether a handshake with this ``Origin`` and ``Host`` header may proceed."""
        if self._any:
            return True
        if origin is None:
            return self.allow_missing
        normalised = _normalise(origin)
        if normalised is None:
            return False
        if normalised in self._exact:
            return True
        scheme, _, netloc = normalised.partition("://")
        if any(scheme == s and netloc.endswith(suffix) for s, suffix in self._suffixes):
            return True
        return self.same_origin and host is not None and _same_host(origin, host)

    def check(self, connection: HTTPConnection) -> None:
        """Refuse a websocket handshake from an origin that is not allowed.

        HTTP requests are left alone: for them, CORS and CSRF protection are the tools.

        Raises:
            AuthenticationError: with `ORIGIN`.
        """
        if connection.scope["type"] != "websocket":
            return
        origins = connection.headers.getlist("origin")
        if len(origins) > 1:
            raise AuthenticationError(AuthFailure.ORIGIN, "several Origin headers")
        origin = origins[0] if origins else None
        if not self.is_allowed(origin, connection.headers.get("host")):
            shown = "none" if origin is None else repr(origin[:_MAX_ORIGIN_IN_LOG])
            raise AuthenticationError(AuthFailure.ORIGIN, f"origin {shown} is not allowed")


def _same_host(origin: str, host: str) -> bool:
    """Whether the origin's ``host[:port]`` is the ``Host`` header.

    Both as browsers write them, without the scheme's default port.
    """
    netloc = urlsplit(origin.strip()).netloc.lower()
    return bool(netloc) and netloc == host.strip().lower()
