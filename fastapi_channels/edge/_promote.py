"""Serving the websocket route from the app's own route table, found once at start-up.

FastAPI (0.165) keeps an included router as one entry of the app's routes and resolves it
again for every request: it sums the included routers' versions, matches the inclusion, then
matches again inside it to pick the route, before the route's own code runs. For a websocket
route that runs once per connection, that is about a twentieth of what a connection costs
the server until its first subscription is answered.

`promote` does that resolution once, when the app starts: it asks the inclusion for the route
it built for our endpoint (the endpoint's path under the inclusion's prefix; a plain
websocket route, so the inclusion adds no dependency to it) and puts that route in the app's
table just before the inclusion, where a connection finds it first. Routes before it are
matched as before, so it only does this when none of them would take the endpoint's path;
and it does nothing when anything else is not as it expects (the router included elsewhere
than in the app itself, a body limit on the inclusion, a FastAPI without these structures):
the inclusion then serves the endpoint as it always did.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.routing import BaseRoute, Match, WebSocketRoute

__all__ = ["promote"]

logger = logging.getLogger("fastapi_channels.router")


def promote(app: FastAPI, router: Any, route: WebSocketRoute) -> Callable[[], None] | None:
    """Put ``route`` (of ``router``, included in ``app``) in ``app``'s own route table.

    Returns the function that takes it out again (call it when the app stops), or None when
    it was left where it is. Never raises.
    """
    try:
        return _promote(app.router.routes, router, route)
    except Exception:  # a FastAPI whose inclusions differ: served through the inclusion
        logger.debug("the websocket route stays in its inclusion", exc_info=True)
        return None


def _promote(
    routes: list[BaseRoute], router: Any, route: WebSocketRoute
) -> Callable[[], None] | None:
    index = next(
        (i for i, r in enumerate(routes) if getattr(r, "original_router", None) is router), None
    )
    if index is None:
        return None
    inclusion: Any = routes[index]
    if getattr(inclusion.include_context, "max_body_size", None) is not None:
        return None
    effective = [
        context.starlette_route
        for context in inclusion.effective_route_contexts()
        if context.original_route is route
    ]
    if len(effective) != 1 or type(effective[0]) is not WebSocketRoute:
        return None
    promoted: WebSocketRoute = effective[0]
    if promoted.app is not route.app or "{" in promoted.path:
        return None
    probe = {"type": "websocket", "path": promoted.path, "root_path": "", "headers": []}
    if any(earlier.matches(probe)[0] is not Match.NONE for earlier in routes[:index]):
        return None  # an earlier route takes the path: it keeps it
    routes.insert(index, promoted)

    def demote() -> None:
        if promoted in routes:
            routes.remove(promoted)

    return demote
