"""The driver: starts each server fresh, drives it from separate load processes, reports.

Every server process is pinned to CPU 0 and every load process to the other CPUs (when the
machine has more than one), so the load never takes the server's core and the server's CPU time
(``utime + stime`` of its processes) is what one delivery costs it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import multiprocessing
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

from bench import load
from bench.report import render, summarise

__all__ = ["main", "render"]


@dataclass(frozen=True)
class App:
    """One benchmarked server: its ASGI app, the load client's dialect for it, its processes."""

    target: str
    kind: str
    workers: int = 1
    redis: bool = False
    """Its processes share a Redis server: it gets a ``BENCH_BROKER`` URL with its own prefix."""
    needs: str = ""
    """The module of the optional package it compares, when it is not fastapi_channels."""
    largest: int = 0
    """The most subscribers it is run with (0: every size of the plan)."""


APPS = {
    "channels": App("bench.apps.channels_app:app", load.CHANNELS),
    "channels-redis": App("bench.apps.channels_app:app", load.CHANNELS, 2, redis=True),
    "handwritten": App("bench.apps.handwritten_app:app", load.HANDWRITTEN),
    "handwritten-jwt": App("bench.apps.handwritten_app:app", load.HANDWRITTEN_JWT),
    "socketio": App("bench.apps.socketio_app:app", load.SOCKETIO, needs="socketio"),
    # The other Python choices speak the Envuso packets of fastapi_channels (bench/envuso.py).
    # The in-memory layer scans every channel and group member on each receive, so a delivery
    # costs O(subscribers): at N=2000 a 5-second run at 20 broadcasts/s would take minutes.
    "django": App("bench.apps.django_app:app", load.CHANNELS, needs="channels", largest=500),
    "django-redis": App(
        "bench.apps.django_app:app", load.CHANNELS, 2, redis=True, needs="channels_redis"
    ),
    "broadcaster": App("bench.apps.broadcaster_app:app", load.CHANNELS, needs="broadcaster"),
    "broadcaster-redis": App(
        "bench.apps.broadcaster_app:app", load.CHANNELS, 2, redis=True, needs="broadcaster"
    ),
    "litestar": App("bench.apps.litestar_app:app", load.CHANNELS, needs="litestar"),
    "litestar-redis": App(
        "bench.apps.litestar_app:app", load.CHANNELS, 2, redis=True, needs="litestar"
    ),
    "null": App("", load.HANDWRITTEN),
}
BASELINES = ("channels", "handwritten", "handwritten-jwt", "socketio", "channels-redis")
PEERS = ("django", "broadcaster", "litestar")
PEERS_REDIS = ("django-redis", "broadcaster-redis", "litestar-redis")
PEERS_ALL = PEERS + PEERS_REDIS
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Plan:
    """How big and how long: ``quick`` for a look, ``full`` for the published table."""

    runs: int
    sizes: tuple[int, ...]
    rate: float
    duration: float
    flood: int  # deliveries per flood run (broadcasts = flood // subscribers)
    big: int
    big_rate: float
    big_duration: float
    burst_count: int
    load_processes: int
    concurrency: int
    servers: tuple[str, ...] = BASELINES + PEERS_ALL
    # The null server shows the load client's own latency with 10,000 sockets to read.
    big_servers: tuple[str, ...] = ("channels", "handwritten", "null")
    extra: dict[str, Any] = field(default_factory=dict)
    huge: int = 0  # idle subscribed connections on one process (see `huge_run`)
    huge_broadcasts: int = 3  # single broadcasts to all of them, one after the other
    huge_flood: int = 10  # broadcasts to all, back to back: more than the clients can read
    # Deliveries/s every server is asked for, below the load client's ceiling and every
    # server's flood rate: latency at the same offered load, with nobody's queue growing.
    paced: int = 0
    paced_duration: float = 2.0


