"""The samples of docs/typed-events.md: typed handlers, replies, join data, outgoing filters."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field
from starlette.requests import HTTPConnection

from fastapi_channels import DROP, ChannelListener, Channels, SocketConnection, channel


@dataclass
class Player:
    id: str
    is_admin: bool = False


def current_player(connection: HTTPConnection) -> Player | None:
    """Stands for real authentication (see docs/authentication.md): `?user=ann&admin=yes`."""
    name = connection.query_params.get("user")
    return Player(name, connection.query_params.get("admin") == "yes") if name else None


class Invites:
    """Stands for the app's invitations store."""

    def __init__(self) -> None:
        self.codes = {"game.1": "let-me-in"}

    async def valid(self, code: str, channel: str) -> bool:
        return self.codes.get(channel) == code


# --8<-- [start:game]
class Move(BaseModel):
    x: int = Field(ge=0, le=2)
    y: int = Field(ge=0, le=2)


class Board(BaseModel):
    """Who played where: `{"x,y": player}`."""

    cells: dict[str, str] = {}


class JoinParams(BaseModel):
    invite: str


@channel("game.*")
class Game(ChannelListener):
    """A game of noughts and crosses on each channel: `game.1`, `game.2`..."""

    sends = {"moved": Board, "chat": dict[str, str]}  # for the AsyncAPI document

    def __init__(self, invites: Invites) -> None:
        self.invites = invites
        self.boards: dict[str, Board] = {}  # shared by all games: keyed by channel

    async def is_authorised(self, user: Player, params: JoinParams) -> bool:
        return await self.invites.valid(params.invite, self.channel_name)

    @channel.on("move")
    async def move(self, move: Move, user: Player) -> Board:
        """Play a move; the reply is the board after it."""
        board = self.boards.setdefault(self.channel_name, Board())
        board.cells[f"{move.x},{move.y}"] = user.id
        await self.broadcast(self.channel_name, "moved", board)
        return board  # the reply's data, when the packet carried an id

    @channel.on("chat")
    async def chat(self, data: str, connection: SocketConnection) -> None:
        await self.broadcast(self.channel_name, "chat", {"from": connection.id, "text": data})


# --8<-- [end:game]


# --8<-- [start:outgoing]
class Blocks:
    """Who blocked whom, kept in memory (refreshed elsewhere) for the filter to read."""

    def __init__(self) -> None:
        self.blocked: dict[str, set[str]] = {"ann": {"eve"}}

    def of(self, user_id: str) -> set[str]:
        return self.blocked.get(user_id, set())


@channel("team.*")
class Team(ChannelListener):
    def __init__(self, blocks: Blocks) -> None:
        self.blocks = blocks

    @channel.on("profile")
    async def profile(self, user: Player, data: dict[str, Any]) -> None:
        await self.broadcast(self.channel_name, "profile", {**data, "id": user.id})

    @channel.outgoing("profile")  # no names: every event
    def hide_email(self, connection: SocketConnection, event: str, data: Any) -> Any:
        viewer = connection.user
        if viewer.id == data["id"] or viewer.is_admin:
            return data  # unchanged: the shared frame is sent
        if viewer.id in self.blocks.of(data["id"]):
            return DROP  # nothing for this recipient
        return {**data, "email": None}  # re-encoded for this recipient only


# --8<-- [end:outgoing]


channels = Channels(user=current_player, listeners=[Game, Team])
app = FastAPI(title="Games", version="1.0.0")
app.include_router(channels.router)


# --8<-- [start:test]
from fastapi_channels import ReplyError
from fastapi_channels.testing import SocketTestClient


async def test_a_move_and_a_bad_one(client: SocketTestClient) -> None:
    board = await client.request("move", {"x": 1, "y": 2}, channel="game.1", timeout=1.0)
    assert board == {"cells": {"1,2": "ann"}}
    try:
        await client.request("move", {"x": "?"}, channel="game.1")
    except ReplyError as exc:
        assert exc.code == "invalid-data"
        assert [problem["loc"] for problem in exc.errors] == [["x"], ["y"]]
    else:
        raise AssertionError("the move should have been refused")


# --8<-- [end:test]


async def check() -> None:
    """Typed data, join parameters, replies, the outgoing filter and the AsyncAPI excerpt."""
    from fastapi_channels.testing import lifespan

    async with (
        lifespan(app),
        SocketTestClient(app, query_string="user=ann") as ann,
        SocketTestClient(app, query_string="user=bob") as bob,
        SocketTestClient(app, query_string="user=eve") as eve,
        SocketTestClient(app, query_string="user=root&admin=yes") as root,
    ):
        refused = await bob.subscribe("game.1")  # no invite in the request's data
        assert refused["reason"] == "invalid data"
        await bob.emit("subscribe-channel-request", {"channel": "game.1", "invite": "guess"})
        assert (await bob.receive()).data["reason"] == "not authorised"
        await ann.emit("subscribe-channel-request", {"channel": "game.1", "invite": "let-me-in"})
        assert (await ann.receive()).data["successful"]

        await test_a_move_and_a_bad_one(ann)
        assert (await ann.receive()).event == "moved"
        await ann.emit("chat", "gg", channel="game.1")
        assert (await ann.receive()).data == {"from": ann.ready.data["id"], "text": "gg"}

        for client in (ann, bob, eve, root):
            assert (await client.subscribe("team.red"))["successful"]
        await ann.emit("profile", {"email": "ann@example.com"}, channel="team.red")
        for client in (ann, root):
            assert (await client.receive()).data == {"email": "ann@example.com", "id": "ann"}
        assert (await bob.receive()).data == {"email": None, "id": "ann"}
        await eve.assert_no_message()

    page = (Path(__file__).parents[1] / "typed-events.md").read_text()
    excerpt = json.loads(page.split("``json")[-1].split("``")[0])
    document = channels.asyncapi(title="Games", version="1.0.0", host="localhost:8000")
    _assert_within(excerpt, document, "$")


def _assert_within(excerpt: Any, actual: Any, where: str) -> None:
    """`excerpt` is `actual` with parts left out; a string ending in `...` is a prefix."""
    if isinstance(excerpt, dict):
        assert isinstance(actual, dict), where
        for key, value in excerpt.items():
            assert key in actual, f"{where}.{key} is not in the document"
            _assert_within(value, actual[key], f"{where}.{key}")
    elif isinstance(excerpt, list):
        assert isinstance(actual, list) and len(excerpt) == len(actual), where
        for index, (part, whole) in enumerate(zip(excerpt, actual, strict=True)):
            _assert_within(part, whole, f"{where}[{index}]")
    elif isinstance(excerpt, str) and excerpt.endswith("..."):
        assert isinstance(actual, str) and actual.startswith(excerpt[:-3]), where
    else:
        assert excerpt == actual, f"{where}: {excerpt!r} != {actual!r}"
