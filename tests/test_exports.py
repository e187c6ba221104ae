import pytest

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
    "HistoryFull",
    "Inject",
    "InvalidChannel",
    "InvalidData",
    "Limits",
    "MemoryBroker",
    "Middleware",
    "MiddlewareContext",
    "OutcomeUnknown",
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
    "api_key",
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


def test_every_public_name_imports_by_name() -> None:
    for name in EXPORTED:
        namespace: dict[str, object] = {}
        exec(f"from fastapi_channels import {name}", namespace)
        assert namespace[name] is getattr(fastapi_channels, name)


def test_an_unknown_name_fails_as_in_any_module() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'Nothing'"):
        fastapi_channels.Nothing  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(ImportError):
        from fastapi_channels import Nothing  # type: ignore[attr-defined]  # noqa: F401


def test_one_reply_error_for_the_clients_and_the_test_client() -> None:
    from fastapi_channels.client import ReplyError as ClientReplyError
    from fastapi_channels.client.errors import ReplyError as ClientErrorsReplyError
    from fastapi_channels.wire.errors import ReplyError

    assert fastapi_channels.ReplyError is ReplyError
    assert ClientReplyError is ReplyError
    assert ClientErrorsReplyError is ReplyError
