r"""``fastapi-channels connect``: a terminal client for debugging a live app.

Connects with a token, subscribes to channels, prints every packet as it arrives (with colour
when standard output is a terminal, never with ``NO_COLOR`` set), and can send an event or a
request and show the reply:

```bash
fastapi-channels connect ws://127.0.0.1:8000/ws --token "$TOKEN" -s chat:1 -s news
fastapi-channels connect ws://127.0.0.1:8000/ws --emit message --data '{"text": "hi"}' \
    --channel chat:1 -s chat:1 --count 1
fastapi-channels connect ws://127.0.0.1:8000/ws --request time --timeout 5
```

When the connection is lost it says why (the close code, its meaning and the server's reason)
and reconnects, as the client does, unless ``--no-reconnect``; ``-v`` also shows why each
attempt failed. A refusal is final: a server that refuses the token once refuses it again, so the
command stops and says so rather than retrying.

Exit status: 0 when done, 1 when the connection, a subscription or the request failed, or the
server ended the connection for good before the command was done, 2 for bad arguments, 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from datetime import datetime
from typing import IO, Any

from fastapi_channels.client.connection import ChannelsClient, ClientState
from fastapi_channels.client.errors import (
    ConnectFailed,
    ConnectionClosed,
    Refused,
    ReplyError,
    SubscriptionDenied,
)
from fastapi_channels.client.packets import Packet, PacketStream

__all__ = ["add_arguments", "describe_close", "run"]

TOKEN_ENV = "FASTAPI_CHANNELS_TOKEN"

CLOSE_CODES = {
    1000: "normal closure",
    1001: "going away",
    1005: "no close code",
    1006: "connection dropped",
    1008: "policy violation",
    1009: "message too big",
    1011: "internal error",
    1012: "service restart",
    1013: "try again later",
    4001: "token expired",
}
"""What the close codes a client meets mean (RFC 6455's, and the server's own 4001)."""

_RESET = "\033[0m"
_STYLES = {
    "time": "\033[2m",
    "channel": "\033[36m",
    "event": "\033[1;32m",
    "error": "\033[1;31m",
    "status": "\033[33m",
    "good": "\033[32m",
}


class Printer:
    """Writes packets and status lines, as text (coloured or not) or as JSON lines.

    In JSON mode each packet is one JSON object on standard output and status lines go to
    standard error, so the output can be piped.
    """

    def __init__(self, out: IO[str], err: IO[str], *, colour: bool, as_json: bool) -> None:
        self.out = out
        self.err = err
        self.colour = colour and not as_json
        self.as_json = as_json

    def _paint(self, style: str, text: str) -> str:
        return f"{_STYLES[style]}{text}{_RESET}" if self.colour else text

    def packet(self, packet: Packet) -> None:
        """Print one packet from the server."""
        if self.as_json:
            raw: dict[str, Any] = {"event": packet.event}
            for key in ("channel", "id", "data", "error"):
                value = getattr(packet, key)
                if value is not None:
                    raw[key] = value
            print(json.dumps(raw, ensure_ascii=False), file=self.out, flush=True)
            return
        stamp = datetime.now().strftime("%H:%M:%S.%f")[:-3]
        style = "error" if packet.event == "channels:error" else "event"
        parts = [self._paint("time", stamp)]
        if packet.channel is not None:
            parts.append(self._paint("channel", packet.channel))
        parts.append(self._paint(style, packet.event))
        parts.append(json.dumps(packet.data, ensure_ascii=False))
        print("  ".join(parts), file=self.out, flush=True)

    def status(self, text: str, style: str = "status") -> None:
        """Print a line about the connection itself."""
        target = self.err if self.as_json else self.out
        print(self._paint(style, f"* {text}"), file=target, flush=True)

    def failure(self, text: str) -> None:
        """Print an error to standard error."""
        print(self._paint("error", f"error: {text}"), file=self.err, flush=True)


def describe_close(code: int | None, reason: str = "") -> str:
    """A close code, what it means, and the reason when there is one: ``1012 service restart``."""
    if code is None:
        text = "no close code"
    else:
        meaning = CLOSE_CODES.get(code)
        text = f"{code} {meaning}" if meaning else str(code)
    return f"{text} ({reason})" if reason else text


class _LogLines(logging.Handler):
    """Shows the client's log records as status lines."""

    def __init__(self, printer: Printer, level: int) -> None:
        super().__init__(level)
        self.printer = printer

    def emit(self, record: logging.LogRecord) -> None:
        self.printer.status(record.getMessage())


