"""Cost of typed handlers and outgoing filters: ``python -m bench.typed_events``.

Measures, in-process and without sockets, (1) preparing one packet for a handler in the
positional form and in the typed form (validation into a small pydantic model included), and
(2) one broadcast's fan-out to 10,000 local subscribers without an outgoing filter and with
filters that keep, change and drop the data.
"""

from __future__ import annotations

import timeit
from typing import Any

from pydantic import BaseModel

from fastapi_channels import DROP, ChannelListener, SocketConnection, SocketPacket, channel
from fastapi_channels.app.invocation import plan_for
from fastapi_channels.core.channel import ChannelSpec, LiveChannel, Subscription
from fastapi_channels.core.fanout import deliver
from fastapi_channels.core.outgoing import OutgoingFilter
from fastapi_channels.wire.limits import OverflowPolicy
from fastapi_channels.wire.patterns import ChannelPattern
from fastapi_channels.wire.protocol import encode

RECIPIENTS = 10_000


class Message(BaseModel):
    text: str
    n: int


@channel("bench.*")
class Bench(ChannelListener):
    @channel.on("positional")
    async def positional(
        self, connection: SocketConnection, user: Any, packet: SocketPacket
    ) -> None:
        pass

    @channel.on("typed")
    async def typed(self, message: Message, user: Any) -> None:
        pass


class NullTransport:
    async def send_text(self, text: str) -> None:
        pass

    async def close(self, code: int, reason: str) -> None:
        pass


def keep(connection: SocketConnection, event: str, data: Any) -> Any:
    return data


def hide(connection: SocketConnection, event: str, data: Any) -> Any:
    return data if connection.user["id"] == data["id"] else {**data, "email": None}


def drop(connection: SocketConnection, event: str, data: Any) -> Any:
    return DROP


def main() -> None:
    listener = Bench()
    connection = SocketConnection(NullTransport(), id="c", user={"id": "u"})
    packet = SocketPacket(event="typed", data={"text": "hello", "n": 3}, channel="bench.1")
    for name in ("positional", "typed"):
        plan = plan_for(Bench, name)
        assert plan is not None
        handler = plan.bind(getattr(listener, name))
        count = 200_000
        seconds = timeit.timeit(lambda h=handler: h.prepare(connection, packet), number=count)
        print(f"prepare, {name} handler: {seconds / count * 1e6:.2f} µs per packet")

    frame = encode("profile", {"id": "u1", "email": "e", "text": "x" * 100}, "bench.1").decode()
    for label, hook in (("none", None), ("keeps", keep), ("changes", hide), ("drops", drop)):
        spec = ChannelSpec(
            ChannelPattern.parse("bench.*"),
            outgoing=None if hook is None else OutgoingFilter(hook, None),
        )
        live = LiveChannel(Subscription("bench.1", "1", spec))
        recipients = []
        for i in range(RECIPIENTS):
            recipient = SocketConnection(
                NullTransport(),
                id=str(i),
                user={"id": f"u{i}"},
                max_queue=1,
                overflow=OverflowPolicy.DROP_OLDEST,
            )
            recipient.subscriptions["bench.1"] = live.subscription
            recipients.append(recipient)
        rounds = 20
        seconds = timeit.timeit(lambda r=recipients, lv=live: deliver(r, frame, lv), number=rounds)
        per = seconds / rounds
        print(
            f"fan-out to {RECIPIENTS:,}, filter {label}: {per * 1e3:.2f} ms per broadcast "
            f"({per / RECIPIENTS * 1e9:.0f} ns per recipient)"
        )


if __name__ == "__main__":
    main()
