"""``fastapi-channels connect`` run as a subprocess against a real server."""

from __future__ import annotations

import asyncio
import importlib
import io
import json
import os
import re
import shlex
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import HTTPConnection

from fastapi_channels import (
    ChannelListener,
    Channels,
    Inject,
    Reject,
    SocketServer,
    channel,
)
from fastapi_channels.client.cli import use_colour
from tests.client_app import create_app
from tests.live import live_server
from tests.test_docs_examples import blocks

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
async def address() -> AsyncIterator[str]:
    async with live_server(create_app()) as address:
        yield address


class Command:
    """A running ``python -m fastapi_channels connect ...``; every wait is bounded."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []

    async def line(self, timeout: float = 10) -> str:
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            raw = await self.process.stdout.readline()
        text = raw.decode().rstrip("\n")
        self.lines.append(text)
        return text

    async def line_containing(self, text: str, timeout: float = 10) -> str:
        async with asyncio.timeout(timeout):
            while text not in (line := await self.line()):
                assert line, f"output ended before {text!r}: {self.lines}"
        return line

    async def finish(self, timeout: float = 10) -> tuple[int, str, str]:
        async with asyncio.timeout(timeout):
            out, err = await self.process.communicate()
        self.lines += out.decode().splitlines()
        assert self.process.returncode is not None
        return self.process.returncode, "\n".join(self.lines), err.decode()


async def command(*args: str, env: dict[str, str] | None = None) -> Command:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    environment.pop("NO_COLOR", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fastapi_channels",
        "connect",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        env=environment,
    )
    return Command(process)


async def outcome(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run the command to its end: ``(status, stdout, stderr)``."""
    return await (await command(*args, env=env)).finish()


async def test_subscribes_and_prints_events_without_colour_on_a_pipe(address: str) -> None:
    run = await command(
        f"ws://{address}/ws", "--token", "user-a", "-s", "public:cli", "--count", "1"
    )
    await run.line_containing("* subscribed to public:cli")
    async with httpx.AsyncClient(base_url=f"http://{address}") as http:
        body = {"channel": "public:cli", "event": "news", "data": {"n": 1}}
        (await http.post("/_test/publish", json=body)).raise_for_status()
    status, out, err = await run.finish()
    assert status == 0, err
    event = out.splitlines()[-1]
    assert event.endswith('public:cli  news  {"n": 1}')
    assert "\x1b[" not in out


async def test_emit_and_print_the_answer_as_json(address: str) -> None:
    status, out, err = await outcome(
        f"ws://{address}/ws",
        "--token",
        "user-b",
        "--emit",
        "echo",
        "--data",
        '"x"',
        "--count",
        "1",
        "--json",
    )
    assert status == 0, err
    assert json.loads(out) == {"event": "echo", "data": "x"}
    assert "* connected to" in err


async def test_request_shows_the_reply_and_fails_on_an_error(address: str) -> None:
    status, out, err = await outcome(
        f"ws://{address}/replies", "--request", "time", "--data", "5", "--json"
    )
    assert status == 0, err
    assert json.loads(out) == {"event": "channels:reply", "data": {"event": "time", "data": 5}}
    status, _, err = await outcome(f"ws://{address}/replies", "--request", "fail")
    assert status == 1
    assert "rejected" in err


async def test_a_refusal_and_a_denied_subscription_exit_with_1(address: str) -> None:
    status, _, err = await outcome(f"ws://{address}/ws", "--token", "bad")
    assert (status, err.strip()) == (1, "error: connection refused: invalid token")
    status, _, err = await outcome(
        f"ws://{address}/ws", "--token", "user-c", "-s", "private:d", "--duration", "0.2"
    )
    assert status == 1
    assert "subscription to private:d refused: not authorised" in err


async def test_the_token_can_come_from_the_environment(address: str) -> None:
    status, out, err = await outcome(
        f"ws://{address}/ws",
        "--emit",
        "whoami",
        "--count",
        "1",
        "--json",
        env={"FASTAPI_CHANNELS_TOKEN": "user-env"},
    )
    assert status == 0, err
    assert json.loads(out)["data"]["user"] == "env"


