"""Hostile input: property-based fuzzing of the decoder and the pattern matcher, and a bounded
live fuzz run against a real server while a normal client keeps working."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest
import websockets
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st

from fastapi_channels import (
    ChannelListener,
    Channels,
    ConfigurationError,
    Limits,
    ProtocolError,
    SocketConnection,
    SocketPacket,
    channel,
)
from fastapi_channels.wire.errors import ErrorCode
from fastapi_channels.wire.patterns import ChannelPattern
from fastapi_channels.wire.protocol import decode_packet, encode_error
from tests.live import live_server

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
packets = st.fixed_dictionaries(
    {},
    optional={
        "event": json_values | st.text(max_size=250),
        "channel": json_values | st.text(max_size=250),
        "data": json_values,
        "id": json_values,
    },
)


@settings(max_examples=400)
@given(st.text(max_size=300))
def test_decoder_only_ever_raises_protocol_errors_on_text(text: str) -> None:
    try:
        packet = decode_packet(text)
    except ProtocolError as exc:
        assert exc.code in set(ErrorCode)
        return
    assert isinstance(packet.event, str) and packet.event


@settings(max_examples=400)
@given(packets)
def test_decoder_on_json_objects(raw: dict[str, Any]) -> None:
    try:
        packet = decode_packet(json.dumps(raw))
    except ProtocolError as exc:
        encode_error(exc.code, exc.message)
        return
    assert packet.event == raw["event"]
    assert packet.channel == raw.get("channel")
    assert "*" not in (packet.channel or "")
    encode_error(ErrorCode.UNKNOWN_EVENT, "x", packet)  # an answer can always be encoded


@given(st.text(max_size=30), st.text(max_size=40))
def test_pattern_matching_is_consistent(text: str, name: str) -> None:
    try:
        pattern = ChannelPattern.parse(text)
    except ConfigurationError:
        return
    wildcard = pattern.match(name)
    if wildcard is None:
        return
    if pattern.is_exact:
        assert wildcard == "" and name == pattern.text
    else:
        assert wildcard and ":" not in wildcard
        assert pattern.prefix + wildcard + pattern.suffix == name


@pytest.mark.parametrize("bad", ['{"event": "x", "data": NaN}', '{"event": "x", "data": Infinity}'])
def test_non_json_numbers_are_refused(bad: str) -> None:
    with pytest.raises(ProtocolError):
        decode_packet(bad)


@channel("room.*")
class Room(ChannelListener):
    @channel.on("say")
    async def say(self, connection: SocketConnection, user: Any, packet: SocketPacket) -> None:
        await self.broadcast(self.channel_name, "said", packet.data)


def random_frame(rng: random.Random) -> str | bytes:
    choice = rng.randrange(9)
    if choice == 0:
        return rng.randbytes(rng.randrange(1, 64))
    if choice == 1:
        return "".join(chr(rng.randrange(1, 0xD7FF)) for _ in range(rng.randrange(1, 64)))
    if choice == 2:
        return json.dumps([rng.random()])
    events = [
        "subscribe-channel-request",
        "unsubscribe-channel-request",
        "say",
        "ready",
        "disconnect",
        "__init__",
        "_server",
        "is_authorised",
        "x" * 300,
        "\u0000",
        "",
    ]
    channels = ["room.1", "room.*", "room.", "room.1:2", "other", "a b", "\t", 5, None, "é" * 50]
    packet: dict[str, Any] = {"event": rng.choice([*events, rng.random(), None, {}])}
    if rng.random() < 0.7:
        packet["channel"] = rng.choice(channels)
    if rng.random() < 0.7:
        packet["data"] = rng.choice(
            [{"channel": rng.choice(channels)}, "x" * rng.randrange(0, 2000), [1, {}], None]
        )
    return json.dumps(packet)


async def test_live_fuzz_does_not_disturb_a_normal_client() -> None:
    channels = Channels(listeners=[Room], limits=Limits(max_message_size=1500, rate=None))
    app = FastAPI()
    app.include_router(channels.router)
    rng = random.Random(20261125)
    async with live_server(app) as address:
        url = f"ws://{address}/ws"
        async with websockets.connect(url) as normal:
            assert json.loads(await normal.recv())["event"] == "ready"
            await normal.send(
                json.dumps(
                    {"event": "subscribe-channel-request", "data": {"channel": "room.normal"}}
                )
            )
            assert json.loads(await normal.recv())["data"]["successful"] is True
            sent = 0
            for _round in range(6):  # the fuzzer may get itself closed; it reconnects
                async with websockets.connect(url) as fuzzer:
                    await fuzzer.recv()
                    for _ in range(60):
                        try:
                            await fuzzer.send(random_frame(rng))
                        except websockets.ConnectionClosed:
                            break
                        await normal.send(
                            json.dumps({"event": "say", "channel": "room.normal", "data": sent})
                        )
                        sent += 1
            received = []
            async with asyncio.timeout(10):
                while len(received) < sent:
                    packet = json.loads(await normal.recv())
                    assert packet["event"] == "said", packet
                    received.append(packet["data"])
            assert received == list(range(sent))
            assert len(channels.server.subscribers("room.normal")) == 1
        async with asyncio.timeout(5):
            await channels.server.wait_empty()
        assert channels.server.channel_counts() == {}
