"""Issue 18, item 7: what a client writes reaches the log escaped, never as a forged line."""

from __future__ import annotations

import json
import logging
from urllib.parse import quote

import pytest
import websockets

from tests.security.conftest import Serve

FORGED = "x\r\n2026-01-01 INFO forged: admin logged in\x1b[31m\u202e"


async def test_a_forged_line_in_the_user_name_is_escaped(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    url_user = quote(FORGED)
    async with serve(limits={"max_connections_per_user": 1}) as target:
        with caplog.at_level(logging.INFO, logger="fastapi_channels.router"):
            async with websockets.connect(f"{target.url}?user={url_user}") as first:
                await first.recv()
                async with websockets.connect(f"{target.url}?user={url_user}") as second:
                    refused = json.loads(await second.recv())
    assert refused["data"]["reason"] == "too many connections"
    [message] = [r.getMessage() for r in caplog.records if "too many connections" in r.getMessage()]
    assert not any(c in message for c in "\r\n\x1b\u202e")
    assert "x\\r\\n2026-01-01 INFO forged: admin logged in\\x1b[31m\\u202e" in message
