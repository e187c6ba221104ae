"""Several hosts, for real: Redis on one, two app processes on each of two others, and one app
host cut off the network under traffic, then healed.

The hosts are network namespaces on a bridge (``tests/netns.py``), on 10.231.16.0/24: Redis on
.1, host A on .11, host B on .12. Each app host runs two uvicorn processes of
``tests.hosts_app`` (ports 8001 and 8002) and an agent (``tests/hosts_agent.py``), whose
websocket clients connect to their own host's processes and whose publishers POST to them; the
test reads what the agents print. Select it with ``-m hosts``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.netns import Child, Network, Signal, netns_unavailable, new_tag, why_not_available
from tests.processes import LISTENING, LOST, REGAINED

pytestmark = pytest.mark.hosts

SUBNET = "10.231.16"
REDIS_HOST = 1
APP_HOSTS = {"a": 11, "b": 12}
WORKERS = {"a1": ("a", 8001), "a2": ("a", 8002), "b1": ("b", 8001), "b2": ("b", 8002)}
USERS = {"a1": "ann", "a2": "amy", "b1": "bob", "b2": "bea"}  # one client on each process
EVERYONE = set(USERS.values())
LOBBY, ROOM = "lobby:1", "room:1"  # presence and history; plain
KINDS = {LOBBY: "lobbies", ROOM: "rooms"}
PRESENCE_TIMEOUT = 3.0
PING_INTERVAL = 1.0
START_TIMEOUT = 30.0  # six Python processes starting at once on a busy 2-core machine
SLACK = 3.0  # for a busy machine, on top of each bound the docs give
BURST = 10  # messages each publisher sends at once, before the cut and after the heal
STREAM_INTERVAL = 0.05  # the pace of the traffic from host B while host A is cut off
STREAM_CAP = 2000  # a bound on that traffic, never reached


def publisher(worker: str, channel: str) -> str:
    return f"{worker}-{KINDS[channel]}"


@dataclass
class Agent:
    """What one host's agent reported: packets per client, answers per publisher."""

    child: Child | None = None
    packets: dict[str, list[tuple[float, dict[str, Any]]]] = field(default_factory=dict)
    closed: dict[str, Any] = field(default_factory=dict)
    answers: dict[str, dict[int, Any]] = field(default_factory=dict)
    answered_at: dict[tuple[str, int], float] = field(default_factory=dict)
    stopped: dict[str, int] = field(default_factory=dict)
    ready: bool = False

    def on_line(self, stamp: float, line: str) -> None:
        try:
            report = json.loads(line)
        except ValueError:
            return  # not a report (a warning from the interpreter): kept in the child's output
        if "failed" in report:
            assert self.child is not None
            self.child.signal.failures.append(f"agent: {report['failed']}")
        elif "agent" in report:
            self.ready = True
        elif "packet" in report:
            self.packets.setdefault(report["client"], []).append((report["t"], report["packet"]))
        elif "closed" in report:
            self.closed[report["client"]] = report["closed"]
        elif "stopped" in report:
            self.stopped[report["publisher"]] = report["stopped"]
        elif "status" in report:
            self.answers.setdefault(report["publisher"], {})[report["n"]] = report["status"]
            self.answered_at[report["publisher"], report["n"]] = report["t"]

    @property
    def sender(self) -> Child:
        assert self.child is not None
        return self.child


