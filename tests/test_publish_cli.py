"""``fastapi-channels publish`` against a real server: exit codes and messages for each outcome."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator

import pytest

from tests.api_app import API_KEY, create_app
from tests.live import live_server
from tests.redis_support import free_port


@pytest.fixture
async def base() -> AsyncIterator[str]:
    async with live_server(create_app()) as address:
        yield f"http://{address}/ws/api"


async def publish(*args: str, api_key: str | None = API_KEY) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FASTAPI_CHANNELS_API_KEY"}
    if api_key is not None:
        env["FASTAPI_CHANNELS_API_KEY"] = api_key
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fastapi_channels.cli",
        "publish",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(20):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_published(base: str) -> None:
    status, out, _ = await publish(base, "-c", "lobby:1", "-e", "m", "-d", '{"a": 1}', "--key", "k")
    assert status == 0
    assert json.loads(out)["position"]["offset"] == 1
    status, again, _ = await publish(base, "-c", "lobby:1", "-e", "m", "--key", "k")
    assert (status, json.loads(again)) == (0, json.loads(out))


async def test_the_api_key_from_a_flag_or_refused(base: str) -> None:
    status, _, _ = await publish(
        base, "-c", "room:1", "-e", "m", "--api-key", API_KEY, api_key=None
    )
    assert status == 0
    status, _, err = await publish(base, "-c", "room:1", "-e", "m", api_key="wrong")
    assert status == 3
    assert "401" in err and "API key" in err
    status, _, err = await publish(base, "-c", "room:1", "-e", "m", api_key=None)
    assert status == 3


async def test_refused_input_names_the_field(base: str) -> None:
    status, _, err = await publish(base, "-c", "room 1", "-e", "m")
    assert status == 2
    assert "422: channel:" in err
    status, _, err = await publish(base, "-c", "room:1", "-e", "m", "-d", "{not json")
    assert status == 2
    assert "--data is not JSON" in err


async def test_a_channel_nobody_serves(base: str) -> None:
    status, _, err = await publish(base, "-c", "nowhere:1", "-e", "m")
    assert status == 4
    assert "nothing was published" in err


async def test_a_server_that_cannot_be_reached() -> None:
    url = f"http://127.0.0.1:{free_port()}/ws/api"
    status, _, err = await publish(url, "-c", "room:1", "-e", "m", "--timeout", "5")
    assert status == 1
    assert "cannot reach" in err
