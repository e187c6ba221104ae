"""What the core knows of a channel: its spec, a subscription to it, and its live record.

The core never sees listener classes. A channel listener, once started, hands the core a
`ChannelSpec`: the pattern it serves and the features the fan-out must apply (an outgoing
filter, history, presence and, derived from those two, catching new subscribers up). The
server keeps one `LiveChannel` per concrete channel with local subscribers: its spec and who
subscribes, so a fan-out reads both from one record.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi_channels.wire.patterns import ChannelPattern
from fastapi_channels.wire.stored import Position, Retention

if TYPE_CHECKING:
    from fastapi_channels.core.connection import SocketConnection
    from fastapi_channels.core.outgoing import OutgoingFilter
    from fastapi_channels.wire.history import History

__all__ = [
    "CatchUp",
    "ChannelSpec",
    "Held",
    "LiveChannel",
    "MemberInfo",
    "Subscription",
    "current_subscription",
]

MemberInfo = Callable[["SocketConnection", Any], Mapping[str, Any] | Awaitable[Mapping[str, Any]]]
"""What the other subscribers of a presence channel see of a member: ``(connection, user)``."""


@dataclass(frozen=True, slots=True)
class Held:
    """A frame held for a connection being caught up.

    Attributes:
        frame: the encoded packet.
        position: its position, for a stored message.
        filtered: whether it goes through the listener's outgoing filter (the listener's own
            events do; presence announcements do not).
    """

    frame: str
    position: Position | None = None
    filtered: bool = True


class CatchUp:
    """One presence or history spec's live frames, held per connection being caught up.

    See `fastapi_channels.core.catchup` for what is sent before the held frames.
    """

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held: dict[str, dict[SocketConnection, list[Held]]] = {}

    def hold(self, channel: str, connection: SocketConnection) -> None:
        """Hold ``channel``'s live frames for ``connection`` until `release`."""
        self._held.setdefault(channel, {})[connection] = []

    def holding(self, channel: str, connection: SocketConnection) -> bool:
        """Whether frames are held for ``connection`` on ``channel``."""
        return connection in self._held.get(channel, ())

    def release(self, channel: str, connection: SocketConnection) -> list[Held] | None:
        """Stop holding; return what was held (None if nothing was being held)."""
        waiting = self._held.get(channel)
        if waiting is None:
            return None
        held = waiting.pop(connection, None)
        if not waiting:
            del self._held[channel]
        return held

    def keep(
        self, channel: str, connections: Collection[SocketConnection], held: Held
    ) -> Collection[SocketConnection]:
        """Hold ``held`` for those of ``connections`` being caught up; return the others."""
        waiting = self._held.get(channel)
        if not waiting:
            return connections
        live = []
        for connection in connections:
            kept = waiting.get(connection)
            if kept is None:
                live.append(connection)
            else:
                kept.append(held)
        return live


@dataclass(slots=True, eq=False)
class ChannelSpec:
    """The channels one listener serves, as the fan-out sees them; shared by all of them.

    Attributes:
        pattern: the channel pattern served.
        outgoing: the outgoing filter; None keeps broadcasts encode-once.
        history: the history kept, if any.
        member_info: makes the channels presence channels: what the other subscribers see of
            a member (called with `current_subscription` set). None: no presence.
        catch_up: holds live frames for new subscribers of a presence or history channel
            while they are caught up; None for other channels (their fan-out is untouched).
    """

    pattern: ChannelPattern
    outgoing: OutgoingFilter | None = None
    history: History | None = None
    member_info: MemberInfo | None = None
    catch_up: CatchUp | None = field(init=False)

    def __post_init__(self) -> None:
        held = self.member_info is not None or self.history is not None
        self.catch_up = CatchUp() if held else None

    @property
    def presence(self) -> bool:
        """Whether the channels are presence channels."""
        return self.member_info is not None

    @property
    def retention(self) -> Retention | None:
        """The broker's view of the history, counted under the pattern (None: no history)."""
        return self.history.retention(self.pattern.text) if self.history is not None else None


@dataclass(slots=True, frozen=True)
class Subscription:
    """One connection's subscription to one concrete channel: three references, no copies.

    Attributes:
        channel: the concrete channel name, exactly as the client requested it.
        wildcard: what the pattern's ``*`` matched (``""`` for an exact pattern).
        spec: what serves the channel (shared by all subscriptions to the pattern).
    """

    channel: str
    wildcard: str
    spec: ChannelSpec


current_subscription: ContextVar[Subscription] = ContextVar("fastapi_channels_subscription")
"""The subscription being served: set around ``is_authorised``, handlers, channel middleware,
outgoing filters and ``member_info``; listeners read their channel name from it."""


@dataclass(slots=True, eq=False)
class LiveChannel:
    """A concrete channel with subscribers on this process.

    Attributes:
        subscription: the first subscription to it here: the channel's name, wildcard and
            spec, the same for every subscriber (the context of its outgoing filter).
        subscribers: this process's connections subscribed to it.
    """

    subscription: Subscription
    subscribers: set[SocketConnection] = field(default_factory=set)

    @property
    def name(self) -> str:
        """The concrete channel name."""
        return self.subscription.channel

    @property
    def spec(self) -> ChannelSpec:
        """What serves the channel."""
        return self.subscription.spec