PLANS = {
    "smoke": Plan(1, (20,), 20, 0.5, 400, 0, 1, 1, 20, 1, 20),
    "quick": Plan(1, (500,), 20, 3, 100_000, 2000, 2, 2, 100, 2, 50, BASELINES, paced=100_000),
    "full": Plan(3, (500, 2000), 20, 5, 200_000, 10000, 2, 4, 100, 2, 50, paced=100_000),
    "big": Plan(3, (), 20, 5, 200_000, 10000, 2, 4, 100, 2, 50),
    # ``quick``'s sizes for the other Python choices beside fastapi_channels.
    "peers": Plan(
        1, (500,), 20, 3, 100_000, 0, 1, 1, 0, 2, 50, ("channels", "channels-redis", *PEERS_ALL)
    ),
    # p99 at N=500 is decided by the few slowest broadcasts: more and longer runs, little else.
    "latency": Plan(7, (500,), 20, 10, 5_000, 0, 1, 1, 0, 2, 50, BASELINES),
    # 100,000 light clients (`bench.rawclient`) on one fastapi_channels process.
    "huge": Plan(1, (), 1, 1, 0, 0, 1, 1, 0, 2, 100, servers=("channels",), huge=100_000),
}


def redis_available() -> str | None:
    """Why the cross-process run cannot run, or None when it can."""
    if importlib.util.find_spec("fastapi_channels.brokers.redis") is None:
        return "the Redis broker is not in fastapi_channels yet"
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            if not sock.recv(16).startswith(b"+PONG"):
                return "Redis on 127.0.0.1:6379 did not answer PING"
    except OSError:
        return "no Redis on 127.0.0.1:6379"
    return None


def unavailable(name: str) -> str | None:
    """Why a server cannot run here, or None when it can."""
    app = APPS[name]
    if app.needs and importlib.util.find_spec(app.needs) is None:
        return f"{app.needs} is not installed (pip install -e '.[bench]')"
    return redis_available() if app.redis else None


def _cpus() -> tuple[set[int] | None, set[int] | None]:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return {cpus[0]}, set(cpus[1:])


SERVER_CPUS, LOAD_CPUS = _cpus()


class Server:
    """One benchmarked server: its processes on a shared loopback socket."""

    def __init__(self, name: str, env: dict[str, str] | None = None) -> None:
        self.name = name
        app = APPS[name]
        target, self.kind, workers = app.target, app.kind, app.workers
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4096)
        self.sock.set_inheritable(True)
        self.port = self.sock.getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}"
        fd = str(self.sock.fileno())
        command = (
            [sys.executable, "-m", "bench.nullserver", fd]
            if name == "null"
            else [sys.executable, "-m", "bench.serve", target, fd]
        )
        environment = {**os.environ, **(env or {})}
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), *filter(None, [environment.get("PYTHONPATH")])]
        )
        self.processes = [
            subprocess.Popen(
                command,
                pass_fds=[self.sock.fileno()],
                env=environment,
                cwd=ROOT,
                preexec_fn=(lambda: os.sched_setaffinity(0, SERVER_CPUS)) if SERVER_CPUS else None,
                stdout=subprocess.DEVNULL,
            )
            for _ in range(workers)
        ]
        self.ps = [psutil.Process(p.pid) for p in self.processes]
        deadline = time.monotonic() + 30
        while True:
            try:
                self.get("stats")
                break
            except OSError:
                if time.monotonic() > deadline or any(p.poll() is not None for p in self.processes):
                    self.stop()
                    raise RuntimeError(f"{name} did not start") from None
                time.sleep(0.05)

    def get(self, route: str, **query: Any) -> dict[str, Any]:
        args = "&".join(f"{k}={v}" for k, v in query.items())
        url = f"http://127.0.0.1:{self.port}/bench/{route}?{args}"
        with urllib.request.urlopen(url, timeout=10) as response:
            result: dict[str, Any] = json.loads(response.read())
        return result

    def cpu(self) -> float:
        """CPU seconds used by the server's processes, all threads, nanosecond resolution."""
        total = 0
        for process in self.processes:
            for task in Path(f"/proc/{process.pid}/task").iterdir():
                with contextlib.suppress(OSError):
                    total += int((task / "schedstat").read_text().split()[0])
        return total / 1e9

    def rss(self) -> int:
        return sum(process.memory_info().rss for process in self.ps)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.sock.close()


