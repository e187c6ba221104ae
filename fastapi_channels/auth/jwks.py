"""`JWKS`: verification keys published by an identity provider at a JSON Web Key Set URL.

Auth0, Keycloak, Cognito, Entra ID and Google publish their public keys as a JWKS document and
rotate them on their own schedule. A `JWKS` is a key source for `TokenVerifier` in place of a
`KeySet`:

- **Fetched asynchronously** with ``httpx`` (the ``jwks`` extra), never blocking the event loop,
  and **lazily**: the first token that needs a key triggers the first fetch, so an app starts
  whether or not the provider answers, and the same object works wherever the verifier is used
  (channels, HTTP routes, an app without a lifespan). `refresh` warms the cache earlier.
- **Cached** for the response's ``Cache-Control: max-age`` (less its ``Age``; ``no-store`` and
  ``no-cache`` mean zero), 5 minutes without one, at most a day; or for a fixed ``ttl``. Past
  that, a token whose key is cached still verifies at once with it while one refetch runs in
  the background.
- **Refetched for an unknown kid**, so a newly rotated key works at once, but at most once per
  ``cooldown`` (10 s): tokens with forged kids cannot make the app hammer the provider.
  Concurrent handshakes share the one fetch in flight; in between, an unknown kid is refused
  without any request.
- **Failure keeps the last good keys.** A fetch that fails (unreachable, a timeout, a non-200
  answer, a document with no usable key) changes nothing; it is logged once as a WARNING on the
  ``fastapi_channels.auth.jwks`` logger, later failures of the same outage at DEBUG, the
  recovery at INFO. Until a first fetch succeeds every token is refused (``unknown-key``, with
  the fetch's error in the log line).

Algorithms still come from the keys: each JWK's ``alg``, else its type's (``RS256`` for RSA, the
curve's for EC, ``EdDSA``), narrowed by the verifier's ``algorithms``; never from the token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import ssl
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from fastapi_channels.auth._jwk import read_key_set
from fastapi_channels.auth.keys import Key
from fastapi_channels.wire.errors import AuthenticationError, AuthFailure, ConfigurationError
from fastapi_channels.wire.text import printable

if TYPE_CHECKING:
    import httpx

__all__ = ["DEFAULT_COOLDOWN", "DEFAULT_TTL", "JWKS", "MAX_DOCUMENT_SIZE", "MAX_TTL"]

logger = logging.getLogger("fastapi_channels.auth.jwks")

DEFAULT_TTL: Final = 300.0
"""How long, in seconds, a document without ``Cache-Control: max-age`` is kept."""
MAX_TTL: Final = 86400.0
"""The longest a document is kept, whatever its ``max-age``: a removed key is dropped within a
day."""
DEFAULT_COOLDOWN: Final = 10.0
"""The fewest seconds between two fetches."""
DEFAULT_TIMEOUT: Final = 5.0
MAX_DOCUMENT_SIZE: Final = 1 << 20
"""Documents larger than this many bytes (1 MiB; real ones are a few KiB) are refused."""
_LOOPBACK: Final = frozenset({"localhost", "127.0.0.1", "::1"})
_MAX_KID_IN_LOG: Final = 64


class JWKS:
    """Keys fetched from a JWKS URL, cached, and refetched when a token names a new ``kid``.

    Pass it to `TokenVerifier` where keys go. Verification stays synchronous when the key is
    cached: `TokenVerifier.verify_async` (which `JWTAuth` uses) awaits a fetch only for a ``kid``
    it does not know, at most once per ``cooldown`` whatever the number of such tokens, and
    concurrent handshakes wait on the same fetch. `TokenVerifier.verify` uses the cached keys
    only. Tokens must name their key with ``kid``, as every provider's do.

    One instance serves one event loop at a time; it holds no connection between fetches, and
    loads the CA bundle once, when it is built (about 100 ms), not at each fetch.

    Args:
        url: the JWKS URL, ``https``; ``http`` only for a loopback host, or with ``allow_http``.
        ttl: keep each document this many seconds, ignoring its cache headers. By default its
            ``Cache-Control: max-age`` decides (see the module docstring).
        cooldown: the fewest seconds between two fetches, whatever triggers them.
        timeout: the longest a fetch may take, in seconds, from connecting to the last byte.
        allow_http: allow a plain ``http`` URL to a host other than loopback (a provider inside
            a private network). Keys fetched in clear can be replaced on the way.
        clock: the monotonic clock the cache and the cooldown read, in seconds.

    Raises:
        ConfigurationError: the URL is not ``https`` (or allowed ``http``), a negative duration,
            or ``httpx`` or ``cryptography`` is missing (``pip install
            'fastapi-ws-channels[jwks]'``).
    """

    def __init__(
        self,
        url: str,
        *,
        ttl: float | None = None,
        cooldown: float = DEFAULT_COOLDOWN,
        timeout: float = DEFAULT_TIMEOUT,
        allow_http: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _require_extra()
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ConfigurationError(f"the JWKS URL must be an https URL, not {url!r}")
        if parts.scheme == "http" and not allow_http and parts.hostname not in _LOOPBACK:
            raise ConfigurationError(
                f"the JWKS URL {url!r} is plain http, so its keys could be replaced on the way; "
                "use https (or JWKS(..., allow_http=True) inside a private network)"
            )
        if (ttl is not None and ttl < 0) or cooldown < 0 or timeout <= 0:
            raise ConfigurationError("ttl and cooldown cannot be negative; timeout must be > 0")
        self.url = url
        self.ttl = ttl
        self.cooldown = cooldown
        self.timeout = timeout
        self._clock = clock
        self._keys: Mapping[str, Key] = {}
        self._fetched = False
        self._expires = -math.inf
        self._last_attempt = -math.inf
        self._fetch: asyncio.Task[bool] | None = None
        self._outage: str | None = None
        """The error of the current outage, or ``None`` while fetches succeed."""
        self._tls = _tls_context(parts.scheme == "https")

    def __repr__(self) -> str:
        return f"JWKS({self.url!r}, keys={sorted(self._keys)!r})"

    @property
    def kids(self) -> frozenset[str]:
        """The ids of the keys fetched last (empty before the first successful fetch)."""
        return frozenset(self._keys)

    @property
    def expires_at(self) -> float | None:
        """When, on ``clock``, the cached keys go stale; ``None`` before the first fetch."""
        return self._expires if self._fetched else None

    @property
    def fetching(self) -> bool:
        """Whether a fetch is in flight (for health checks and tests)."""
        return self._fetch is not None and not self._fetch.done()

    def select(self, kid: object) -> Key:
        """The cached key for a token whose header holds ``kid``; never fetches.

        Raises:
            AuthenticationError: ``kid`` is missing or not a string (`MALFORMED`), or names no
                cached key (`UNKNOWN_KEY`, with the last fetch error if there is one).
        """
        checked = _check_kid(kid)
        key = self._keys.get(checked)
        if key is None:
            raise self._unknown(checked)
        return key

    async def key_for(self, kid: object) -> Key:
        """The key for a token whose header holds ``kid``, fetching the set if it may be new.

        A cached key returns at once (and starts a background refetch once the cache is
        stale). An unknown ``kid`` waits for the fetch in flight, or starts one if the last
        began at least ``cooldown`` seconds ago; otherwise it is refused without a request.
        The fetch is shielded: a handshake that is cancelled while waiting does not cancel it.

        Raises:
            AuthenticationError: as `select`, after the fetch if one was allowed.
        """
        checked = _check_kid(kid)
        key = self._keys.get(checked)
        if key is not None:
            if self._clock() >= self._expires and self._may_fetch():
                self._start_fetch()
            return key
        fetch = self._running_fetch()
        if fetch is None and self._may_fetch():
            fetch = self._start_fetch()
        if fetch is not None:
            await asyncio.shield(fetch)
        return self.select(checked)

    async def refresh(self) -> bool:
        """Fetch the set now, whatever the cache and the cooldown, or join the fetch in flight.

        Use it to warm the cache in a lifespan (``await jwks.refresh()``): it never raises, and
        a provider that is down delays start-up by at most ``timeout``.

        Returns:
            Whether the fetch succeeded; on failure the last good keys are kept.
        """
        fetch = self._running_fetch() or self._start_fetch()
        return await asyncio.shield(fetch)

    def _may_fetch(self) -> bool:
        return self._clock() - self._last_attempt >= self.cooldown

    def _running_fetch(self) -> asyncio.Task[bool] | None:
        fetch = self._fetch
        # A fetch of another (perhaps closed) event loop cannot be awaited here.
        if fetch is None or fetch.done() or fetch.get_loop() is not asyncio.get_running_loop():
            return None
        return fetch

    def _start_fetch(self) -> asyncio.Task[bool]:
        self._last_attempt = self._clock()
        self._fetch = asyncio.get_running_loop().create_task(self._run_fetch())
        return self._fetch

    async def _run_fetch(self) -> bool:
        try:
            document, lifetime = await self._download()
            found = read_key_set(document)
            if not found.keys:
                skipped = "; ".join(found.skipped) or "it is empty"
                raise ValueError(f"no usable signing key ({skipped})")
        # Whatever went wrong (network, HTTP, JSON, keys), the last good keys stay in use.
        except Exception as exc:
            self._failed(_describe(exc))
            return False
        for reason in found.skipped:
            logger.debug("JWKS %s: skipped %s", self.url, printable(reason))
        self._install(found.keys, lifetime)
        return True

    async def _download(self) -> tuple[object, float]:
        import httpx

        async with (
            asyncio.timeout(self.timeout),
            httpx.AsyncClient(
                verify=self._tls, timeout=self.timeout, follow_redirects=False
            ) as client,
            client.stream("GET", self.url, headers={"Accept": "application/json"}) as response,
        ):
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_SIZE:
                    raise ValueError(f"the document is larger than {MAX_DOCUMENT_SIZE} bytes")
            return json.loads(body), self._lifetime(response.headers)

    def _lifetime(self, headers: httpx.Headers) -> float:
        if self.ttl is not None:
            return self.ttl
        return min(MAX_TTL, freshness(headers.get("cache-control"), headers.get("age")))

    def _install(self, keys: Mapping[str, Key], lifetime: float) -> None:
        before = set(self._keys)
        self._keys = dict(keys)
        self._expires = self._clock() + lifetime
        added, removed = sorted(set(keys) - before), sorted(before - set(keys))
        if self._outage is not None:
            logger.info("JWKS %s: fetched again after failing (%s)", self.url, self._outage)
            self._outage = None
        if added or removed or not self._fetched:
            logger.info(
                "JWKS %s: %d keys, kept %.0f s (added %s; removed %s)",
                self.url,
                len(keys),
                lifetime,
                ", ".join(map(printable, added)) or "none",
                ", ".join(map(printable, removed)) or "none",
            )
        self._fetched = True

    def _failed(self, error: str) -> None:
        if self._outage is not None:
            logger.debug("JWKS %s: fetch failed again: %s", self.url, error)
            self._outage = error
            return
        self._outage = error
        logger.warning(
            "JWKS %s: fetch failed: %s; %s; retrying at most every %.0f s",
            self.url,
            error,
            f"keeping the {len(self._keys)} keys fetched before"
            if self._fetched
            else "no keys yet, so every token is refused until a fetch succeeds",
            self.cooldown,
        )

    def _unknown(self, kid: str) -> AuthenticationError:
        if not self._fetched:
            detail = f"no keys fetched yet from {self.url}"
            if self._outage is not None:
                detail += f" (last fetch: {self._outage})"
        else:
            detail = f"no key of {self.url} has kid {kid[:_MAX_KID_IN_LOG]!r}"
        return AuthenticationError(AuthFailure.UNKNOWN_KEY, detail)


def freshness(cache_control: str | None, age: str | None = None) -> float:
    """How many seconds a response stays fresh, from its ``Cache-Control`` and ``Age`` headers.

    ``max-age`` less ``Age`` (RFC 9111 §4.2); zero for ``no-store`` or ``no-cache``;
    `DEFAULT_TTL` when neither is given or ``max-age`` is unreadable.
    """
    max_age: float | None = None
    for directive in (cache_control or "").split(","):
        name, _, value = directive.strip().partition("=")
        name = name.strip().lower()
        if name in ("no-store", "no-cache"):
            return 0.0
        if name == "max-age":
            try:
                max_age = float(int(value.strip().strip('"')))
            except ValueError:
                return DEFAULT_TTL
    if max_age is None:
        return DEFAULT_TTL
    try:
        already = float(int(age)) if age is not None else 0.0
    except ValueError:
        already = 0.0
    return max(0.0, max_age - max(0.0, already))


def _check_kid(kid: object) -> str:
    if kid is None:
        raise AuthenticationError(
            AuthFailure.UNKNOWN_KEY, "the token has no kid; keys from a JWKS are named by kid"
        )
    if not isinstance(kid, str):
        raise AuthenticationError(AuthFailure.MALFORMED, "the kid header is not a string")
    return kid


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc)
    return printable(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:200]


def _tls_context(verify: bool) -> ssl.SSLContext:
    """The TLS settings of every fetch, made once.

    Loading the CA bundle takes about 100 ms of CPU, which would stall the event loop at each
    fetch (httpx loads it for each client it builds).
    """
    import httpx

    # Plain http (redirects are not followed) needs no certificates.
    return httpx.create_ssl_context(verify=verify)


def _require_extra() -> None:
    try:
        import cryptography  # noqa: F401
        import httpcore  # noqa: F401  (httpx imports it at the first request: import it now)
        import httpx  # noqa: F401
    except ImportError:  # pragma: no cover - the test setup installs both
        raise ConfigurationError(
            "JWKS needs httpx and cryptography: pip install 'fastapi-ws-channels[jwks]'"
        ) from None
