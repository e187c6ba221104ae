"""The bundled JavaScript client (``static/channels.js``) and the HTTP route that serves it.

``Channels`` serves it at ``<path>/client.js`` (``/ws/client.js`` by default), so a page of the
same app can ``import { SocketClient } from "/ws/client.js"``. The response carries an ``ETag``
and ``Cache-Control: no-cache``: browsers keep a copy but revalidate it (a cheap ``304``), so an
upgraded package is picked up at once.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

__all__ = ["CLIENT_SCRIPT", "client_script", "serve_client_script"]

CLIENT_SCRIPT = "client.js"
"""The route's last path segment, below the channels path."""


@cache
def client_script() -> tuple[bytes, str]:
    """The module's bytes and their ``ETag``, read once from the installed package."""
    body = resources.files("fastapi_channels").joinpath("static", "channels.js").read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


async def serve_client_script(request: Request) -> Response:
    """Answer ``GET``/``HEAD``: the module, or ``304`` when the client's copy is current."""
    body, etag = client_script()
    headers = {"ETag": etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    offered = request.headers.get("if-none-match", "")
    if any(tag.strip().removeprefix("W/") in (etag, "*") for tag in offered.split(",")):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="text/javascript", headers=headers)
