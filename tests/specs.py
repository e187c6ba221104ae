"""Real channel specs and subscriptions for tests that drive the core without listeners."""

from __future__ import annotations

from typing import Any

from fastapi_channels.core.channel import ChannelSpec, Subscription
from fastapi_channels.wire.patterns import ChannelPattern


def spec(pattern: str, **features: Any) -> ChannelSpec:
    """The spec a started listener of ``pattern`` with ``features`` would give the core."""
    return ChannelSpec(ChannelPattern.parse(pattern), **features)


def subscription(channel: str, served_by: ChannelSpec | None = None) -> Subscription:
    """A subscription to ``channel``, served by ``served_by`` (an exact-pattern spec if None)."""
    served = served_by if served_by is not None else spec(channel)
    match = served.pattern.match(channel)
    assert match is not None, f"{served.pattern.text!r} does not serve {channel!r}"
    return Subscription(channel, match, served)
