"""Prometheus metrics for a ``Channels`` server (the ``prometheus`` extra).

The collector reads the server's plain counters at scrape time, so metrics cost nothing on the
per-message path beyond the integer increments the server always makes:

```python
from fastapi_channels.prometheus import metrics_app
app.mount("/metrics", metrics_app(channels))
```
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from fastapi_channels.core.stats import HANDLER_BUCKETS
from fastapi_channels.wire.errors import ConfigurationError

try:
    from prometheus_client import CollectorRegistry, make_asgi_app
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ConfigurationError(
        "metrics need the 'prometheus' extra: pip install 'fastapi-ws-channels[prometheus]'"
    ) from exc

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from fastapi_channels.edge.channels import Channels

__all__ = ["ChannelsCollector", "metrics_app"]

_PREFIX = "fastapi_channels"


class ChannelsCollector(Collector):
    """Exposes one server's state and counters as Prometheus metrics, read at scrape time."""

    def __init__(self, channels: Channels) -> None:
        self.channels = channels

    def collect(self) -> Iterator[Metric]:
        """Yield every metric family."""
        server = self.channels.server
        stats = server.stats
        snapshot = server.snapshot(top=0)
        for name, doc, key in (
            ("connections", "Open connections on this process.", "connections"),
            ("users", "Distinct users connected to this process.", "users"),
            ("channels", "Channels with a subscriber on this process.", "channels"),
            ("subscriptions", "Subscriptions on this process.", "subscriptions"),
            ("queued_frames", "Frames waiting in outgoing queues.", "queued"),
            ("max_queued_frames", "The longest outgoing queue.", "max_queued"),
        ):
            yield GaugeMetricFamily(f"{_PREFIX}_{name}", doc, value=snapshot[key])
        yield GaugeMetricFamily(
            f"{_PREFIX}_broker_up",
            "1 when the broker can deliver between processes.",
            value=1 if server.broker.healthy else 0,
        )
        for name, value in server.broker.counters().items():
            doc = f"The broker's {name.replace('_', ' ')} counter."
            yield CounterMetricFamily(f"{_PREFIX}_broker_{name}", doc, value=value)
        for name, doc, value in (
            ("connections_opened", "Connections accepted.", stats.connections_opened),
            ("messages_in", "Frames received.", stats.messages_in),
            ("received_bytes", "Characters received.", stats.bytes_in),
            ("messages_out", "Frames queued for clients.", stats.messages_out),
            ("sent_bytes", "Characters queued for clients.", stats.bytes_out),
            ("dropped_frames", "Frames discarded by the overflow policy.", stats.dropped),
        ):
            yield CounterMetricFamily(f"{_PREFIX}_{name}", doc, value=value)
        yield _labelled("refusals", "Handshakes refused.", "reason", stats.refusals)
        yield _labelled("errors", "Error packets sent.", "code", stats.errors)
        yield _labelled("closes", "Connections closed by the server.", "code", stats.closes)
        buckets = [(str(b), c) for b, c in zip(HANDLER_BUCKETS, stats.handler_buckets, strict=True)]
        buckets.append(("+Inf", stats.handler_count))
        yield HistogramMetricFamily(
            f"{_PREFIX}_handler_seconds",
            "Handler durations.",
            buckets=buckets,
            sum_value=stats.handler_seconds,
        )


def _labelled(name: str, doc: str, label: str, counts: dict[str, int] | dict[int, int]) -> Metric:
    family = CounterMetricFamily(f"{_PREFIX}_{name}", doc, labels=[label])
    for key, value in counts.items():
        family.add_metric([str(key)], value)
    return family


def metrics_app(channels: Channels) -> ASGIApp:
    """An ASGI app serving ``channels``' metrics in the Prometheus text format.

    It uses its own registry, so mounting it does not expose the process's default metrics
    twice; register ``ChannelsCollector`` in your registry instead to combine them.
    """
    registry = CollectorRegistry(auto_describe=True)
    registry.register(ChannelsCollector(channels))
    app: ASGIApp = make_asgi_app(registry)
    return app