@dataclass
class Deployment:
    network: Network
    signal: Signal
    workers: dict[str, Child]
    agents: dict[str, Agent]

    def agent_of(self, user: str) -> Agent:
        worker = next(w for w, u in USERS.items() if u == user)
        return self.agents[WORKERS[worker][0]]

    def packets(self, user: str, since: float = 0.0) -> list[dict[str, Any]]:
        return [p for t, p in self.agent_of(user).packets.get(user, []) if t >= since]

    def stamped(self, user: str) -> list[tuple[float, dict[str, Any]]]:
        return self.agent_of(user).packets.get(user, [])

    def messages(self, user: str, channel: str) -> list[dict[str, Any]]:
        return [
            p for p in self.packets(user) if p["event"] == "message" and p.get("channel") == channel
        ]

    def received(self, user: str, channel: str) -> list[tuple[str, int]]:
        return [(m["data"]["from"], m["data"]["n"]) for m in self.messages(user, channel)]

    def members(self, user: str) -> set[str]:
        """The members the user's client knows of: its last list, with the joins and leaves
        since."""
        members: set[str] = set()
        for packet in self.packets(user):
            data = packet.get("data")
            if packet["event"] == "channels:presence":
                members = {member["id"] for member in data["members"]}
            elif packet["event"] == "channels:join":
                members.add(data["member"]["id"])
            elif packet["event"] == "channels:leave":
                members.discard(data["member"]["id"])
        return members

    def presence_events(self, user: str, since: float) -> list[tuple[str, str]]:
        return [
            (p["event"], p["data"]["member"]["id"])
            for p in self.packets(user, since)
            if p["event"] in ("channels:join", "channels:leave")
        ]

    def answers(self, worker: str, channel: str) -> dict[int, Any]:
        return self.agents[WORKERS[worker][0]].answers.get(publisher(worker, channel), {})

    def sent(self, channel: str, status: int) -> set[tuple[str, int]]:
        """The messages of ``channel`` whose POST was answered with ``status``."""
        return {
            (publisher(worker, channel), n)
            for worker in WORKERS
            for n, answer in self.answers(worker, channel).items()
            if answer == status
        }

    def publish(self, worker: str, channel: str, count: int, interval: float = 0.0) -> None:
        host, port = WORKERS[worker]
        url = f"http://127.0.0.1:{port}/{KINDS[channel]}/1"
        command = {"op": "publish", "url": url, "count": count, "interval": interval}
        self.agents[host].stopped.pop(publisher(worker, channel), None)
        self.agents[host].sender.send({**command, "publisher": publisher(worker, channel)})

    def stop(self, worker: str, channel: str) -> None:
        host = WORKERS[worker][0]
        self.agents[host].sender.send({"op": "stop", "publisher": publisher(worker, channel)})

    def runs_ended(self, runs: Iterable[tuple[str, str]]) -> bool:
        return all(publisher(w, c) in self.agents[WORKERS[w][0]].stopped for w, c in runs)

    async def wait(self, holds: Any, timeout: float, what: str) -> None:
        await self.signal.wait_until(holds, timeout, what)

    async def connect_everyone(self) -> None:
        """One client per process, each subscribed to both channels, connected one after the
        other: each sees those before it, and they see it join."""
        connected: set[str] = set()
        for worker, user in USERS.items():
            host, port = WORKERS[worker]
            url = f"ws://127.0.0.1:{port}/ws?user={user}"
            self.agents[host].sender.send(
                {"op": "connect", "client": user, "url": url, "subscribe": [LOBBY, ROOM]}
            )
            connected.add(user)
            await self.wait(
                lambda user=user: (
                    self.subscribed(user, ROOM)  # type: ignore[misc]
                    and all(self.members(u) == connected for u in connected)
                ),
                20,
                f"{user} subscribed, seeing and seen by every client before it",
            )

    def subscribed(self, user: str, channel: str) -> bool:
        return any(
            p["event"] == "subscribe-channel-response" and p["data"]["channel"] == channel
            for p in self.packets(user)
        )

    async def cut_until_members_leave(self) -> float:
        """Cut host A off; return when host B's clients have seen A's members leave."""
        cut_at = time.monotonic()
        self.network.cut("a")
        await self.wait(
            lambda: self.members("bob") == self.members("bea") == {"bob", "bea"},
            PRESENCE_TIMEOUT * 4 / 3 + SLACK + 10,
            "host A's members gone for host B's clients",
        )
        return cut_at

    async def heal_until_members_return(self) -> float:
        """Heal host A; return when its processes reconnected and every client sees everyone."""
        healed_at = time.monotonic()
        self.network.heal("a")
        await asyncio.gather(
            *(self.workers[w].wait_for(REGAINED, 20, healed_at) for w in ("a1", "a2"))
        )
        await self.wait(
            lambda: all(self.members(user) == EVERYONE for user in EVERYONE),
            PRESENCE_TIMEOUT + SLACK + 10,
            "host A's members back for every client",
        )
        return healed_at

    def presence_story(self, user: str, since: float) -> str:
        """The client's presence packets, with their times after ``since``: for failures."""
        return f"{user}: " + "; ".join(
            f"{t - since:+.2f} s {p['event']} {p['data'].get('member') or p['data'].get('members')}"
            for t, p in self.stamped(user)
            if p["event"].startswith("channels:")
        )

    def presence_mismatches(self, user: str) -> list[dict[str, Any]]:
        """Joins of members the client already had, leaves of members it did not have."""
        members: set[str] = set()
        wrong = []
        for packet in self.packets(user):
            data = packet.get("data")
            if packet["event"] == "channels:presence":
                members = {member["id"] for member in data["members"]}
            elif packet["event"] in ("channels:join", "channels:leave"):
                key = data["member"]["id"]
                if (key in members) == (packet["event"] == "channels:join"):
                    wrong.append(packet)
                members ^= {key}
        return wrong


