"""The HTTP API on two uvicorn processes over one Redis: whichever process gets the request.

A publish to one process reaches the other's subscribers; presence and history read on one
show what the other did; the counts gathered by either process hold both; a process killed
without a word is reported missing by the counts of the other, once their timeout passes.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets

from tests.api_app import API_KEY
from tests.processes import TIMEOUT, Process, start_process

APP = "tests.api_app:app"
HEADERS = {"X-API-Key": API_KEY}


@pytest.fixture
async def pair(redis_url: str) -> AsyncIterator[tuple[Process, Process]]:
    env = {"FASTAPI_CHANNELS_BROKER_URL": f"{redis_url}?prefix=test-{uuid.uuid4().hex[:12]}"}
    a = await start_process(APP, env)
    b = await start_process(APP, env)  # after a: a hears b's announcement
    try:
        yield a, b
    finally:
        for process in (a, b):
            process.stop()


async def call(process: Process, method: str, path: str, **options: Any) -> Any:
    async with httpx.AsyncClient(base_url=process.http, timeout=TIMEOUT) as http:
        response = await http.request(method, f"/ws/api{path}", headers=HEADERS, **options)
    assert response.status_code == 200, response.text
    return response.json()


async def receive(ws: websockets.ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(TIMEOUT):
        packet: dict[str, Any] = json.loads(await ws.recv())
    return packet


async def test_any_process_answers_for_all(pair: tuple[Process, Process]) -> None:
    a, b = pair
    url = f"ws://127.0.0.1:{a.port}/ws?user=ann"
    async with websockets.connect(url, open_timeout=TIMEOUT) as ws:
        assert (await receive(ws))["event"] == "ready"
        request = {"event": "subscribe-channel-request", "data": {"channel": "lobby:1"}}
        await ws.send(json.dumps(request))
        assert (await receive(ws))["data"]["successful"]
        assert (await receive(ws))["event"] == "channels:presence"
        body = {"channel": "lobby:1", "event": "said", "data": "hi", "key": "once"}
        first = await call(b, "POST", "/publish", json=body)
        again = await call(a, "POST", "/publish", json=body)  # the same key on the other one
        assert first == again
        packet = await receive(ws)
        assert (packet["event"], packet["data"]) == ("said", "hi")
        presence = await call(b, "GET", "/presence", params={"channel": "lobby:1"})
        assert presence["members"] == [{"id": "ann"}]
        history = await call(b, "GET", "/history", params={"channel": "lobby:1"})
        assert [m["data"] for m in history["messages"]] == ["hi"]
        for asked in (a, b):
            counts = await call(asked, "GET", "/counts", params={"timeout": 5})
            assert counts["missing"] == []
            assert counts["connections"] == 1
            assert counts["subscribers"] == {"lobby:1": 1}
            by_pid = {p["pid"]: p["connections"] for p in counts["processes"]}
            assert by_pid == {a.pid: 1, b.pid: 0}


async def test_a_process_that_does_not_answer_is_missing(pair: tuple[Process, Process]) -> None:
    a, b = pair
    before = await call(b, "GET", "/counts", params={"timeout": 5})
    assert {p["pid"] for p in before["processes"]} == {a.pid, b.pid}
    gone = next(p["process"] for p in before["processes"] if p["pid"] == a.pid)
    a.kill()
    after = await call(b, "GET", "/counts", params={"timeout": 0.5})
    assert after["missing"] == [gone]
    assert [p["pid"] for p in after["processes"]] == [b.pid]