class Loads:
    """The load processes; each command goes to all and the answers come back as a list."""

    def __init__(self, count: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.processes = []
        for _ in range(count):
            ours, theirs = context.Pipe()
            process = context.Process(target=load.main, args=(theirs, LOAD_CPUS), daemon=True)
            process.start()
            self.pipes.append(ours)
            self.processes.append(process)
        self.held = [0] * count

    def call(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for pipe, command in zip(self.pipes, commands, strict=True):
            pipe.send(command)
        return [pipe.recv() for pipe in self.pipes]

    def all(self, **command: Any) -> list[dict[str, Any]]:
        return self.call([dict(command) for _ in self.pipes])

    def connect(
        self,
        server: Server,
        total: int,
        concurrency: int,
        batch: bool = False,
        kind: str | None = None,
        sources: list[str] | None = None,
    ) -> tuple[float, float]:
        """Open ``total`` more connections over the processes: per second, server CPU µs each.

        ``kind`` overrides the server's client kind (``load.RAW`` for the light client);
        ``sources`` are the loopback addresses raw clients connect from, in turn.
        """
        count = len(self.pipes)
        shares = [total // count + (1 if n < total % count else 0) for n in range(count)]
        first = sum(self.held)
        commands = []
        for share in shares:
            commands.append(
                {
                    "op": "connect",
                    "kind": kind or server.kind,
                    "url": server.url,
                    "count": share,
                    "first": first,
                    "concurrency": concurrency,
                    "batch": batch,
                    "sources": sources,
                }
            )
            first += share
        cpu = server.cpu()
        start = time.monotonic()
        results = self.call(commands)
        elapsed = time.monotonic() - start
        cpu = server.cpu() - cpu
        errors = [e for r in results for e in r["errors"]]
        if errors:
            raise RuntimeError(f"{server.name}: {len(errors)}+ connections failed: {errors[:3]}")
        for n, share in enumerate(shares):
            self.held[n] += share
        return total / elapsed, cpu / total * 1e6

    def close(self) -> None:
        self.all(op="close")
        self.held = [0] * len(self.pipes)

    def stop(self) -> None:
        try:
            self.all(op="exit")
        finally:
            for process in self.processes:
                process.join(5)
                if process.is_alive():
                    process.kill()


DRAIN_TIMEOUT = 120.0
"""How long deliveries still on their way after a phase's time limit may take to arrive."""


def deliver(
    server: Server, loads: Loads, rate: float, count: int, burst: int = 1, latency: bool = True
) -> dict[str, Any]:
    """Publish ``count`` broadcasts and wait for every delivery; what it cost and took."""
    loads.all(op="reset", latency=latency)
    before = server.get("stats", reset=1).get("counters", {})
    if server.name != "null":
        server.get("delays", reset=1)
    expected = [held * count for held in loads.held]
    timeout = (count / rate if rate > 0 else 0) + 30 + sum(expected) / 20000
    cpu = server.cpu()
    server.get("publish", rate=rate, count=count, burst=burst)
    results = loads.call([{"op": "wait", "expected": e, "timeout": timeout} for e in expected])
    cpu = server.cpu() - cpu
    stats = server.get("stats", reset=1)
    delays = server.get("delays", reset=1) if server.name != "null" else {}
    received = sum(r["received"] for r in results)
    frames = sum(r["frames"] for r in results)
    latencies = sorted(x for r in results for x in r["latencies"])
    first = min((r["first_t"] for r in results if r["first_t"] is not None), default=0.0)
    last = max(r["last_receive"] for r in results)
    out: dict[str, Any] = {
        "expected": sum(expected),
        "received": received,
        "frames": frames,
        "cpu_us": cpu / max(received, 1) * 1e6,
        "rate": received / (last - first) if last > first else 0.0,
        "lag_max_ms": stats["lag_max"] * 1000,
        "gc_max_ms": stats.get("gc_max", 0.0) * 1000,
        "publish_error": stats["publish_error"],
        "publish_busy_ms": stats.get("publish_busy", 0.0) * 1000,
        # from the first publish seen to the last delivery: with one broadcast, its spread
        "last_ms": (last - first) * 1000 if last > first else None,
        **delays,
    }
    for name, value in stats.get("counters", {}).items():  # the library's, during this run
        out[name] = value - before.get(name, 0)
    if latencies:
        out["p50_ms"] = latencies[len(latencies) // 2] * 1000
        out["p99_ms"] = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    if received < sum(expected):  # the next phase must not count these
        loads.call([{"op": "wait", "expected": e, "timeout": DRAIN_TIMEOUT} for e in expected])
    return out


def wait_subscribers(server: Server, expected: int) -> None:
    if len(server.processes) > 1:
        return  # the stats route reaches one worker only; clients saw their subscriptions
    deadline = time.monotonic() + 10
    while server.get("stats")["subscribers"] < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name}: subscribers did not reach {expected}")
        time.sleep(0.05)


def settle_rss(server: Server) -> int:
    """RSS once it stops moving (allocator caches, lazily imported modules)."""
    time.sleep(0.3)
    return server.rss()


def one_run(name: str, plan: Plan, loads: Loads, log: Any) -> dict[str, Any]:
    """Every figure for one server, on a fresh server process."""
    app = APPS[name]
    env = None
    if app.redis:  # a prefix of its own: other runs may share this Redis
        env = {"BENCH_BROKER": f"redis://127.0.0.1:6379/0?prefix=bench-{uuid.uuid4().hex[:12]}"}
    server = Server(name, env)
    result: dict[str, Any] = {}
    try:
        loads.connect(server, 20, plan.concurrency)  # warm-up: import and allocate the paths
        wait_subscribers(server, 20)
        deliver(server, loads, 0, 5)
        loads.close()
        wait_subscribers_gone(server)
        base = settle_rss(server)
        for size in plan.sizes:
            if app.largest and size > app.largest:
                log(f"  {name} N={size}: not run (it is run up to N={app.largest})")
                break
            added = size - sum(loads.held)
            rate, connect_cpu = loads.connect(server, added, plan.concurrency)
            wait_subscribers(server, size)
            rss = settle_rss(server)
            fixed = deliver(server, loads, plan.rate, int(plan.rate * plan.duration))
            flood = deliver(server, loads, 0, max(10, plan.flood // size))
            result[str(size)] = {
                "connect_per_s": rate,
                "connect_cpu_us": connect_cpu,
                "mem_kib": (rss - base) / size / 1024,
                "fixed": fixed,
                "flood": flood,
            }
            if plan.paced:
                per_s = plan.paced / size
                paced = deliver(server, loads, per_s, int(per_s * plan.paced_duration))
                result[str(size)]["paced"] = paced
            log(f"  {name} N={size}: {compact(result[str(size)])}")
            if name == "channels" and plan.burst_count and size == plan.sizes[0]:
                result["burst"] = burst_run(server, loads, plan)
                log(f"  {name} burst: {compact(result['burst'])}")
        loads.close()
    finally:
        loads.close()
        server.stop()
    return result


def wait_subscribers_gone(server: Server) -> None:
    if len(server.processes) > 1:
        return
    deadline = time.monotonic() + 10
    while server.get("stats")["subscribers"] > 0 and time.monotonic() < deadline:
        time.sleep(0.05)


def burst_run(server: Server, loads: Loads, plan: Plan) -> dict[str, Any]:
    """Bursts of 10 broadcasts between two loop turns: unbatched, then batched clients."""
    size = plan.sizes[0]
    unbatched = deliver(server, loads, 0, plan.burst_count, burst=10, latency=False)
    loads.close()
    wait_subscribers_gone(server)
    try:
        loads.connect(server, size, plan.concurrency, batch=True)
    except RuntimeError as exc:  # a server without the batching option
        return {"unbatched": unbatched, "batched": None, "error": str(exc)[:200]}
    wait_subscribers(server, size)
    batched = deliver(server, loads, 0, plan.burst_count, burst=10, latency=False)
    loads.close()  # back to ``size`` ordinary clients for what follows
    wait_subscribers_gone(server)
    loads.connect(server, size, plan.concurrency)
    wait_subscribers(server, size)
    return {"unbatched": unbatched, "batched": batched}


def big_run(name: str, plan: Plan, loads: Loads, log: Any) -> dict[str, Any]:
    """One process, ``plan.big`` connections: memory, connect rate, loop lag, latency."""
    server = Server(name)
    try:
        base = settle_rss(server)
        rate, connect_cpu = loads.connect(server, plan.big, plan.concurrency)
        wait_subscribers(server, plan.big)
        rss = settle_rss(server)
        fixed = deliver(server, loads, plan.big_rate, int(plan.big_rate * plan.big_duration))
        result = {
            "connect_per_s": rate,
            "connect_cpu_us": connect_cpu,
            "mem_kib": (rss - base) / plan.big / 1024,
            "fixed": fixed,
        }
        log(f"  {name} N={plan.big}: {compact(result)}")
        return result
    finally:
        loads.close()
        server.stop()


def ceiling_run(plan: Plan, loads: Loads, log: Any) -> dict[str, Any]:
    """The load client's own limits, against the null server."""
    server = Server("null")
    try:
        loads.connect(server, 20, plan.concurrency)  # warm-up
        loads.close()
        size = plan.sizes[0]
        rate, _ = loads.connect(server, size, plan.concurrency)
        wait_subscribers(server, size)
        fixed = deliver(server, loads, plan.rate, int(plan.rate * plan.duration))
        flood = deliver(server, loads, 0, max(10, plan.flood // size))
        result = {str(size): {"connect_per_s": rate, "fixed": fixed, "flood": flood}}
        log(f"  load client ceiling N={size}: {compact(result[str(size)])}")
        return result
    finally:
        loads.close()
        server.stop()


def compact(value: Any) -> str:
    def trim(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: trim(x) for k, x in v.items() if k not in ("expected", "publish_error")}
        return round(v, 2) if isinstance(v, float) else v

    return json.dumps(trim(value))


def machine() -> dict[str, Any]:
    import uvicorn

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "uvicorn": uvicorn.__version__,
        "platform": platform.platform(),
        "server_cpus": sorted(SERVER_CPUS or []),
        "load_cpus": sorted(LOAD_CPUS or []),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--plan", choices=sorted(PLANS), default="quick")
    parser.add_argument("--servers", help="comma-separated subset of " + ",".join(APPS))
    parser.add_argument("--runs", type=int, help="repetitions (median, min and max reported)")
    parser.add_argument(
        "--connections", type=int, help="the huge plan's connections (default 100,000)"
    )
    parser.add_argument("--out", type=Path, help="JSON file (default bench/results/PLAN-TIME.json)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    plan = PLANS[args.plan]
    if args.runs:
        plan.runs = args.runs
    if args.connections:
        plan.huge = args.connections
    if plan.huge:
        from bench.huge import load_processes  # it imports this module

        plan.load_processes = load_processes(plan)
    servers = tuple(args.servers.split(",")) if args.servers else plan.servers
    log = (lambda message: None) if args.quiet else (lambda m: print(m, flush=True))
    pending: dict[str, str] = {}
    for name in servers:
        if why := unavailable(name):
            pending[name] = why
    servers = tuple(s for s in servers if s not in pending)
    started = time.monotonic()
    loads = Loads(plan.load_processes)
    raw: dict[str, Any] = {"ceiling": [], "runs": {s: [] for s in servers}, "big": {}, "huge": []}
    try:
        for run in range(plan.runs):
            log(f"run {run + 1}/{plan.runs}")
            if plan.sizes:
                raw["ceiling"].append(ceiling_run(plan, loads, log))
                for name in servers:
                    raw["runs"][name].append(one_run(name, plan, loads, log))
            if plan.huge:
                from bench.huge import huge_run

                raw["huge"].append(huge_run(plan, loads, log))
            if plan.big:
                for name in plan.big_servers:
                    if name in servers:
                        raw["big"].setdefault(name, []).append(big_run(name, plan, loads, log))
    finally:
        loads.stop()
    report = {
        "plan": args.plan,
        "settings": plan.__dict__ | {"servers": servers, "peers": PEERS_ALL},
        "machine": machine(),
        "pending": pending,
        "elapsed_s": time.monotonic() - started,
        "raw": raw,
    }
    if not plan.sizes:
        report["raw"]["runs"] = {}
    report["summary"] = summarise(report)
    if not args.quiet:
        print(render(report))
    out = (
        args.out
        or ROOT / "bench" / "results" / f"{args.plan}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str))
    log(f"wrote {out}")
    return report