@pytest.fixture
async def hosts(redis_binary: str, tmp_path: Path) -> AsyncIterator[Deployment]:
    """Redis on one namespace, two app processes and an agent on each of two others; every
    process stopped and every namespace deleted at the end, whatever happens."""
    tag = new_tag()
    reason = why_not_available(tag)
    if reason is not None:
        netns_unavailable(reason)
    signal = Signal()
    children: list[Child] = []
    with Network(tag, SUBNET) as network:
        try:
            redis_ns = network.add_host("redis", REDIS_HOST)
            for host, number in APP_HOSTS.items():
                network.add_host(host, number)
            redis_address = network.address(REDIS_HOST)
            redis = Child(
                "redis",
                redis_ns,
                [redis_binary, "--bind", redis_address, "--port", "6379", "--protected-mode",
                 "no", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                signal,
            )  # fmt: skip
            children.append(redis)
            redis.spawn()
            env = {
                "FASTAPI_CHANNELS_BROKER_URL": f"redis://{redis_address}:6379/0",
                "PRESENCE_TIMEOUT": str(PRESENCE_TIMEOUT),
                "PING_INTERVAL": str(PING_INTERVAL),
            }
            await redis.wait_for("Ready to accept connections", START_TIMEOUT)
            workers: dict[str, Child] = {}
            for worker, (host, port) in WORKERS.items():
                workers[worker] = Child(
                    worker,
                    network.namespace(host),
                    [sys.executable, "-m", "uvicorn", "tests.hosts_app:app", "--host", "0.0.0.0",
                     "--port", str(port), "--ws", "websockets-sansio", "--log-level", "info",
                     "--no-access-log"],
                    signal,
                    env,
                )  # fmt: skip
            agents = {host: Agent() for host in APP_HOSTS}
            for host, agent in agents.items():
                agent.child = Child(
                    f"agent {host}",
                    network.namespace(host),
                    [sys.executable, "-m", "tests.hosts_agent"],
                    signal,
                    on_line=agent.on_line,
                )
            for child in [*workers.values(), *(a.sender for a in agents.values())]:
                children.append(child)
                child.spawn()
            await asyncio.gather(
                *(worker.wait_for(LISTENING, START_TIMEOUT) for worker in workers.values())
            )
            await signal.wait_until(
                lambda: all(a.ready for a in agents.values()), START_TIMEOUT, "agents ready"
            )
            yield Deployment(network, signal, workers, agents)
        finally:
            for child in reversed(children):
                child.stop()


async def test_a_host_cut_off_the_network_recovers_what_it_can_and_nothing_twice(
    hosts: Deployment,
) -> None:
    d = hosts
    await d.connect_everyone()

    # 1. Healthy: every process publishes on both channels; everyone gets everything.
    runs = [(worker, channel) for worker in WORKERS for channel in KINDS]
    for worker, channel in runs:
        d.publish(worker, channel, BURST)
    await d.wait(lambda: d.runs_ended(runs), 30, "the first bursts sent")
    assert d.sent(LOBBY, 200) | d.sent(ROOM, 200) == {
        (publisher(w, c), n) for w, c in runs for n in range(BURST)
    }
    await d.wait(
        lambda: all(
            set(d.received(user, channel)) >= d.sent(channel, 200)
            for user in EVERYONE
            for channel in KINDS
        ),
        20,
        "every burst received by every client",
    )

    # 2. Host B streams on both channels while host A is cut off.
    streams = [(worker, channel) for worker in ("b1", "b2") for channel in KINDS]
    for worker, channel in streams:
        d.publish(worker, channel, STREAM_CAP, STREAM_INTERVAL)
    await d.wait(
        lambda: all(
            (publisher(w, c), BURST) in d.received(user, c) for w, c in streams for user in EVERYONE
        ),
        20,
        "host B's streams reaching every client",
    )
    cut_at = await d.cut_until_members_leave()
    left = (
        max(
            t
            for user in ("bob", "bea")
            for t, p in d.stamped(user)
            if t >= cut_at and p["event"] == "channels:leave"
        )
        - cut_at
    )
    lost_at = await asyncio.gather(
        *(d.workers[w].wait_for(LOST, 3 * PING_INTERVAL + SLACK + 5, cut_at) for w in ("a1", "a2"))
    )
    detected = max(lost_at) - cut_at

    # Host A's processes know they are cut off: their publishes fail at once; a plain channel's
    # still reach the publishing process's own subscribers, a history channel's reach no one.
    cut_off = [(worker, channel) for worker in ("a1", "a2") for channel in KINDS]
    before = {run: set(d.answers(*run)) for run in cut_off}
    for worker, channel in cut_off:
        d.publish(worker, channel, 1)
    await d.wait(lambda: d.runs_ended(cut_off), 10, "host A's publishes while cut off")
    for run in cut_off:
        assert [d.answers(*run)[n] for n in set(d.answers(*run)) - before[run]] == [503]
    local = {"ann": (publisher("a1", ROOM), BURST), "amy": (publisher("a2", ROOM), BURST)}
    await d.wait(
        lambda: all(message in d.received(user, ROOM) for user, message in local.items()),
        10,
        "host A's plain messages reaching the publishing process's own subscribers",
    )

    healed_at = await d.heal_until_members_return()
    regained = max(d.workers[w].first(REGAINED, healed_at) or 0.0 for w in ("a1", "a2"))
    regained -= healed_at
    rejoined = (
        max(
            t
            for user in EVERYONE
            for t, p in d.stamped(user)
            if t >= healed_at and p["event"] in ("channels:join", "channels:presence")
        )
        - healed_at
    )
    for worker, channel in streams:
        d.stop(worker, channel)
    await d.wait(lambda: d.runs_ended(streams), 10, "host B's streams stopped")

    # 3. Healthy again: everyone publishes once more; the last message of each publisher
    # reaching every client means all before it that will ever arrive have arrived.
    for worker, channel in runs:
        d.publish(worker, channel, BURST)
    await d.wait(lambda: d.runs_ended(runs), 30, "the last bursts sent")
    last = {
        channel: {(publisher(w, c), max(d.answers(w, c))) for w, c in runs if c == channel}
        for channel in KINDS
    }
    await d.wait(
        lambda: all(
            set(d.received(user, channel)) >= last[channel]
            for user in EVERYONE
            for channel in KINDS
        ),
        20,
        "the last bursts received by every client",
    )
    # When host A's clients had every history message sent before the heal (at the heal, when
    # none was left to catch up: a busy machine can take longer to cut than the stream runs;
    # what they received is checked below either way).
    answered_at = {**d.agents["a"].answered_at, **d.agents["b"].answered_at}
    caught_up = max(
        (
            t
            for user in ("ann", "amy")
            for t, m in d.stamped(user)
            if t >= healed_at
            and m.get("channel") == LOBBY
            and answered_at[m["data"]["from"], m["data"]["n"]] < healed_at
        ),
        default=healed_at,
    )

    # What every client saw.
    for user in EVERYONE:
        assert user not in d.agent_of(user).closed, f"{user}'s socket closed"
        for channel in KINDS:
            got = d.received(user, channel)
            assert len(got) == len(set(got)), f"{user} got a message twice on {channel}"
            for name in {sender for sender, _ in got}:
                numbers = [n for sender, n in got if sender == name]
                assert numbers == sorted(numbers), f"{user} got {name} out of order"

    # The history channel: everything acknowledged, to everyone, once, in one order, with no gap
    # in positions; nothing refused. Host A's clients got what they missed after the heal.
    lobby = d.received("bob", LOBBY)
    assert set(lobby) == d.sent(LOBBY, 200)
    for user in EVERYONE:
        assert d.received(user, LOBBY) == lobby, f"{user} saw another order"
        positions = [m["position"] for m in d.messages(user, LOBBY)]
        assert len({p["epoch"] for p in positions}) == 1
        offsets = [p["offset"] for p in positions]
        assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))

    # The plain channel: host B's clients got everything acknowledged. Host A's clients missed
    # one run of host B's messages per publisher (those sent while A was cut off: nothing is
    # replayed), and got their own process's refused message.
    room = d.sent(ROOM, 200)
    for user in ("bob", "bea"):
        assert set(d.received(user, ROOM)) == room
    for user in ("ann", "amy"):
        got = set(d.received(user, ROOM))
        assert got - room == {local[user]}
        for worker in ("b1", "b2"):
            name = publisher(worker, ROOM)
            missed = sorted(n for sender, n in room - got if sender == name)
            assert missed, f"{user} missed nothing of {name}"
            assert missed == list(range(missed[0], missed[-1] + 1)), f"{user}: {name} {missed}"
        assert {m for m in room - got if not m[0].startswith("b")} == set()

    # Presence: host B's clients saw host A's members leave once and join again once, and were
    # never told of a join of a member they had or a leave of one they did not have. Host A's
    # clients heard nothing while cut off, and got the member list again after the heal.
    for user in ("bob", "bea"):
        events = d.presence_events(user, cut_at)
        assert sorted(events[:2]) == [("channels:leave", "amy"), ("channels:leave", "ann")]
        assert sorted(events[2:]) == [("channels:join", "amy"), ("channels:join", "ann")]
    for user in ("bob", "bea"):
        assert d.presence_mismatches(user) == [], d.presence_story(user, cut_at)
    for user in ("ann", "amy"):
        assert d.presence_events(user, cut_at) == d.presence_events(user, healed_at)
        assert any(p["event"] == "channels:presence" for p in d.packets(user, healed_at))

    print(
        f"\nhost A cut off: its processes noticed after {detected:.1f} s, host B's clients saw "
        f"its members leave after {left:.1f} s; healed: reconnected after {regained:.1f} s, "
        f"members back after {rejoined:.1f} s, missed messages delivered after "
        f"{caught_up - healed_at:.1f} s"
    )
    assert detected <= 3 * PING_INTERVAL + SLACK  # pings are checked once an interval
    assert left <= PRESENCE_TIMEOUT * 4 / 3 + SLACK


