"""``JWTAuth``: JWT authentication as one FastAPI dependency for HTTP routes and websockets.

The dependency is typed on ``HTTPConnection``, so the same object guards an HTTP route
(``Depends(auth)``) and the channels endpoint (``Channels(user=auth)``), where FastAPI's own
``OAuth2PasswordBearer`` and ``HTTPBearer`` fail because they expect a ``Request``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Final, Generic, Literal, TypedDict, TypeVar, Unpack, cast, overload

from fastapi import HTTPException
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase
from injector import Injector
from starlette.requests import HTTPConnection

from fastapi_channels.auth.context import SCOPE_KEY, Authentication
from fastapi_channels.auth.lifetime import TokenLifetime
from fastapi_channels.auth.origin import OriginPolicy
from fastapi_channels.auth.tokens import TokenSource, find_token
from fastapi_channels.auth.users import TokenUser, UserLoaderArg, load_user
from fastapi_channels.auth.verifier import TokenVerifier
from fastapi_channels.wire.errors import AuthenticationError, AuthFailure, ConfigurationError
from fastapi_channels.wire.text import printable

__all__ = ["DEFAULT_SOURCES", "AuthOptions", "JWTAuth"]

logger = logging.getLogger("fastapi_channels.auth")

DEFAULT_SOURCES: Final = (TokenSource.SUBPROTOCOL, TokenSource.HEADER)
"""The Envuso client's subprotocol, then ``Authorization: Bearer``."""
_SUSPICIOUS: Final = frozenset({AuthFailure.ORIGIN, AuthFailure.SIGNATURE, AuthFailure.ALGORITHM})
"""Failures logged as warnings: they hint at forgery or hijacking rather than a stale client."""

UserT = TypeVar("UserT")


class AuthOptions(TypedDict, total=False):
    """The keyword options of `JWTAuth` besides ``user_loader``."""

    sources: Sequence[TokenSource | str]
    allow_anonymous: bool
    cookie_name: str
    query_param: str
    origins: OriginPolicy | Iterable[str] | Literal["*"] | None
    subject_claim: str
    injector: Injector | None
    scheme_name: str


