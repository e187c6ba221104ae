"""What the server process holds, read from /proc: the tests' server runs in this process."""

from __future__ import annotations

import os
from pathlib import Path


def open_files() -> int:
    """How many file descriptors this process has open (sockets included)."""
    return len(os.listdir("/proc/self/fd"))


def rss() -> int:
    """This process's resident memory, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def connections_to(port: int) -> int:
    """TCP connections whose local or remote port is ``port``: those holding buffers, so any
    state but LISTEN and TIME_WAIT (a closed connection's memory of itself, no buffers)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            if state in ("0A", "06"):  # LISTEN, TIME_WAIT
                continue
            if (
                int(local.rsplit(":", 1)[1], 16) == port
                or int(remote.rsplit(":", 1)[1], 16) == port
            ):
                count += 1
    return count
