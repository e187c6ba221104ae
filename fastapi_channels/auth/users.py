"""Turning verified claims into the application's user object.

A user loader is either an ``async`` function of the claims, or a class with an ``async def
load_user(self, claims)`` method that the application's ``injector.Injector`` builds, so it
can receive the services it needs (a database session factory, a cache) by injection: the
``Channels`` container builds it, or the injector given to ``JWTAuth``. Either
returns the user, or ``None`` when the token's subject no longer exists (the connection is then
refused). Without a loader the user is a `TokenUser`.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, TypeVar, cast

from injector import Injector
from starlette.requests import HTTPConnection

from fastapi_channels.app.building import build
from fastapi_channels.edge import di
from fastapi_channels.wire.errors import ChannelsError, ConfigurationError

__all__ = ["TokenUser", "UserLoader", "UserLoaderArg", "find_injector", "load_user"]

UserT = TypeVar("UserT")
UserT_co = TypeVar("UserT_co", covariant=True)


@dataclass(frozen=True, slots=True)
class TokenUser:
    """The user of a connection when no loader is configured.

    Attributes:
        id: the subject claim (``sub`` unless configured otherwise).
        claims: every claim of the token, read-only. Left out of ``repr``.
    """

    id: str
    claims: Mapping[str, Any] = field(repr=False)


class UserLoader(Protocol[UserT_co]):
    """A service that loads the user a token's claims designate."""

    async def load_user(self, claims: Mapping[str, Any]) -> UserT_co | None:
        """The user, or ``None`` when there is none (the authentication then fails)."""
        ...


UserLoaderArg: TypeAlias = (
    Callable[[Mapping[str, Any]], Awaitable[UserT | None]]
    | type[UserLoader[UserT]]
    | UserLoader[UserT]
)
"""What ``JWTAuth(user_loader=...)`` accepts: an async function of the claims, a
`UserLoader` class the injector builds, or a ready `UserLoader` instance."""


def find_injector(connection: HTTPConnection, configured: Injector | None) -> Injector:
    """The injector to build loader classes with.

    ``configured`` if given, else the container of the running ``Channels`` (the one
    ``Inject`` uses).

    Raises:
        ConfigurationError: there is neither.
    """
    if configured is not None:
        return configured
    try:
        return di.container_for(connection)
    except ChannelsError:
        raise ConfigurationError(
            "the user loader is a class but no container is running: start Channels (its "
            "lifespan) or pass JWTAuth(injector=...)"
        ) from None


async def load_user(
    loader: UserLoaderArg[UserT],
    claims: Mapping[str, Any],
    connection: HTTPConnection,
    injector: Injector | None = None,
) -> UserT | None:
    """Run ``loader`` on ``claims``.

    A loader class is built by the injector each time; bind it as a singleton to share one
    instance.
    """
    if isinstance(loader, type):
        instance: UserLoader[UserT] = build(find_injector(connection, injector), loader)
        result: object = instance.load_user(claims)
    elif callable(getattr(loader, "load_user", None)):
        result = cast(UserLoader[UserT], loader).load_user(claims)
    else:
        result = cast(Callable[[Mapping[str, Any]], object], loader)(claims)
    if inspect.isawaitable(result):
        result = await result
    return cast(UserT | None, result)