class JWTAuth(SecurityBase, Generic[UserT]):
    """A FastAPI dependency that authenticates a request or websocket handshake with a JWT.

    ``await auth(connection)`` returns the user, ``None`` for an anonymous client when
    anonymous clients are allowed, and otherwise refuses: on HTTP routes with a 401 (403 for a
    forbidden origin) carrying a generic ``detail``; on websockets by raising
    `AuthenticationError`, which the channels endpoint turns
    into a ``disconnect`` packet with the generic reason and a clean close. The specific reason
    is logged on the ``fastapi_channels.auth`` logger (INFO, or WARNING for a bad signature, a
    refused algorithm or a forbidden origin), never with the token.

    Args:
        verifier: keys, algorithms and claim checks.
        user_loader: turns claims into the application's user (see
            `fastapi_channels.auth.users`); by default a `TokenUser`.
        sources: where to look for the token, in order (see `fastapi_channels.auth.tokens`);
            ``query`` must be listed to be used.
        allow_anonymous: whether a client without a token is let in as ``None``. See also
            `required`.
        cookie_name: the cookie read by the ``cookie`` source.
        query_param: the query parameter read by the ``query`` source.
        origins: the websocket ``Origin`` allow-list: an `OriginPolicy`, a list of
            origins (same-origin pages stay allowed), or ``"*"`` for no check. By default the
            check is on, allowing same-origin pages only, whenever the ``cookie`` source is
            enabled, and off otherwise.
        subject_claim: the claim naming the user.
        injector: builds a loader class; by default the running ``Channels`` container.
        scheme_name: the security scheme's name in the OpenAPI document.

    Raises:
        ConfigurationError: no sources, a repeated or unknown source, or a bad origin entry.
    """

    @overload
    def __init__(
        self: JWTAuth[TokenUser],
        verifier: TokenVerifier,
        *,
        user_loader: None = None,
        **options: Unpack[AuthOptions],
    ) -> None: ...

    @overload
    def __init__(
        self: JWTAuth[UserT],
        verifier: TokenVerifier,
        *,
        user_loader: UserLoaderArg[UserT],
        **options: Unpack[AuthOptions],
    ) -> None: ...

    def __init__(
        self,
        verifier: TokenVerifier,
        *,
        user_loader: UserLoaderArg[Any] | None = None,
        sources: Sequence[TokenSource | str] = DEFAULT_SOURCES,
        allow_anonymous: bool = True,
        cookie_name: str = "access_token",
        query_param: str = "token",
        origins: OriginPolicy | Iterable[str] | Literal["*"] | None = None,
        subject_claim: str = "sub",
        injector: Injector | None = None,
        scheme_name: str = "JWT",
    ) -> None:
        self.verifier = verifier
        self.user_loader = user_loader
        self.sources = _check_sources(sources)
        self.allow_anonymous = allow_anonymous
        self.cookie_name = cookie_name
        self.query_param = query_param
        self.origins = _origin_policy(origins, TokenSource.COOKIE in self.sources)
        self.subject_claim = subject_claim
        self.injector = injector
        self.model = HTTPBearerModel(bearerFormat="JWT")
        self.connection_extension = TokenLifetime(self)
        """Token expiry and in-band renewal on channel connections (used by ``Channels``)."""
        self.scheme_name = scheme_name
        self._required: JWTAuth[UserT] | None = None if allow_anonymous else self

    @property
    def required(self) -> JWTAuth[UserT]:
        """The same authentication, refusing anonymous clients: ``Depends(auth.required)``."""
        if self._required is None:
            required = copy.copy(self)
            required.allow_anonymous = False
            required._required = required
            self._required = required
        return self._required

    async def __call__(self, connection: HTTPConnection) -> UserT | None:
        """Authenticate ``connection``; see the class docstring for what a refusal looks like."""
        try:
            found = await self.authenticate(connection)
        except AuthenticationError as exc:
            if connection.scope["type"] != "http":
                raise
            headers = None
            if exc.status_code == 401:
                bearer = 'Bearer error="invalid_token"'
                headers = {
                    "WWW-Authenticate": "Bearer" if exc.failure is AuthFailure.MISSING else bearer
                }
            raise HTTPException(exc.status_code, exc.reason, headers=headers) from exc
        return None if found is None else found.user

    async def authenticate(self, connection: HTTPConnection) -> Authentication[UserT] | None:
        """Check the origin, find and verify the token, and load the user.

        The result is also recorded in the connection's scope (see `get_authentication`).

        Returns:
            The authentication, or ``None`` for an anonymous client that is allowed in.

        Raises:
            AuthenticationError: the client is refused; the reason has been logged.
        """
        source: TokenSource | None = None
        try:
            if self.origins is not None:
                self.origins.check(connection)
            presented = find_token(
                connection,
                self.sources,
                cookie_name=self.cookie_name,
                query_param=self.query_param,
            )
            if presented is None:
                if not self.allow_anonymous:
                    raise AuthenticationError(AuthFailure.MISSING, "no token was presented")
                return None
            source = presented.source
            found = await self._authenticate_token(presented.token, source, connection)
        except AuthenticationError as exc:
            self.log_refusal(connection, exc, source)
            raise
        connection.scope[SCOPE_KEY] = found
        return found

    async def renew(
        self, connection: HTTPConnection, token: str, current: Authentication[UserT]
    ) -> Authentication[UserT]:
        """Re-authenticate a live connection with a fresh token sent in-band.

        Raises:
            AuthenticationError: the token does not verify, or names another subject
                (`SUBJECT_CHANGED`); logged.
        """
        try:
            found = await self._authenticate_token(token, None, connection)
            if found.subject != current.subject:
                raise AuthenticationError(
                    AuthFailure.SUBJECT_CHANGED, "the new token is for another subject"
                )
        except AuthenticationError as exc:
            self.log_refusal(connection, exc, None)
            raise
        connection.scope[SCOPE_KEY] = found
        return found

    def issue(
        self,
        subject: str,
        *,
        lifetime: timedelta | float = timedelta(minutes=15),
        claims: Mapping[str, Any] | None = None,
    ) -> str:
        """Sign a token this authentication accepts (see `TokenVerifier.issue`)."""
        return self.verifier.issue(subject, lifetime=lifetime, claims=claims)

    def log_refusal(
        self, connection: HTTPConnection, exc: AuthenticationError, source: TokenSource | None
    ) -> None:
        """Log a refusal with its specific reason and where it came from, never the token."""
        client = connection.client
        logger.log(
            logging.WARNING if exc.failure in _SUSPICIOUS else logging.INFO,
            "authentication refused: %s (%s); %s %s from %s, token source: %s",
            exc.failure.value,
            printable(exc.detail),
            connection.scope["type"],
            printable(connection.scope.get("path", "?")),
            f"{client.host}:{client.port}" if client else "unknown",
            source.value if source is not None else "none",
        )

    async def _authenticate_token(
        self, token: str, source: TokenSource | None, connection: HTTPConnection
    ) -> Authentication[UserT]:
        verified = await self.verifier.verify_async(token)
        subject = verified.claims.get(self.subject_claim)
        if not isinstance(subject, str) or not subject:
            raise AuthenticationError(
                AuthFailure.CLAIMS, f"the {self.subject_claim!r} claim is missing or not a string"
            )
        if self.user_loader is None:
            user = cast(UserT, TokenUser(subject, verified.claims))
        else:
            loaded = await load_user(self.user_loader, verified.claims, connection, self.injector)
            if loaded is None:
                raise AuthenticationError(AuthFailure.USER, "the user loader found no user")
            user = loaded
        return Authentication(user=user, subject=subject, token=verified, source=source)


def _check_sources(sources: Sequence[TokenSource | str]) -> tuple[TokenSource, ...]:
    try:
        checked = tuple(TokenSource(source) for source in sources)
    except ValueError as exc:
        known = ", ".join(source.value for source in TokenSource)
        raise ConfigurationError(f"{exc}; token sources are {known}") from None
    if not checked:
        raise ConfigurationError("at least one token source is needed")
    if len(set(checked)) != len(checked):
        raise ConfigurationError("a token source is listed twice")
    return checked


def _origin_policy(
    origins: OriginPolicy | Iterable[str] | Literal["*"] | None, cookies: bool
) -> OriginPolicy | None:
    if origins is None:
        return OriginPolicy() if cookies else None
    if isinstance(origins, OriginPolicy):
        return origins
    if origins == "*":
        return OriginPolicy.any()
    return OriginPolicy(origins)
