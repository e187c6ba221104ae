"""The AsyncAPI 3.0 document: generated from the registry, served, and valid against the
official AsyncAPI 3.0.0 JSON Schema (vendored in tests/asyncapi, see its README)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
import jsonschema
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, Field

from fastapi_channels import (
    ChannelListener,
    Channels,
    ConfigurationError,
    History,
    SocketConnection,
    SocketListener,
    SocketPacket,
    channel,
    listener,
)
from tests.conftest import Start

SCHEMA = Path(__file__).parent / "asyncapi" / "asyncapi-3.0.0.schema.json"


class ChatMessage(BaseModel):
    """A message in a chat."""

    text: str
    pair: tuple[int, str] = (0, "")


class Posted(BaseModel):
    id: int


class Join(BaseModel):
    invite: str


class Circle(BaseModel):
    kind: Literal["circle"]
    radius: float


class Square(BaseModel):
    kind: Literal["square"]
    side: float


class Drawing(BaseModel):
    shape: Annotated[Circle | Square, Field(discriminator="kind")]


@channel("user:chat.*")
class UserChat(ChannelListener):
    """A user's private chat; only that user may subscribe."""

    sends = {"message": ChatMessage, "deleted": int}

    async def is_authorised(self, user: Any, params: Join) -> bool:
        return True

    @channel.on("message")
    async def message(self, message: ChatMessage) -> Posted:
        """Post a message.

        It is broadcast to the chat and its id is the reply.
        """
        return Posted(id=1)

    @channel.on("draw")
    async def draw(self, drawing: Drawing) -> None: ...

    @channel.on("legacy:event")
    async def legacy(self, connection: SocketConnection, user: Any, packet: SocketPacket) -> None:
        pass


@channel("lobby")
class Lobby(ChannelListener):
    pass


@listener("typing")
class Typing(SocketListener):
    sends = {"typing-ack": list[int]}

    async def handle(self, data: list[int]) -> int:
        return sum(data)


LISTENERS = [UserChat, Lobby, Typing]


@cache
def validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


