"""Core: connections, subscriptions, fan-out, presence and catching up, without ASGI.

Knows the brokers below it and the wire values, never listener classes or FastAPI: what it
needs to know of a channel comes in a `fastapi_channels.core.channel.ChannelSpec`.
"""
