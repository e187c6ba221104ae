"""Hosts on one machine: Linux network namespaces joined by veth pairs on a bridge.

Each host is a namespace with its own loopback and one interface (``eth0``) on a private /24;
the bridge lives in a namespace of its own, so nothing is added to the machine's own network.
Names start with a tag unique to the run, so several runs at once never meet. ``cut`` drops
every frame between a host and the bridge, both ways and silently (the bridge disables the
host's port; ``tc netem`` would do as well, but not every kernel has it), and ``heal`` lets them
through again.

Building them needs root (``ip netns add``). Where that is not permitted, tests that need them
are skipped with the reason, or fail when ``FASTAPI_CHANNELS_REQUIRE_NETNS=1`` (as in CI).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pytest

ROOT = Path(__file__).resolve().parent.parent
REQUIRE_ENV = "FASTAPI_CHANNELS_REQUIRE_NETNS"
COMMAND_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def netns_unavailable(reason: str) -> NoReturn:
    """Skip the current test for lack of network namespaces, or fail it when they are required."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(
            f"network namespaces are required ({REQUIRE_ENV}=1) but {reason}", pytrace=False
        )
    pytest.skip(f"needs network namespaces: {reason}")


def ip(*args: str) -> None:
    """Run ``ip ARGS``; raise with its error output if it fails."""
    _run(["ip", *args])


