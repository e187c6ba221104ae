"""Frames written straight to uvicorn's socket: the same bytes, nothing hidden from middleware."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from websockets.frames import Frame, Opcode

from bench.layers import connected_protocol
from fastapi_channels import ChannelListener, Channels, Limits, SocketServer, channel
from fastapi_channels.edge import _direct
from fastapi_channels.edge._direct import COMPRESS_THRESHOLD, DirectWrites, text_frame
from fastapi_channels.edge._uvicorn import HOOKS_KEY
from fastapi_channels.edge.router import _Handshake
from tests.live import live_server
from tests.test_faults import stalled_peer


@channel("room")
class Room(ChannelListener):
    pass


class CountingMiddleware:
    """An ASGI middleware that sees every message the app sends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.sent: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counted(message: Message) -> None:
            if message["type"] == "websocket.send":
                self.sent.append(message["text"])
            await send(message)

        await self.app(scope, receive, counted)


def build(**options: Any) -> tuple[FastAPI, Channels]:
    channels = Channels(listeners=[Room], **options)
    app = FastAPI()
    app.include_router(channels.router)
    return app, channels


async def receive(ws: websockets.ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(5):
        frame = await ws.recv(decode=True)
    assert isinstance(frame, str)
    packet = json.loads(frame)
    assert isinstance(packet, dict)
    return packet


async def subscribe(ws: websockets.ClientConnection) -> None:
    assert (await receive(ws))["event"] == "ready"
    await ws.send(json.dumps({"event": "subscribe-channel-request", "data": {"channel": "room"}}))
    response = await receive(ws)
    assert response["event"] == "subscribe-channel-response" and response["data"]["successful"]


def only_connection(channels: Channels) -> Any:
    (connection,) = channels.server.connections
    return connection


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 200_000])
def test_a_text_frame_is_what_websockets_would_send(size: int) -> None:
    text = ("é" * (size // 2)) + ("x" * (size % 2))
    expected = Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=[])
    assert text_frame(text) == expected


def test_a_text_frame_is_built_once_for_the_same_text() -> None:
    writes = DirectWrites()
    text = json.dumps({"event": "message", "data": "x" * 50})
    assert writes.frame(text) is writes.frame(text)
    other = text[:-1] + "}"  # equal but a different object
    assert writes.frame(other) == writes.frame(text) == text_frame(text)
    assert writes.frame(other) is not writes.frame(text)  # the last text only
    assert DirectWrites().frame(text) is not writes.frame(text)  # each router has its own


async def test_a_broadcast_is_framed_once_for_all_its_recipients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    framed: list[str] = []

    def counting(text: str) -> bytes:
        framed.append(text)
        return text_frame(text)

    monkeypatch.setattr(_direct, "text_frame", counting)
    app, channels = build()
    async with (
        live_server(app) as address,
        websockets.connect(f"ws://{address}/ws") as first,
        websockets.connect(f"ws://{address}/ws") as second,
    ):
        await subscribe(first)
        await subscribe(second)
        assert all(c.writes_directly for c in channels.server.connections)
        framed.clear()
        server = channels.container.get(SocketServer)
        await server.broadcast(Room, "room", "message", {"n": 1})
        for ws in (first, second):
            assert (await receive(ws))["data"] == {"n": 1}
        assert len(framed) == 1
        for connection in channels.server.connections:
            kept = connection.scope.get(HOOKS_KEY)  # the handshake was handed over, replaced
            assert kept is not None and not isinstance(kept, _Handshake)


async def test_broadcasts_of_every_size_arrive_intact_and_in_order() -> None:
    app, channels = build()
    sizes = [0, 10, 125, 126, 1000, 65535, 65536, 300_000]
    async with (
        live_server(app) as address,
        websockets.connect(f"ws://{address}/ws", max_size=None, compression=None) as first,
        websockets.connect(f"ws://{address}/ws", max_size=None) as second,
    ):
        await subscribe(first)
        await subscribe(second)
        assert all(c.writes_directly for c in channels.server.connections)
        server = channels.container.get(SocketServer)
        for size in sizes:
            await server.broadcast(Room, "room", "message", {"text": "é" * size})
        for ws in (first, second):
            for size in sizes:
                packet = await receive(ws)
                assert packet["event"] == "message" and packet["channel"] == "room"
                assert packet["data"] == {"text": "é" * size}


async def test_a_middleware_wrapping_send_still_sees_every_frame() -> None:
    app, channels = build()
    counting = CountingMiddleware(app)
    async with live_server(counting) as address, websockets.connect(f"ws://{address}/ws") as ws:
        await subscribe(ws)
        assert not only_connection(channels).writes_directly
        server = channels.container.get(SocketServer)
        for n in range(5):
            await server.broadcast(Room, "room", "message", {"n": n})
        for n in range(5):
            assert (await receive(ws))["data"] == {"n": n}
    events = [json.loads(text)["event"] for text in counting.sent]
    assert events[:2] == ["ready", "subscribe-channel-response"]
    assert events[2:7] == ["message"] * 5


async def test_with_deflate_small_frames_go_plain_and_large_ones_compressed() -> None:
    app, channels = build()
    async with (
        live_server(app, ws_per_message_deflate=True) as address,
        websockets.connect(f"ws://{address}/ws", compression="deflate") as ws,
    ):
        (deflate,) = ws.protocol.extensions
        compressed: list[bool] = []
        decode = deflate.decode

        def recording(frame: Frame, *, max_size: int | None = None) -> Frame:
            compressed.append(frame.rsv1)
            return decode(frame, max_size=max_size)

        deflate.decode = recording  # type: ignore[method-assign]
        await subscribe(ws)
        assert only_connection(channels).writes_directly
        compressed.clear()
        server = channels.container.get(SocketServer)
        texts = ["small", "a" * (COMPRESS_THRESHOLD - 100), "b" * COMPRESS_THRESHOLD, "tail"]
        for text in texts:
            await server.broadcast(Room, "room", "message", {"text": text})
        for text in texts:
            assert (await receive(ws))["data"] == {"text": text}
        assert compressed == [False, False, True, False]


async def test_direct_writes_can_be_turned_off() -> None:
    app, channels = build(limits=Limits(direct_writes=False))
    async with live_server(app) as address, websockets.connect(f"ws://{address}/ws") as ws:
        await subscribe(ws)
        assert not only_connection(channels).writes_directly


async def test_other_websocket_implementations_send_through_asgi() -> None:
    app, channels = build()
    async with (
        live_server(app, ws="wsproto") as address,
        websockets.connect(f"ws://{address}/ws") as ws,
    ):
        await subscribe(ws)
        assert not only_connection(channels).writes_directly
        server = channels.container.get(SocketServer)
        await server.broadcast(Room, "room", "message", {"n": 1})
        assert (await receive(ws))["data"] == {"n": 1}


def read_frames(sock: socket.socket, count: int) -> list[str]:
    """Read ``count`` unmasked text frames from a raw socket (blocking: run in a thread)."""
    buffer = bytearray()

    def take(size: int) -> bytes:
        while len(buffer) < size:
            chunk = sock.recv(1 << 20)
            assert chunk, "the server closed the connection"
            buffer.extend(chunk)
        data = bytes(buffer[:size])
        del buffer[:size]
        return data

    texts: list[str] = []
    while len(texts) < count:
        first, length = take(2)
        assert not length & 0x80  # a server does not mask
        if length == 126:
            length = int.from_bytes(take(2), "big")
        elif length == 127:
            length = int.from_bytes(take(8), "big")
        data = take(length)
        if first != 0x89:  # a keepalive ping
            assert first == 0x81  # a final text frame
            texts.append(data.decode())
    return texts


async def test_a_peer_that_stops_reading_gets_everything_in_order_once_it_reads() -> None:
    app, channels = build(limits=Limits(queue_size=100_000))
    async with live_server(app) as address:
        # Subscribed, then not reading; a default buffer, so that reading it back later is fast.
        sock = await asyncio.to_thread(stalled_peer, address, small_buffer=False)
        try:
            connection = only_connection(channels)
            assert connection.writes_directly
            server = channels.container.get(SocketServer)
            count = 0
            while connection.queued == 0 and count < 2_000:  # the kernels take some MiB
                await server.broadcast(Room, "room", "message", {"n": count, "pad": "x" * 65_536})
                await asyncio.sleep(0)  # lets the broadcast reach the connection
                count += 1
            assert connection.queued > 0, "the peer's buffers never filled"
            for n in range(count, count + 50):  # these wait behind the pending send
                await server.broadcast(Room, "room", "message", {"n": n, "pad": ""})
            texts = await asyncio.to_thread(read_frames, sock, count + 50)
            assert [json.loads(text)["data"]["n"] for text in texts] == list(range(count + 50))
        finally:
            sock.close()


async def test_once_the_peer_is_gone_frames_take_the_asgi_path() -> None:
    """Between the transport's loss and the app hearing of it, nothing is written directly."""
    app, channels = build()
    async with live_server(app) as address, websockets.connect(f"ws://{address}/ws") as ws:
        await subscribe(ws)
        connection = only_connection(channels)
        writer = connection._direct
        protocol = writer._protocol
        written: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        lost = protocol.connection_lost

        def connection_lost(exc: Exception | None) -> None:
            lost(exc)
            written.set_result(writer("too late"))

        protocol.connection_lost = connection_lost
        ws.transport.abort()  # a reset, as when the peer's machine goes away
        async with asyncio.timeout(5):
            assert await written is False
            await channels.server.wait_empty()  # and the connection still ends the usual way


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A key and a certificate for 127.0.0.1, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_file, cert_file = directory / "key.pem", directory / "cert.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key_file, cert_file


async def test_frames_are_written_directly_over_tls_too(tmp_path: Path) -> None:
    key_file, cert_file = self_signed(tmp_path)
    context = ssl.create_default_context(cafile=str(cert_file))
    app, channels = build()
    sizes = [10, 126, 70_000]
    async with (
        live_server(app, ssl_keyfile=str(key_file), ssl_certfile=str(cert_file)) as address,
        websockets.connect(f"wss://{address}/ws", ssl=context, max_size=None) as ws,
    ):
        await subscribe(ws)
        assert only_connection(channels).writes_directly
        server = channels.container.get(SocketServer)
        for size in sizes:
            await server.broadcast(Room, "room", "message", {"text": "é" * size})
        for size in sizes:
            assert (await receive(ws))["data"] == {"text": "é" * size}


@pytest.mark.parametrize("missing", ["close_sent", "writable", "transport"])
async def test_a_uvicorn_without_what_the_writer_reads_gets_no_direct_writer(
    missing: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    protocol, _ = await connected_protocol()  # uvicorn's own, past its handshake
    writes = DirectWrites()
    try:
        assert writes.writer_for(protocol) is not None
        monkeypatch.delattr(protocol, missing)  # as if a release had renamed it
        assert writes.writer_for(protocol) is None
        assert writes.writer_for(protocol) is None
        warnings = [r for r in caplog.records if "direct writes are off" in r.getMessage()]
        assert len(warnings) == 1  # once per router
    finally:
        monkeypatch.undo()
        protocol.connection_lost(None)
        async with asyncio.timeout(5):  # the app sees its disconnect and returns
            await asyncio.gather(*protocol.tasks)


async def test_a_protocol_of_another_implementation_gets_no_direct_writer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    protocol, _ = await connected_protocol()  # uvicorn's own, past its handshake
    try:
        monkeypatch.setattr(type(protocol), "__module__", "elsewhere")  # as if moved
        assert DirectWrites().writer_for(protocol) is None  # and nothing raised
    finally:
        monkeypatch.undo()
        protocol.connection_lost(None)
        async with asyncio.timeout(5):  # the app sees its disconnect and returns
            await asyncio.gather(*protocol.tasks)


class _GoneSocket:
    """A socket whose file is gone, as uvloop's reports it after the peer closed."""

    def setsockopt(self, *args: Any) -> None:
        raise ValueError("negative file descriptor")


class _Transport:
    def __init__(self, closing: bool) -> None:
        self.closing = closing
        self.aborted = 0

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str) -> Any:
        return _GoneSocket() if name == "socket" else None

    def abort(self) -> None:
        self.aborted += 1


def test_dropping_a_socket_whose_file_is_gone_still_aborts_it_and_never_raises() -> None:
    from fastapi_channels.edge._direct import drop

    open_one, closed_one = _Transport(closing=False), _Transport(closing=True)
    drop(open_one)
    drop(closed_one)
    assert open_one.aborted == 1  # the linger setting failed, the abort still happened
    assert closed_one.aborted == 0  # closed already: nothing to do