async def test_colour_when_asked(address: str) -> None:
    status, out, _ = await outcome(
        f"ws://{address}/ws", "--emit", "echo", "--count", "1", "--color", "always"
    )
    assert status == 0
    assert "\x1b[1;32mecho\x1b[0m" in out


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_follows_the_terminal_and_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert use_colour("auto", _Terminal())
    assert not use_colour("auto", io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_colour("auto", _Terminal())
    assert use_colour("always", io.StringIO())
    assert not use_colour("never", _Terminal())


async def test_the_first_tutorial_shows_what_the_command_prints() -> None:
    """docs/first-channel.md: its two commands, run as written, print the output it shows."""
    page = ROOT / "docs" / "first-channel.md"
    commands = [
        shlex.split(" ".join(block.body).replace("\\", " "))
        for block in blocks(page)
        if block.language == "bash" and block.body[0].startswith("fastapi-channels connect")
    ]
    (shown,) = [
        block for block in blocks(page) if block.language == "text" and "*" in block.body[0]
    ]
    watch, say = commands
    chat = importlib.import_module("docs.examples.first_channel.chat")
    async with live_server(chat.app) as address:

        def here(args: list[str]) -> list[str]:
            assert args[:3] == ["fastapi-channels", "connect", "ws://127.0.0.1:8000/ws"]
            return [f"ws://{address}/ws", *args[3:]]

        watcher = await command(*here(watch), "--count", "1")
        await watcher.line_containing("* subscribed to room.lobby")
        status, _, err = await outcome(*here(say))
        assert status == 0, err
        status, out, err = await watcher.finish()
    assert status == 0, err

    def normal(text: str) -> str:
        text = re.sub(r"\b\d\d:\d\d:\d\d\.\d{3}\b", "HH:MM:SS.mmm", text)
        text = re.sub(r" as [0-9a-f]{32}$", " as ID", text)
        return text.replace(address, "127.0.0.1:8000")

    assert [normal(line) for line in out.splitlines()] == [normal(line) for line in shown.body]


async def close_all(address: str, code: int, reason: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://{address}") as http:
        body = {"code": code, "reason": reason}
        assert (await http.post("/_test/close", json=body)).json() == {"closed": 1}


async def test_a_lost_connection_says_why_then_comes_back(address: str) -> None:
    run = await command(
        f"ws://{address}/ws", "--token", "user-a", "-s", "public:cli", "--count", "2"
    )
    await run.line_containing("* subscribed to public:cli")
    await close_all(address, 1012, "restarting")
    assert (await run.line()).endswith('disconnect  {"reason": "restarting"}')  # the packet
    assert await run.line() == "* connection lost: 1012 service restart (restarting)"
    assert (await run.line()).endswith("(attempt 1)")
    await run.line_containing("* reconnected as")
    await run.line_containing("* subscribed again to public:cli")
    async with httpx.AsyncClient(base_url=f"http://{address}") as http:
        body = {"channel": "public:cli", "event": "news", "data": {"n": 2}}
        (await http.post("/_test/publish", json=body)).raise_for_status()
    status, out, err = await run.finish()
    assert status == 0, err
    assert out.splitlines()[-1].endswith('public:cli  news  {"n": 2}')


async def test_a_close_that_is_not_retried_says_why_and_exits_with_1(address: str) -> None:
    run = await command(f"ws://{address}/ws", "--token", "user-a", "-s", "public:cli")
    await run.line_containing("* subscribed to public:cli")
    await close_all(address, 1008, "rate limited")
    status, out, err = await run.finish()
    assert status == 1
    assert "reconnecting" not in out
    assert err.strip() == (
        "error: connection closed by the server: 1008 policy violation (rate limited); "
        "not reconnecting"
    )


@channel("room:*")
class Room(ChannelListener):
    pass


def revocable_app() -> FastAPI:
    """Tokens are anything in ``?token=``, until ``POST /revoke/{token}``, which also closes
    every connection as a restart would (1012)."""
    revoked: set[str] = set()

    async def user(connection: HTTPConnection) -> str:
        token = connection.query_params.get("token", "")
        if not token or token in revoked:
            raise Reject("invalid token")
        return token

    channels = Channels(user=user, listeners=[Room])
    app = FastAPI()
    app.include_router(channels.router)

    @app.post("/revoke/{token}")
    async def revoke(token: str, server: SocketServer = Inject(SocketServer)) -> None:
        revoked.add(token)
        for connection in server.connections:
            await connection.disconnect("restarting", code=1012)

    return app


async def test_a_refused_token_is_not_retried() -> None:
    async with live_server(revocable_app()) as address:
        run = await command(
            f"ws://{address}/ws", "--token", "t1", "--token-transport", "query", "-s", "room:1"
        )
        await run.line_containing("* subscribed to room:1")
        async with httpx.AsyncClient(base_url=f"http://{address}") as http:
            (await http.post("/revoke/t1")).raise_for_status()
        status, out, err = await run.finish()
    assert status == 1
    assert out.splitlines()[-2:-1] == ["* connection lost: 1012 service restart (restarting)"]
    assert out.splitlines()[-1].endswith("(attempt 1)")  # and no other attempt
    assert err.strip() == (
        "error: reconnecting was refused: invalid token; not retrying, as the server would "
        "refuse it again (a new token is needed)"
    )
