"""The HTTP API: publish, send to a user, disconnect a user, presence, history, counts.

Mounted under ``{path}/api`` when ``Channels(api_guard=...)`` is given, with the guard as a
dependency of every route (no guard, no API). Every route works on every process: sends go
through the broker like any send, reads read the broker, and the counts are gathered from every
process over the broker (`fastapi_channels.core.cluster`).

Answers:

* 200 with the route's model;
* 401 or 403 from the guard;
* 422 (FastAPI's own form, naming the field) for a body or query that fails validation, a
  channel or event name the websocket side would refuse, or data that cannot be sent;
* 404 when no listener serves the channel (or it is not a presence or history channel, for
  those reads); nothing was sent;
* 503 ``broker-unavailable``: the broker could not be reached, nothing reached another process;
* 504 ``outcome-unknown``: the broker took the message but did not confirm it in time; it may
  have been delivered. Retry with the same ``key``.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from pydantic_core import PydanticSerializationError

from fastapi_channels.edge.api_models import (
    ApiError,
    ClusterCounts,
    Disconnect,
    Done,
    HistoryAnswer,
    HistoryEntry,
    PositionModel,
    PresenceAnswer,
    ProcessCounts,
    Publish,
    Published,
    SendToUser,
    UserChannel,
)
from fastapi_channels.wire.errors import (
    BrokerError,
    ErrorCode,
    InvalidChannel,
    OutcomeUnknown,
    ProtocolError,
)
from fastapi_channels.wire.history import Position
from fastapi_channels.wire.protocol import (
    validate_channel_name,
    validate_event_name,
    validate_key,
)

if TYPE_CHECKING:
    from fastapi_channels.edge.channels import Channels

__all__ = ["API_KEY_HEADER", "api_key", "build_api"]

API_KEY_HEADER = "X-API-Key"
"""The header `api_key` reads by default (and ``fastapi-channels publish`` sends)."""

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ApiError, "description": "No listener serves the channel; nothing was sent."},
    503: {"model": ApiError, "description": "broker-unavailable: nothing was sent."},
    504: {"model": ApiError, "description": "outcome-unknown: it may have been sent."},
}


def api_key(*keys: str, header: str = API_KEY_HEADER) -> Callable[..., Any]:
    """A guard for ``Channels(api_guard=...)``: the request must carry one of ``keys``.

    The key travels in the ``header`` header (``X-API-Key``), declared as an API key security
    scheme in the OpenAPI document. A missing or wrong key is answered 401; keys are compared in
    constant time.

    Raises:
        ValueError: no key, or an empty one, was given.
    """
    if not keys or not all(keys):
        raise ValueError("api_key needs at least one non-empty key")
    wanted = [key.encode() for key in keys]
    scheme = APIKeyHeader(name=header, auto_error=False, scheme_name="ChannelsAPIKey")

    # Defaults, not Annotated: the annotations are strings resolved in the module, and
    # ``scheme`` is local to this call.
    async def guard(given: str | None = Security(scheme)) -> None:
        if given is None or not any(
            secrets.compare_digest(given.encode(errors="surrogatepass"), key) for key in wanted
        ):
            raise HTTPException(401, "a valid API key is required", {"WWW-Authenticate": header})

    return guard


def _invalid(where: str, field: str, message: str) -> RequestValidationError:
    """FastAPI's own 422, naming ``field``."""
    error = {"type": "value_error", "loc": (where, field), "msg": message, "input": None}
    return RequestValidationError([error])


def _failure(exc: BrokerError) -> JSONResponse:
    if isinstance(exc, OutcomeUnknown):
        return JSONResponse({"detail": str(exc), "code": ErrorCode.OUTCOME_UNKNOWN.value}, 504)
    return JSONResponse({"detail": str(exc), "code": ErrorCode.BROKER_UNAVAILABLE.value}, 503)


def _not_found(exc: InvalidChannel) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, 404)


def _position(position: Position | None) -> PositionModel | None:
    return None if position is None else PositionModel(offset=position.offset, epoch=position.epoch)