async def fetch(app: FastAPI, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        return await http.get(path)


async def test_the_served_document_is_valid_asyncapi_3(start: Start) -> None:
    app = FastAPI(title="Chat", version="2.1.0", description="A chat.")
    harness = await start(app=app, listeners=LISTENERS)
    response = await fetch(harness.app, "/ws/asyncapi.json")
    assert response.status_code == 200
    document = response.json()
    validator().validate(document)
    assert document["asyncapi"] == "3.0.0"
    assert document["info"] == {"title": "Chat", "version": "2.1.0", "description": "A chat."}
    assert "servers" not in document  # the request's Host is never copied into it
    for ref in refs(document):
        resolve(document, ref)  # every reference points into the document


async def test_the_served_servers_come_from_asyncapi_url_never_from_the_host_header(
    start: Start,
) -> None:
    harness = await start(listeners=LISTENERS, asyncapi_url="wss://chat.example.com")
    transport = httpx.ASGITransport(app=harness.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        response = await http.get("/ws/asyncapi.json", headers={"Host": "evil.example"})
    document = response.json()
    validator().validate(document)
    assert document["servers"] == {
        "main": {"host": "chat.example.com", "protocol": "wss", "pathname": "/ws"}
    }
    assert "evil" not in response.text


@pytest.mark.parametrize(
    "url",
    ["https://chat.example.com", "wss://", "chat.example.com", "wss://u:p@h/ws", "wss://h/?q"],
)
def test_an_asyncapi_url_that_is_not_a_websocket_url_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="asyncapi_url"):
        Channels(asyncapi_url=url)


def test_the_schema_really_rejects_invalid_documents() -> None:
    document = Channels(listeners=LISTENERS).asyncapi()
    validator().validate(document)
    broken = {**document, "operations": {"x": {"action": "publish", "channel": {}}}}
    with pytest.raises(jsonschema.ValidationError):
        validator().validate(broken)
    with pytest.raises(jsonschema.ValidationError):
        validator().validate({k: v for k, v in document.items() if k != "info"})


def test_patterns_become_parameterised_addresses() -> None:
    channels = Channels(listeners=LISTENERS).asyncapi()["channels"]
    chat = channels["UserChat"]
    assert chat["address"] == "user:chat.{wildcard}"
    assert list(chat["parameters"]) == ["wildcard"]
    assert chat["description"] == "A user's private chat; only that user may subscribe."
    assert channels["Lobby"]["address"] == "lobby"
    assert "parameters" not in channels["Lobby"]
    assert "description" not in channels["Lobby"]  # never a base class's docstring
    assert channels["events"]["address"] is None


def test_handlers_become_receive_operations_with_typed_payloads_and_replies() -> None:
    document = Channels(listeners=LISTENERS).asyncapi()
    operation = document["operations"]["UserChat.message.receive"]
    assert operation["action"] == "receive"
    assert operation["summary"] == "Post a message."
    assert operation["description"].endswith("its id is the reply.")
    (message_ref,) = operation["messages"]
    message = resolve(document, message_ref["$ref"])
    assert message["name"] == "message"
    payload = message["payload"]
    assert payload["required"] == ["event", "channel", "data"]
    assert payload["properties"]["event"] == {"const": "message"}
    data = resolve(document, payload["properties"]["data"]["$ref"])
    assert data["required"] == ["text"]
    assert data["properties"]["pair"]["items"] == [{"type": "integer"}, {"type": "string"}]
    success, failure = (resolve(document, r["$ref"]) for r in operation["reply"]["messages"])
    assert success["payload"]["properties"]["data"] == {"$ref": "#/components/schemas/Posted"}
    assert failure["payload"]["required"] == ["event", "id", "error"]
    legacy = document["operations"]["UserChat.legacy_event.receive"]
    legacy_message = resolve(document, legacy["messages"][0]["$ref"])
    assert legacy_message["name"] == "legacy:event"
    assert legacy_message["payload"]["properties"]["data"] == {}
    draw = resolve(
        document, document["operations"]["UserChat.draw.receive"]["reply"]["messages"][0]["$ref"]
    )
    assert draw["payload"]["properties"]["data"] == {"type": "null"}


def test_discriminated_unions_use_asyncapi_discriminators() -> None:
    schemas = Channels(listeners=LISTENERS).asyncapi()["components"]["schemas"]
    assert schemas["Drawing"]["properties"]["shape"]["discriminator"] == "kind"


def test_sends_become_send_operations() -> None:
    document = Channels(listeners=LISTENERS).asyncapi()
    operations = document["operations"]
    assert operations["UserChat.message.send"]["action"] == "send"
    sent = resolve(document, operations["UserChat.deleted.send"]["messages"][0]["$ref"])
    assert sent["payload"]["properties"]["data"] == {"type": "integer"}
    assert "id" not in sent["payload"]["properties"]
    ack = resolve(document, operations["events.typing-ack.send"]["messages"][0]["$ref"])
    assert "channel" not in ack["payload"]["properties"]
    assert operations["events.typing.receive"]["action"] == "receive"


def test_typed_subscribe_data_is_described() -> None:
    document = Channels(listeners=LISTENERS).asyncapi()
    operation = document["operations"]["UserChat.subscribe"]
    request = resolve(document, operation["messages"][0]["$ref"])
    data = request["payload"]["properties"]["data"]
    assert data["allOf"][1] == {"$ref": "#/components/schemas/Join"}
    replies = [r["$ref"] for r in operation["reply"]["messages"]]
    assert "#/channels/replies/messages/subscribe-channel-response" in replies


async def test_the_route_follows_the_path_and_can_be_turned_off(start: Start) -> None:
    harness = await start(listeners=LISTENERS, path="/sockets/", asyncapi_url="ws://h:1")
    response = await fetch(harness.app, "/sockets/asyncapi.json")
    assert response.json()["servers"]["main"] == {
        "host": "h:1",
        "protocol": "ws",
        "pathname": "/sockets/",
    }
    harness = await start(listeners=LISTENERS, asyncapi=False)
    assert (await fetch(harness.app, "/ws/asyncapi.json")).status_code == 404


def test_the_document_is_built_once_and_has_no_servers_without_a_host() -> None:
    channels = Channels(listeners=LISTENERS)
    first = channels.asyncapi(title="t", version="1")
    assert "servers" not in first
    assert channels.asyncapi(title="t", version="1")["channels"] is first["channels"]
    assert channels.asyncapi(host="h:1", protocol="wss")["servers"]["main"]["protocol"] == "wss"


@channel("room:*")
class Room(ChannelListener):
    presence = True
    history = History(size=10, events={"message"})
    sends = {"message": ChatMessage, "typing": str}


def test_presence_and_history_are_described() -> None:
    document = Channels(listeners=[Room, Lobby]).asyncapi()
    validator().validate(document)
    for ref in refs(document):
        resolve(document, ref)
    room = document["channels"]["Room"]["messages"]
    kept = room["message.sent"]["payload"]["properties"]
    assert kept["position"]["required"] == ["offset", "epoch"]
    assert "position" not in room["typing.sent"]["payload"]["properties"]  # not kept
    events = document["channels"]["events"]["messages"]
    for event in ("channels:presence", "channels:join", "channels:leave"):
        assert any(message["name"] == event for message in events.values()), event
    replies = document["channels"]["replies"]["messages"]
    response = replies["subscribe-channel-response"]["payload"]["properties"]["data"]
    assert {"position", "recovered"} <= set(response["properties"])
    # Without presence listeners, no presence events.
    plain = Channels(listeners=[Lobby]).asyncapi()["channels"]["events"]["messages"]
    assert not any(message["name"] == "channels:join" for message in plain.values())
