"""The huge plan: 100,000 idle subscribed connections on one fastapi_channels process.

The load processes hold `bench.rawclient` clients (a protocol object each, no task), spread
over the loopback source addresses 127.0.0.2, 127.0.0.3, ... (``HUGE_PER_SOURCE`` each), so
no single source address runs out of ephemeral ports. Every process raises its soft limit on
open files to the hard one; the run refuses to start when the hard limit is too low for the
server (one file per connection), naming the size that would fit. Then:

1. connect all (connect, JWT, subscribe; ``plan.concurrency`` in flight per load process):
   the time it took and the server's RSS per connection;
2. ``plan.huge_broadcasts`` single broadcasts to all, one after the other: the longest loop lag
   in the server while the fan-out ran (it yields between chunks, see
   ``fastapi_channels.core.fanout``), the time from publish to the last delivery, p50/p99;
3. ``plan.huge_flood`` broadcasts to all, back to back: more than the load processes can read
   at once. What the server did about it: the publisher waited (``Limits.max_backlog_age``),
   frames dropped and connections closed as too slow (``Limits.queue_size``, ``overflow``).
"""

from __future__ import annotations

import math
import resource
import statistics
import time
from typing import Any, Final

from bench import load
from bench.run import Loads, Plan, Server, compact, deliver, settle_rss, wait_subscribers

__all__ = ["HUGE_PER_LOAD", "HUGE_PER_SOURCE", "huge_run", "load_processes"]

HUGE_PER_LOAD: Final = 15_000
"""Connections per load process (each holds one open file per socket)."""
HUGE_PER_SOURCE: Final = 20_000
"""Connections per loopback source address: well inside its 28,000 ephemeral ports."""
_SPARE_FILES: Final = 1_000
"""Open files the server needs besides its sockets (modules, the listening socket, pipes)."""


def load_processes(plan: Plan) -> int:
    """How many load processes the plan's connections need."""
    return max(plan.load_processes, math.ceil(plan.huge / HUGE_PER_LOAD))


def _check_open_files(size: int) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if size + _SPARE_FILES > hard:
        raise RuntimeError(
            f"{size:,} connections on one process need {size + _SPARE_FILES:,} open files; the "
            f"hard limit here is {hard:,} (raise it: ulimit -Hn, LimitNOFILE=) or run "
            f"--connections {hard - _SPARE_FILES}"
        )


def huge_run(plan: Plan, loads: Loads, log: Any) -> dict[str, Any]:
    """Connect ``plan.huge`` light clients to one process, then broadcast to all of them."""
    size = plan.huge
    _check_open_files(size)
    sources = [f"127.0.0.{2 + n}" for n in range(math.ceil(size / HUGE_PER_SOURCE))]
    server = Server("channels", {"BENCH_MAX_CONNECTIONS": str(size + 100)})
    try:
        base = settle_rss(server)
        started = time.monotonic()
        rate, connect_cpu = loads.connect(
            server, size, plan.concurrency, kind=load.RAW, sources=sources
        )
        wait_subscribers(server, size)
        connect_s = time.monotonic() - started
        rss = settle_rss(server)
        log(f"  huge N={size}: connected in {connect_s:.1f} s, {(rss - base) / size:.0f} B each")
        singles = [deliver(server, loads, 0, 1) for _ in range(plan.huge_broadcasts)]
        log(f"  huge N={size} single broadcasts: {compact(singles)}")
        flood = deliver(server, loads, 0, plan.huge_flood)
        log(f"  huge N={size} flood of {plan.huge_flood}: {compact(flood)}")
        return {
            "connections": size,
            "sources": len(sources),
            "connect_s": connect_s,
            "connect_per_s": rate,
            "connect_cpu_us": connect_cpu,
            "mem_kib": (rss - base) / size / 1024,
            "single": _worst_and_typical(singles),
            "flood": flood,
        }
    finally:
        loads.close()
        server.stop()


def _worst_and_typical(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The longest loop lag of the single broadcasts, the median of every other figure."""
    out: dict[str, Any] = {"runs": runs}
    for key in ("last_ms", "p50_ms", "p99_ms", "server_p50_ms", "server_p99_ms", "cpu_us"):
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = statistics.median(values) if values else None
    out["lag_max_ms"] = max(r["lag_max_ms"] for r in runs)
    out["received"] = sum(r["received"] for r in runs)
    out["expected"] = sum(r["expected"] for r in runs)
    return out