def build_api(channels: Channels, dependencies: Sequence[Any]) -> APIRouter:
    """The API's routes, guarded by ``dependencies``, to include under ``{path}/api``."""
    server = channels.server
    length = channels.limits.max_name_length
    router = APIRouter(dependencies=list(dependencies), tags=["fastapi_channels"])

    def channel_name(where: str, name: str) -> str:
        try:
            return validate_channel_name(name, length)
        except ProtocolError as exc:
            raise _invalid(where, "channel", exc.message) from None

    def event_name(name: str) -> str:
        try:
            return validate_event_name(name, length)
        except ProtocolError as exc:
            raise _invalid("body", "event", exc.message) from None

    @router.post("/publish", response_model=Published, responses=_ERRORS)
    async def publish(body: Publish) -> Any:
        """Broadcast an event to a channel's subscribers on every process."""
        channel = channel_name("body", body.channel)
        event = event_name(body.event)
        if body.key is not None:
            try:
                validate_key(body.key)
            except ProtocolError as exc:
                raise _invalid("body", "key", exc.message) from None
        try:
            position = await server.broadcast(channel, event, body.data, key=body.key)
        except InvalidChannel as exc:
            return _not_found(exc)
        except BrokerError as exc:
            return _failure(exc)
        except (PydanticSerializationError, UnicodeEncodeError):
            raise _invalid("body", "data", "data cannot be sent as JSON") from None
        return Published(position=_position(position))

    @router.post("/users/send", response_model=Done, responses=_ERRORS)
    async def send_to_user(body: SendToUser) -> Any:
        """Send a plain event to every connection of one user, on every process."""
        event = event_name(body.event)
        try:
            await server.send_to_user(body.user, event, body.data)
        except BrokerError as exc:
            return _failure(exc)
        except (PydanticSerializationError, UnicodeEncodeError):
            raise _invalid("body", "data", "data cannot be sent as JSON") from None
        return Done()

    @router.post("/users/disconnect", response_model=Done, responses=_ERRORS)
    async def disconnect_user(body: Disconnect) -> Any:
        """Disconnect every connection of one user (``disconnect`` with the reason, 1000)."""
        try:
            await server.disconnect_user(body.user, body.reason)
        except BrokerError as exc:
            return _failure(exc)
        return Done()

    async def for_user(body: UserChannel, act: Callable[[str, str], Awaitable[None]]) -> Any:
        channel = channel_name("body", body.channel)
        try:
            await act(body.user, channel)
        except InvalidChannel as exc:
            return _not_found(exc)
        except BrokerError as exc:
            return _failure(exc)
        return Done()

    @router.post("/users/subscribe", response_model=Done, responses=_ERRORS)
    async def subscribe_user(body: UserChannel) -> Any:
        """Subscribe every connection of one user to a channel, on every process.

        The server decides: ``is_authorised`` and middleware do not run. Connections whose
        client did not announce ``server-subscriptions`` are left out (see the protocol).
        """
        return await for_user(body, server.subscribe_user)

    @router.post("/users/unsubscribe", response_model=Done, responses=_ERRORS)
    async def unsubscribe_user(body: UserChannel) -> Any:
        """Unsubscribe every connection of one user from a channel, on every process."""
        return await for_user(body, server.unsubscribe_user)

    @router.get("/presence", response_model=PresenceAnswer, responses=_ERRORS)
    async def presence(channel: Annotated[str, Query()]) -> Any:
        """The members of a presence channel, on every process."""
        name = channel_name("query", channel)
        try:
            members = await server.presence(name)
        except InvalidChannel as exc:
            return _not_found(exc)
        except BrokerError as exc:
            return _failure(exc)
        return PresenceAnswer(channel=name, members=members)

    @router.get("/history", response_model=HistoryAnswer, responses=_ERRORS)
    async def history(
        channel: Annotated[str, Query()],
        limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
        since_offset: Annotated[int | None, Query(ge=0)] = None,
        since_epoch: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    ) -> Any:
        """A history channel's retained messages: the newest ``limit``, or those after since."""
        name = channel_name("query", channel)
        if (since_offset is None) != (since_epoch is None):
            raise _invalid("query", "since_epoch", "since_offset and since_epoch go together")
        since = None
        if since_offset is not None and since_epoch is not None:
            since = Position(since_offset, since_epoch)
        try:
            page = await server.history(name, limit=limit, since=since)
        except InvalidChannel as exc:
            return _not_found(exc)
        except BrokerError as exc:
            return _failure(exc)
        return HistoryAnswer(
            channel=name,
            position=PositionModel(offset=page.position.offset, epoch=page.position.epoch),
            recovered=page.recovered,
            messages=[
                HistoryEntry(
                    position=PositionModel(offset=m.position.offset, epoch=m.position.epoch),
                    event=m.event,
                    data=m.data,
                )
                for m in page.messages
            ],
        )

    @router.get("/counts", response_model=ClusterCounts, responses=_ERRORS)
    async def counts(
        timeout: float = Query(1.0, gt=0, le=channels.api_counts_timeout),
        top: Annotated[int, Query(ge=0, le=10_000)] = 100,
    ) -> Any:
        """Connections and subscribers of every process, gathered over the broker.

        Waits at most ``timeout`` seconds; processes that do not answer by then are listed in
        ``missing`` (this process always answers, unless its broker is unreachable: then 503).
        """
        try:
            gathered = await server.cluster.gather(timeout, top)
        except BrokerError as exc:
            return _failure(exc)
        processes = [
            ProcessCounts(process=process, **answer)
            for process, answer in sorted(gathered.answers.items())
        ]
        subscribers: dict[str, int] = {}
        for one in processes:
            for name, count in one.subscribers.items():
                subscribers[name] = subscribers.get(name, 0) + count
        return ClusterCounts(
            connections=sum(one.connections for one in processes),
            subscribers=subscribers,
            processes=processes,
            missing=gathered.missing,
        )

    return router
