"""Server-side delay: from a broadcast's publish to its frame's write to the transport.

Every benchmark app runs under uvicorn (``bench.serve``), and every frame a server sends ends
in a call to its connection's transport ``write``, whatever the library does before (a queue,
a task, a direct write). `install` makes one connection in ``every`` write through a
`SampledTransport`, which finds the publish time (``"t":``, CLOCK_MONOTONIC, the same clock
as ``bench.common.payload``) in each frame it writes and records how long ago that was. The
other connections keep uvicorn's transport untouched, so the cost per delivery on average is
a fraction of one Python call. An app gets it by creating a ``bench.common.Bench`` (which
calls `install`) and serves the figures on ``GET /bench/delays?reset=1``
(``bench.common.add_routes``): p50 and p99 in milliseconds, and the number of samples.

A new peer app under uvicorn needs nothing more; one under another server (daphne, granian)
would call `Delays.record` where it hands a frame to its socket.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Final

__all__ = ["DELAYS", "Delays", "SampledTransport", "install"]

_MARK: Final = b'"t":'
_KEEP: Final = 500_000
"""Samples kept at most between two resets (4 MB); later ones are not recorded."""


class Delays:
    """Sampled publish-to-write delays of this process, in seconds."""

    def __init__(self) -> None:
        self.samples: list[float] = []

    def record(self, data: bytes | bytearray | memoryview) -> None:
        """Record the delay of every delivery in ``data`` (bytes about to be written)."""
        data = bytes(data)
        at = data.find(_MARK)
        if at < 0:
            return
        now = time.monotonic()
        samples = self.samples
        while at >= 0 and len(samples) < _KEEP:
            end = data.find(b",", at)
            with contextlib.suppress(ValueError):  # not a payload's publish time
                samples.append(now - float(data[at + 4 : end]))
            at = data.find(_MARK, at + 4)

    def summary(self, reset: bool = False) -> dict[str, Any]:
        """p50 and p99 in milliseconds (None without samples) and the sample count."""
        ordered = sorted(self.samples)
        if reset:
            self.samples = []
        if not ordered:
            return {"server_p50_ms": None, "server_p99_ms": None, "server_samples": 0}
        last = len(ordered) - 1
        return {
            "server_p50_ms": ordered[last // 2] * 1000,
            "server_p99_ms": ordered[min(last, int(len(ordered) * 0.99))] * 1000,
            "server_samples": len(ordered),
        }


DELAYS: Final = Delays()
"""This process's samples (one per process: every app shares uvicorn's transports)."""


class SampledTransport:
    """A transport that records the delay of what it writes, then writes it (see module)."""

    __slots__ = ("_delays", "_transport")

    def __init__(self, transport: Any, delays: Delays) -> None:
        self._transport = transport
        self._delays = delays

    def write(self, data: Any) -> None:
        self._delays.record(data)
        self._transport.write(data)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def install(every: int = 20, delays: Delays = DELAYS) -> None:
    """Sample one websocket connection in ``every`` of uvicorn's, in this process.

    Patches uvicorn's ``websockets-sansio`` protocol class, once per process (later calls do
    nothing): the class is the process's, so the patch is too.
    """
    from uvicorn.protocols.websockets import websockets_sansio_impl as sansio

    protocol: Any = sansio.WebSocketsSansIOProtocol
    if getattr(protocol, "bench_sampled", False):
        return
    original = protocol.connection_made
    counter = [0]

    def connection_made(self: Any, transport: Any) -> None:
        counter[0] += 1
        if counter[0] % every == 0:
            transport = SampledTransport(transport, delays)
        original(self, transport)

    protocol.connection_made = connection_made
    protocol.bench_sampled = True
