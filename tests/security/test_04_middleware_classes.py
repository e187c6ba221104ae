"""Issue 18, item 4: middleware classes are built by the container, once, at start-up.

A middleware that guards a channel with an application service gets the service the app bound
(not a default-built one an attacker's connection would slip past), for every connection.
"""

from __future__ import annotations

import json

import injector
import websockets

from fastapi_channels import Middleware, MiddlewareContext, Reject
from fastapi_channels.app.middleware import CallNext
from tests.security.conftest import Serve


class Bans:
    def __init__(self, names: set[str]) -> None:
        self.names = names


class BanMiddleware(Middleware):
    built = 0

    def __init__(self, bans: Bans) -> None:
        type(self).built += 1
        self.bans = bans

    async def subscribe(self, context: MiddlewareContext, call_next: CallNext) -> None:
        if context.user and context.user["id"] in self.bans.names:
            raise Reject("banned")
        await call_next()


SUBSCRIBE = json.dumps({"event": "subscribe-channel-request", "data": {"channel": "room"}})


async def test_the_bound_service_guards_every_connection(serve: Serve) -> None:
    container = injector.Injector()
    container.binder.bind(Bans, to=Bans({"mallory"}))
    BanMiddleware.built = 0
    options = {"container": container, "middleware": [BanMiddleware]}
    async with serve(channels=options) as target:
        for name, allowed in [("mallory", False), ("ann", True)] * 3:
            async with websockets.connect(f"{target.url}?user={name}") as ws:
                await ws.recv()  # ready
                await ws.send(SUBSCRIBE)
                answer = json.loads(await ws.recv())["data"]
                assert answer["successful"] is allowed
                assert allowed or answer["reason"] == "banned"
    assert BanMiddleware.built == 1
