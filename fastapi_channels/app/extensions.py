"""Connection extensions: per-connection hooks and in-band events beyond Envuso's protocol.

An extension sees each connection open and close, and handles the reserved events it names
(they are routed to it before any listener). Authentication uses one to expire connections
whose token expires and to renew tokens in-band (see ``docs/protocol.md``). Extensions run on
the connection's reader task like handlers do, so a slow ``handle`` delays only that
connection's packets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from fastapi_channels.core.connection import SocketConnection
    from fastapi_channels.wire.protocol import SocketPacket

__all__ = ["ConnectionExtension"]


class ConnectionExtension:
    """Base class of connection extensions; every hook does nothing unless overridden.

    Attributes:
        events: the reserved event names `handle` receives.
    """

    events: ClassVar[frozenset[str]] = frozenset()

    def opened(self, connection: SocketConnection) -> None:
        """Run once the connection is accepted and ``ready`` is queued; must not block."""

    def closed(self, connection: SocketConnection) -> None:
        """Run once the connection has gone away; must not block."""

    async def handle(self, connection: SocketConnection, packet: SocketPacket) -> object:
        """Handle one packet of one of `events`.

        What it returns is the ``data`` of the reply when the packet carried an ``id``. An
        exception is logged and answered with a ``channels:error`` packet (code
        ``handler-error``), or an error reply; it never closes the connection.
        """
        return None