def use_colour(choice: str, stream: IO[str]) -> bool:
    """Decide on colour: ``always``, ``never``, or ``auto`` (a terminal, without ``NO_COLOR``)."""
    if choice != "auto":
        return choice == "always"
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return stream.isatty()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``connect``."""
    parser.add_argument("url", help="the websocket endpoint, e.g. ws://127.0.0.1:8000/ws")
    parser.add_argument(
        "--token", default=None, help=f"the token to connect with (default: ${TOKEN_ENV})"
    )
    parser.add_argument(
        "--token-transport",
        choices=["subprotocol", "bearer", "header", "query"],
        default="subprotocol",
        help="how the token travels (default: as the subprotocol, as Envuso's client sends it)",
    )
    parser.add_argument(
        "-s", "--subscribe", action="append", default=[], metavar="CHANNEL", help="repeatable"
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--emit", metavar="EVENT", help="send this event once subscribed")
    action.add_argument("--request", metavar="EVENT", help="send a request and print the reply")
    parser.add_argument("--data", type=_json, default=None, help="the event's data, as JSON")
    parser.add_argument("--channel", help="send the event or request on this channel")
    parser.add_argument(
        "--listen",
        action="store_true",
        help="keep printing events after --request (otherwise it exits with the reply)",
    )
    parser.add_argument("--count", type=int, help="exit after printing this many packets")
    parser.add_argument("--duration", type=float, help="exit after this many seconds")
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for a reply (10)"
    )
    parser.add_argument("--json", action="store_true", help="print packets as JSON lines")
    parser.add_argument("--color", choices=["auto", "always", "never"], default="auto")
    parser.add_argument(
        "--no-reconnect", action="store_true", help="exit when the connection is lost"
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also show the client's log: why each reconnection attempt failed",
    )


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None


def run(args: argparse.Namespace) -> int:
    """Run ``connect`` with parsed arguments; returns the exit status."""
    printer = Printer(
        sys.stdout, sys.stderr, colour=use_colour(args.color, sys.stdout), as_json=args.json
    )
    try:
        return asyncio.run(_session(args, printer))
    except KeyboardInterrupt:
        return 130


async def _session(args: argparse.Namespace, printer: Printer) -> int:
    client = ChannelsClient(
        args.url,
        token=args.token if args.token is not None else os.environ.get(TOKEN_ENV),
        token_transport=args.token_transport,
        reconnect=not args.no_reconnect,
        request_timeout=args.timeout,
    )

    def on_state(packet: Packet) -> None:
        data = packet.data
        state = data["state"]
        if state == ClientState.RE_CONNECTING and "delay" in data:
            if "code" in data:  # the first attempt after a loss says what was lost
                lost = describe_close(data["code"], data.get("reason") or "")
                printer.status(f"connection lost: {lost}")
            printer.status(f"reconnecting in {data['delay']:.1f}s (attempt {data['attempt']})")
        elif state == ClientState.CONNECTED and data["previous"] != "connecting":
            printer.status(f"reconnected as {data.get('id')}", "good")

    def on_subscription(packet: Packet) -> None:
        data = packet.data
        if data["resubscribed"]:
            verdict = "subscribed again to" if data["successful"] else "refused again:"
            printer.status(f"{verdict} {data['channel']}")

    client.on("channels:state", on_state)
    client.on("channels:subscription", on_subscription)
    # The client's log goes to the status lines (its warnings repeat what is shown anyway).
    log = logging.getLogger("fastapi_channels.client")
    handler = _LogLines(printer, logging.INFO if args.verbose else logging.ERROR)
    log.addHandler(handler)
    propagate, level = log.propagate, log.level
    log.propagate = False
    if args.verbose:
        log.setLevel(logging.INFO)
    try:
        return await _connected(client, args, printer)
    finally:
        log.removeHandler(handler)
        log.propagate, log.level = propagate, level


async def _connected(client: ChannelsClient, args: argparse.Namespace, printer: Printer) -> int:
    stream = client.packets()
    try:
        await client.connect()
    except (Refused, ConnectFailed) as exc:
        printer.failure(str(exc))
        return 1
    printer.status(f"connected to {args.url} as {client.id}", "good")
    status = 0
    try:
        for name in args.subscribe:
            try:
                await client.subscribe(name, timeout=args.timeout)
                printer.status(f"subscribed to {name}", "good")
            except SubscriptionDenied as exc:
                printer.failure(f"subscription to {name} refused: {exc.reason}")
                status = 1
            except TimeoutError:
                printer.failure(f"no answer to the subscription to {name}")
                status = 1
        if args.emit:
            await client.emit(args.emit, args.data, channel=args.channel)
        if args.request:
            status = max(status, await _request(client, args, printer))
            if not args.listen:
                return status
        if await _print_packets(stream, args, printer):
            return status
    except ConnectionClosed as exc:
        printer.failure(str(exc))
        return 1
    finally:
        stream.close()
        await client.close()
    # The client stopped for good before the command was done.
    if isinstance(client.error, Refused):
        printer.failure(
            f"reconnecting was refused: {client.error.reason}; not retrying, as the server would "
            "refuse it again (a new token is needed)"
        )
    elif client.error is not None:
        printer.failure(str(client.error))
    else:
        closed = describe_close(client.close_code, client.close_reason)
        printer.failure(f"connection closed by the server: {closed}; not reconnecting")
    return 1


async def _request(client: ChannelsClient, args: argparse.Namespace, printer: Printer) -> int:
    try:
        reply = await client.request(args.request, args.data, channel=args.channel)
    except ReplyError as exc:
        printer.failure(f"the server answered with an error: {json.dumps(exc.error)}")
        return 1
    except TimeoutError:
        printer.failure(f"no reply within {args.timeout}s")
        return 1
    printer.packet(Packet(event="channels:reply", data=reply))
    return 0


async def _print_packets(stream: PacketStream, args: argparse.Namespace, printer: Printer) -> bool:
    """Print packets until the command is done; ``False`` if the client stopped for good first."""
    printed = 0
    try:
        async with asyncio.timeout(args.duration):
            async for packet in stream:
                printer.packet(packet)
                printed += 1
                if args.count is not None and printed >= args.count:
                    return True
    except TimeoutError:
        return True  # --duration is over
    return False
