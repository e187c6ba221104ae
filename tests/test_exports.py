import fastapi_channels

EXPORTED = {
    "DROP",
    "Broker",
    "BrokerError",
    "ChannelListener",
    "Channels",
    "ChannelsError",
    "CloseCode",
    "ConfigurationError",
    "ConnectionClosed",
    "ErrorCode",
    "History",
    "Inject",
    "InvalidChannel",
    "InvalidData",
    "Limits",
    "MemoryBroker",
    "Middleware",
    "MiddlewareContext",
    "OverflowPolicy",
    "Position",
    "ProtocolError",
    "Reject",
    "ReplyError",
    "SocketConnection",
    "SocketListener",
    "SocketPacket",
    "SocketServer",
    "SocketUserMixin",
    "channel",
    "listener",
}


def test_public_names_are_pinned() -> None:
    assert set(fastapi_channels.__all__) == EXPORTED
    for name in EXPORTED:
        assert getattr(fastapi_channels, name) is not None


def test_every_exception_derives_from_the_base() -> None:
    for name in fastapi_channels.__all__:
        value = getattr(fastapi_channels, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, fastapi_channels.ChannelsError), name
