"""Edge: the FastAPI side: the `Channels` plugin, the websocket endpoint and ``Inject``.

The only layer that imports FastAPI and Starlette (with `fastapi_channels.auth`).
"""
