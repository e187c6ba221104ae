"""Counters, the Prometheus collector, the guarded info route, and logs without tokens."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from fastapi import Header, HTTPException
from prometheus_client.parser import text_string_to_metric_families

from fastapi_channels import ChannelListener, Limits, channel
from fastapi_channels.prometheus import metrics_app
from tests.conftest import Start


@channel("room.*")
class Room(ChannelListener):
    pass


def admin_only(x_admin: str | None = Header(default=None)) -> None:
    if x_admin != "yes":
        raise HTTPException(403)


@pytest.fixture
async def harness(start: Start) -> Any:
    return await start(listeners=[Room], info_guard=admin_only, limits=Limits(queue_size=5))


async def http_get(
    harness: Any, path: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    transport = httpx.ASGITransport(app=harness.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        return await http.get(path, headers=headers)


async def test_info_route_is_guarded_and_counts_per_channel(harness: Any) -> None:
    async with harness.client("a") as a, harness.client("b") as b:
        await a.subscribe("room.1")
        await b.subscribe("room.1")
        await b.subscribe("room.2")
        assert (await http_get(harness, "/ws/info")).status_code == 403
        response = await http_get(harness, "/ws/info", {"x-admin": "yes"})
        assert response.status_code == 200
        info = response.json()
        assert info["connections"] == 2
        assert info["users"] == 2
        assert info["subscriptions"] == 3
        assert info["busiest_channels"] == {"room.1": 2, "room.2": 1}
        assert info["broker"]["type"] == type(harness.server.broker).__name__
        assert info["broker"]["healthy"] is True
        assert info["broker"]["state"] == "connected"


async def test_no_guard_no_route(start: Start) -> None:
    harness = await start(listeners=[Room])
    assert (await http_get(harness, "/ws/info")).status_code == 404


async def test_prometheus_metrics(harness: Any) -> None:
    async with harness.client("a") as a:
        await a.subscribe("room.1")
        await a.send_text("not json")
        await a.receive()
        await harness.server.broadcast(Room, "room.1", "x", {"n": 1})
        await a.receive()
        collected: dict[str, Any] = {}
        app = metrics_app(harness.channels)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            text = (await http.get("/")).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                collected[sample.name + repr(sorted(sample.labels.items()))] = sample.value
        assert collected["fastapi_channels_connections[]"] == 1
        assert collected["fastapi_channels_subscriptions[]"] == 1
        assert collected["fastapi_channels_errors_total[('code', 'invalid-frame')]"] == 1
        assert collected["fastapi_channels_messages_in_total[]"] == 2
        # ready, the subscribe response, the error, the broadcast
        assert collected["fastapi_channels_messages_out_total[]"] == 4
        assert collected["fastapi_channels_broker_up[]"] == 1
        for name, value in harness.server.broker.counters().items():  # Redis: published etc.
            assert collected[f"fastapi_channels_broker_{name}_total[]"] == value


async def test_logs_name_the_connection_and_never_the_token(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    harness = await start(listeners=[Room], user=lambda: None)
    caplog.set_level(logging.DEBUG, logger="fastapi_channels")
    token = "eyJhbGciOiJIUzI1NiJ9.secret-token-value.sig"
    client = harness.client(subprotocols=[token])
    await client.expect_ready()
    (connection,) = harness.server.connections
    await client.send_text("{bad")
    await client.receive()
    await client.close()
    assert connection.id in caplog.text
    assert token not in caplog.text