async def test_after_the_heal_the_cut_host_s_clients_still_see_themselves(
    hosts: Deployment,
) -> None:
    """The docs: a process that reconnects sends its subscribers the member list again; the
    list includes the subscriber's own user, no subscriber gets a join for itself, and the
    joins and leaves after the list each change it (the other host's processes may register
    their members after this list was read: their joins follow it)."""
    d = hosts
    await d.connect_everyone()
    await d.cut_until_members_leave()
    healed_at = await d.heal_until_members_return()

    def lists(user: str) -> list[dict[str, Any]]:
        return [p for p in d.packets(user, healed_at) if p["event"] == "channels:presence"]

    await d.wait(
        lambda: all(lists(user) for user in ("ann", "amy")),
        PRESENCE_TIMEOUT + SLACK,
        "host A's clients got the member list again",
    )
    await d.wait(
        lambda: all(d.members(user) == EVERYONE for user in EVERYONE),
        PRESENCE_TIMEOUT + SLACK,
        "every client sees everyone after the list",
    )
    for user in ("ann", "amy"):
        story = d.presence_story(user, healed_at)
        assert user in {m["id"] for m in lists(user)[0]["data"]["members"]}, story
        assert ("channels:join", user) not in d.presence_events(user, healed_at), story
        assert d.presence_mismatches(user) == [], story
