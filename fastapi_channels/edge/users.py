"""A mixin for the application's user model: send to all of a user's connections."""

from __future__ import annotations

from typing import Any

from fastapi_channels.core.server import ListenerRef, SocketServer
from fastapi_channels.edge.di import active_container

__all__ = ["SocketUserMixin"]


class SocketUserMixin:
    """Give a user model ``send_socket_event`` and ``send_socket_channel_event``.

    The user is identified by `socket_user_id` (its ``id`` attribute by default), the
    same key the ``Channels`` plugin files its connections under. The server is taken from the
    running ``Channels`` container, so the methods work from anywhere in the process (HTTP
    routes, background tasks), reaching the user's connections on every process.
    """

    def socket_user_id(self) -> object:
        """The id connections of this user are filed under; ``self.id`` by default."""
        return getattr(self, "id")  # noqa: B009 - mixins cannot declare the attribute

    async def send_socket_event(self, event: str, data: Any = None) -> None:
        """Send a plain event to every connection of this user."""
        server = active_container().get(SocketServer)
        await server.send_to_user(self.socket_user_id(), event, data)

    async def send_socket_channel_event(
        self, listener: ListenerRef, channel: str, event: str, data: Any = None
    ) -> None:
        """Send a channel event to this user's connections subscribed to ``channel``."""
        server = active_container().get(SocketServer)
        await server.send_to_user_via_channel(self.socket_user_id(), listener, channel, event, data)