def _run(args: Sequence[str]) -> None:
    done = subprocess.run(args, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {done.stderr.strip()}")


def new_tag() -> str:
    """A prefix for this run's names: short enough for interface names (15 characters)."""
    return f"fcw16{uuid.uuid4().hex[:5]}"


def why_not_available(tag: str) -> str | None:
    """Why network namespaces cannot be built here (by trying to add one), or ``None``."""
    if shutil.which("ip") is None:
        return "there is no `ip` command (iproute2)"
    if shutil.which("bridge") is None:
        return "there is no `bridge` command (iproute2)"
    probe = f"{tag}-probe"
    try:
        ip("netns", "add", probe)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns add` is not permitted here ({exc})"
    try:
        ip("netns", "exec", probe, "true")
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns exec` is not permitted here ({exc})"
    finally:
        ip("netns", "del", probe)
    return None


class Network:
    """Hosts (namespaces) on one bridge, in a namespace of its own, all named after ``tag``.

    Use it as a context manager: leaving it ends every process still in its namespaces and
    deletes them, whatever happened inside.
    """

    def __init__(self, tag: str, subnet: str) -> None:
        self.tag = tag
        self.subnet = subnet
        """The first three octets of the private /24 the hosts' addresses are in."""
        self.switch = f"{tag}-switch"
        self.namespaces: list[str] = []

    def __enter__(self) -> Network:
        self._add_namespace(self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def namespace(self, host: str) -> str:
        return f"{self.tag}-{host}"

    def address(self, number: int) -> str:
        return f"{self.subnet}.{number}"

    def add_host(self, host: str, number: int) -> str:
        """Add a host with address ``<subnet>.<number>`` on the bridge; return its namespace."""
        ns = self.namespace(host)
        self._add_namespace(ns)
        port = self._port(host)
        # Both ends are created in their namespaces: no name is ever taken on the machine itself.
        ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns",
           self.switch)  # fmt: skip
        ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "addr", "add", f"{self.address(number)}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        return ns

    def cut(self, host: str) -> None:
        """Drop every frame between ``host`` and the bridge, both ways, without a word: the
        bridge disables the host's port (as a failed switch port would), and the host's link
        stays up, so neither end is told."""
        self._port_state(host, "disabled")

    def heal(self, host: str) -> None:
        """Undo ``cut``: the port forwards again."""
        self._port_state(host, "forwarding")

    def _port_state(self, host: str, state: str) -> None:
        number = {"disabled": "0", "forwarding": "3"}[state]
        _run(["bridge", "-n", self.switch, "link", "set", "dev", self._port(host), "state", number])

    def close(self) -> None:
        """End every process left in this network's namespaces (by pid: they are all ours) and
        delete the namespaces; their interfaces go with them."""
        errors: list[str] = []
        for ns in reversed(self.namespaces):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                pids = subprocess.run(
                    ["ip", "netns", "pids", ns],
                    capture_output=True,
                    text=True,
                    timeout=COMMAND_TIMEOUT,
                ).stdout.split()
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
            try:
                ip("netns", "del", ns)
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                errors.append(str(exc))
        self.namespaces.clear()
        if errors:
            raise RuntimeError("; ".join(errors))

    def _add_namespace(self, ns: str) -> None:
        ip("netns", "add", ns)
        self.namespaces.append(ns)

    def _port(self, host: str) -> str:
        return f"to-{host}"[:15]  # the bridge's end of the host's cable, in the switch namespace


class Signal:
    """Wakes whoever waits on the children that share it, whenever one of them says something."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.failures: list[str] = []

    def notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait_until(self, holds: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait until ``holds()`` is true, re-checked each time a child says something; fail
        after ``timeout`` seconds, or at once if a child ended unexpectedly."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    event = self._event
                    if self.failures:
                        raise AssertionError("; ".join(self.failures))
                    if holds():
                        return
                    await event.wait()
        except TimeoutError:
            raise AssertionError(f"not within {timeout} s: {what}") from None


class Child:
    """A process in a namespace; its output is read line by line as it comes, each line stamped
    with the monotonic clock (one clock for every namespace: they share the kernel).

    ``on_line(stamp, line)`` sees each line, on the event loop; the ``signal`` is notified after.
    """

    def __init__(
        self,
        name: str,
        namespace: str,
        args: Sequence[str],
        signal: Signal,
        env: Mapping[str, str] | None = None,
        on_line: Callable[[float, str], None] | None = None,
    ) -> None:
        self.name = name
        self.namespace = namespace
        self.args = list(args)
        self.signal = signal
        self.env = dict(env or {})
        self.on_line = on_line
        self.lines: list[tuple[float, str]] = []
        self.stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    def spawn(self) -> None:
        self._loop = asyncio.get_running_loop()
        # The project first; a PYTHONPATH already set (scripts/test-uvicorn-floor) stays after it.
        path = os.pathsep.join(filter(None, [".", os.environ.get("PYTHONPATH")]))
        self._process = subprocess.Popen(
            ["ip", "netns", "exec", self.namespace, *self.args],  # it execs: same pid
            cwd=ROOT,
            env={**os.environ, **self.env, "PYTHONPATH": path},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for raw in self._process.stdout:
            stamp = time.monotonic()
            self._call(self._arrived, stamp, raw.decode(errors="replace").rstrip("\n"))
        self._call(self._ended)

    def _call(self, callback: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the test's loop is already closed
            self._loop.call_soon_threadsafe(callback, *args)

    def _arrived(self, stamp: float, line: str) -> None:
        self.lines.append((stamp, line))
        if self.on_line is not None:
            self.on_line(stamp, line)
        self.signal.notify()

    def _ended(self) -> None:
        if not self.stopping:
            self.signal.failures.append(f"{self.name} exited:\n{self.output()}")
        self.signal.notify()

    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def first(self, text: str, since: float = 0.0) -> float | None:
        """When the process first wrote a line holding ``text`` at or after ``since``."""
        return next((t for t, line in self.lines if t >= since and text in line), None)

    async def wait_for(self, text: str, timeout: float, since: float = 0.0) -> float:
        """Wait until the process writes a line holding ``text`` (at or after ``since``)."""
        await self.signal.wait_until(
            lambda: self.first(text, since) is not None, timeout, f"{self.name} says {text!r}"
        )
        stamp = self.first(text, since)
        assert stamp is not None
        return stamp

    def send(self, command: Mapping[str, Any]) -> None:
        """Write one JSON line to the process's stdin."""
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write(json.dumps(command).encode() + b"\n")
        self._process.stdin.flush()

    def stop(self) -> None:
        """Close its stdin, ask it to end (SIGTERM), and kill it if it does not."""
        self.stopping = True
        process = self._process
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)
        if self._reader is not None:
            self._reader.join(timeout=STOP_TIMEOUT)
        if process.stdout is not None:
            process.stdout.close()
