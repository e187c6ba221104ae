// Reconnection, re-subscription and the token provider, against a real server behind a proxy
// that can cut connections the way a network failure does (no close frame); on history
// channels (the server's `feed:*` keep their last 20 events), recovery of what a drop missed,
// and presence channels' member lists.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  ConnectionStatus,
  RefusedError,
  SocketClient,
  backoffDelay,
  defaultShouldReconnect,
} from "../../../fastapi_channels/static/channels.js";
import { next, startProxy, startServer, within } from "../support/harness.mjs";

let server;
let proxy;
const clients = [];

function client(token, reconnect = {}) {
  const made = new SocketClient(`ws://127.0.0.1:${proxy.port}/ws`, {
    token,
    reconnect: { initialDelay: 20, maxDelay: 200, ...reconnect },
  });
  clients.push(made);
  return made;
}

const publish = (channel, data) => server.post("/_test/publish", { channel, event: "said", data });

/** Collect `count` events of `event` on `channel`, with their packets. */
function collect(channel, event, count) {
  const got = [];
  return new Promise((resolve) => {
    const listener = (data, packet) => {
      got.push({ data, position: packet.position });
      if (got.length === count) {
        channel.off(event, listener);
        resolve(got);
      }
    };
    channel.on(event, listener);
  });
}

const connected = (c) => next(c, "channels:state", { accept: (s) => s.state === "connected" });
const stopped = (c) => next(c, "channels:state", { accept: (s) => s.state === "disconnected" });

before(async () => {
  server = await startServer();
  proxy = await startProxy(server.port);
});

after(async () => {
  await Promise.all(clients.map((c) => c.disconnect()));
  await proxy.close();
  await server.stop();
});

describe("reconnect", { timeout: 20000 }, () => {
  test("after a dropped connection: reconnects, subscribes again, events flow", async () => {
    const c = client("user-rita");
    await c.connect();
    const channel = await c.subscribe("public:room");
    const firstId = c.id;
    const states = [];
    c.on("channels:state", (s) => states.push(s.state));
    const resubscribed = next(c, "channels:subscription", { accept: (s) => s.resubscribed });
    const back = connected(c);
    proxy.drop();
    await back;
    assert.notEqual(c.id, firstId);
    assert.deepEqual(await resubscribed, {
      channel: "public:room",
      successful: true,
      reason: null,
      resubscribed: true,
    });
    assert.equal(channel.state, "subscribed");
    assert.deepEqual(states.slice(0, 1), ["re-connecting"]);
    const said = next(channel, "said");
    channel.emit("say", { after: "reconnect" });
    assert.deepEqual(await said, { after: "reconnect" });
  });

  test("asks the token provider again before each attempt", async () => {
    let generation = 0;
    const c = client(async () => `user-sam.${++generation}`);
    await c.connect();
    c.emit("whoami");
    assert.equal((await next(c, "whoami")).token, "user-sam.1");
    const back = connected(c);
    proxy.drop();
    await back;
    c.emit("whoami");
    assert.deepEqual(await next(c, "whoami"), { user: "sam", token: "user-sam.2" });
  });

  test("stops for good when the reconnect is refused", async () => {
    let calls = 0;
    const c = client(() => (++calls === 1 ? "user-tom" : "expired"));
    await c.connect();
    const end = stopped(c);
    proxy.drop();
    const state = await end;
    assert.ok(state.error instanceof RefusedError);
    assert.equal(state.reason, "invalid token");
    assert.equal(c.state, ConnectionStatus.DISCONNECTED);
    assert.equal(calls, 2);
  });

  test("a restart (1012) reconnects; a clean close (1000) stops for good", async () => {
    const c = client("user-uma");
    await c.connect();
    const firstId = c.id;
    const back = connected(c);
    await server.post("/_test/close", { code: 1012, reason: "restart" });
    await back;
    assert.notEqual(c.id, firstId);
    const gone = stopped(c);
    await server.post("/_test/close", { code: 1000, reason: "bye" });
    const state = await gone;
    assert.equal(state.code, 1000);
    assert.equal(state.reason, "bye");
  });

  test("disconnect() during the backoff cancels the reconnection", async () => {
    const c = client("user-vic", { initialDelay: 60000, maxDelay: 60000, jitter: 0 });
    await c.connect();
    const waiting = next(c, "channels:state", { accept: (s) => s.state === "re-connecting" });
    proxy.drop();
    assert.equal((await waiting).delay, 60000);
    await c.disconnect();
    assert.equal(c.state, ConnectionStatus.DISCONNECTED);
  });

  test("disconnect() during a later backoff, after failed attempts, also ends it", async () => {
    const c = client("user-xia", { initialDelay: 20, maxDelay: 60000, factor: 1000, jitter: 0 });
    await c.connect();
    const second = next(c, "channels:state", { accept: (s) => s.attempt === 2 });
    proxy.down = true;
    proxy.drop();
    assert.equal((await second).delay, 20000);
    proxy.down = false;
    await within(c.disconnect(), 2000, "disconnect during the second backoff");
    assert.equal(c.state, ConnectionStatus.DISCONNECTED);
  });

  test("connect({retry: true}) keeps trying until the server is reachable", async () => {
    const c = client("user-wes");
    proxy.down = true;
    const failures = [];
    c.on("channels:state", (s) => {
      if (s.state === "re-connecting") failures.push(s.attempt);
      if (failures.length === 3) proxy.down = false;
    });
    try {
      await c.connect({ retry: true });
    } finally {
      proxy.down = false;
    }
    assert.deepEqual(failures, [1, 2, 3]);
    assert.equal(c.state, ConnectionStatus.CONNECTED);
  });

  test("maxAttempts bounds the attempts", async () => {
    const c = client("user-xia", { maxAttempts: 2 });
    proxy.down = true;
    try {
      await assert.rejects(c.connect({ retry: true }));
    } finally {
      proxy.down = false;
    }
    assert.equal(c.state, ConnectionStatus.DISCONNECTED);
  });
});

describe("backoff", () => {
  test("grows exponentially, is capped, and jitter only shortens it", () => {
    const options = { initialDelay: 100, maxDelay: 1000, factor: 2, jitter: 0.5 };
    assert.deepEqual(
      [0, 1, 2, 3, 4, 10].map((n) => backoffDelay(n, options, () => 0)),
      [100, 200, 400, 800, 1000, 1000],
    );
    assert.equal(backoffDelay(1, options, () => 1), 100);
    assert.equal(backoffDelay(5000, options, () => 0), 1000);
  });

  test("the default rule reconnects unless the server closed on purpose", () => {
    for (const code of [1001, 1006, 1011, 1012, 1013]) assert.ok(defaultShouldReconnect({ code }));
    for (const code of [1000, 1005, 1008]) assert.equal(defaultShouldReconnect({ code }), false);
  });
});

describe("refusals", { timeout: 20000 }, () => {
  test("too many connections (1008) is final", async () => {
    const limited = await startServer(["--max-connections-per-user", "1"]);
    const first = new SocketClient(limited.url(), { token: "user-pat" });
    const second = new SocketClient(limited.url(), {
      token: "user-pat",
      reconnect: { initialDelay: 10 },
    });
    try {
      await first.connect();
      const error = await second.connect({ retry: true }).catch((e) => e);
      assert.ok(error instanceof RefusedError);
      assert.equal(error.reason, "too many connections");
      assert.equal(error.code, 1008);
    } finally {
      await first.disconnect();
      await limited.stop();
    }
  });

  test("server busy (1013) is retried until a slot frees", async () => {
    const busy = await startServer(["--max-connections", "1"]);
    const first = new SocketClient(busy.url(), { token: "user-pat" });
    const waiting = new SocketClient(busy.url(), {
      token: "user-quinn",
      reconnect: { initialDelay: 10, maxDelay: 50 },
    });
    try {
      await first.connect();
      const failures = [];
      waiting.on("channels:state", (s) => {
        if (s.state !== "re-connecting") return;
        failures.push(s.error?.reason);
        if (failures.length === 2) first.disconnect();
      });
      await waiting.connect({ retry: true });
      assert.deepEqual(failures.slice(0, 2), ["server busy", "server busy"]);
      waiting.emit("whoami");
      assert.equal((await next(waiting, "whoami")).user, "quinn");
    } finally {
      await waiting.disconnect();
      await busy.stop();
    }
  });
});

describe("subscribing while reconnecting", { timeout: 20000 }, () => {
  test("the request is sent once the connection is back", async () => {
    const s = await startServer();
    const p = await startProxy(s.port);
    const c = new SocketClient(`ws://127.0.0.1:${p.port}/ws`, {
      token: "user-ray",
      reconnect: { initialDelay: 200, maxDelay: 200, jitter: 0 },
    });
    try {
      await c.connect();
      const waiting = next(c, "channels:state", { accept: (st) => st.state === "re-connecting" });
      p.drop();
      await waiting;
      const channel = await c.subscribe("public:later");
      assert.equal(channel.state, "subscribed");
      assert.equal(c.state, ConnectionStatus.CONNECTED);
    } finally {
      await c.disconnect();
      await p.close();
      await s.stop();
    }
  });
});

describe("history", { timeout: 20000 }, () => {
  test("tracks positions and replays what a dropped connection missed", async () => {
    const c = client("user-hana");
    await c.connect();
    const feed = await c.subscribe("feed:r");
    assert.equal(feed.position.offset, 0);
    const epoch = feed.position.epoch;
    const first = collect(feed, "said", 2);
    for (const n of [0, 1]) await publish("feed:r", n);
    await first;
    assert.deepEqual(feed.position, { offset: 2, epoch });

    proxy.down = true; // the client cannot come back until the events below are published
    const resubscribed = next(c, "channels:subscription", { accept: (s) => s.resubscribed });
    const replayed = collect(feed, "said", 4);
    proxy.drop();
    for (const n of [2, 3, 4]) await publish("feed:r", n);
    proxy.down = false;
    const answer = await resubscribed;
    assert.equal(answer.recovered, true);
    assert.deepEqual(answer.position, { offset: 2, epoch });
    assert.equal(feed.recovered, true);
    await publish("feed:r", 5);
    assert.deepEqual(
      await replayed,
      [2, 3, 4, 5].map((n) => ({ data: n, position: { offset: n + 1, epoch } })),
    );
    assert.deepEqual(feed.position, { offset: 6, epoch });
  });

  test("reports a gap too old to replay", async () => {
    const c = client("user-ivo");
    await c.connect();
    const feed = await c.subscribe("feed:g");
    proxy.down = true;
    const resubscribed = next(c, "channels:subscription", { accept: (s) => s.resubscribed });
    proxy.drop();
    for (let n = 0; n < 25; n += 1) await publish("feed:g", n); // the channel keeps 20
    proxy.down = false;
    const answer = await resubscribed;
    assert.equal(answer.recovered, false);
    assert.equal(feed.recovered, false);
    assert.equal(feed.position.offset, 25);
  });

  test("subscribes since a position kept from an earlier session", async () => {
    const first = client("user-jo");
    await first.connect();
    const kept = (await first.subscribe("feed:k")).position;
    await first.disconnect();
    for (const n of [0, 1]) await publish("feed:k", n);
    const second = client("user-jo");
    await second.connect();
    const subscribing = second.subscribe("feed:k", { since: kept });
    const replayed = collect(second.channel("feed:k"), "said", 2);
    const feed = await subscribing;
    assert.equal(feed.recovered, true);
    assert.deepEqual(
      (await replayed).map((event) => event.data),
      [0, 1],
    );
  });
});

describe("presence", { timeout: 20000 }, () => {
  test("keeps the member list with joins and leaves", async () => {
    const kim = client("user-kim");
    await kim.connect();
    const listed = next(kim, "channels:presence");
    const feed = await kim.subscribe("feed:p");
    assert.deepEqual(await listed, { channel: "feed:p", members: [{ id: "kim" }] });
    assert.deepEqual([...feed.members.keys()], ["kim"]);
    const joined = next(feed, "channels:join");
    const lee = client("user-lee");
    await lee.connect();
    await lee.subscribe("feed:p");
    assert.deepEqual(await joined, { channel: "feed:p", member: { id: "lee" } });
    assert.deepEqual([...feed.members.keys()].sort(), ["kim", "lee"]);
    const left = next(kim, "channels:leave");
    await lee.disconnect();
    assert.deepEqual(await left, { channel: "feed:p", member: { id: "lee" } });
    assert.deepEqual([...feed.members.keys()], ["kim"]);
  });

  test("merges a partial member list until a complete one arrives", async () => {
    const fay = client("user-fay");
    const gus = client("user-gus");
    await Promise.all([fay.connect(), gus.connect()]);
    await gus.subscribe("feed:pp");
    const first = next(fay, "channels:presence");
    const feed = await fay.subscribe("feed:pp");
    await first;
    assert.deepEqual([...feed.members.keys()].sort(), ["fay", "gus"]);
    const listed = async (members, partial) => {
      const data = { channel: "feed:pp", members, ...(partial ? { partial: true } : {}) };
      const got = next(fay, "channels:presence");
      await server.post("/_test/send", { user: "fay", event: "channels:presence", data });
      assert.deepEqual(await got, data);
    };
    await listed([], true); // the server's broker refilling after a restart: nobody yet
    assert.deepEqual([...feed.members.keys()].sort(), ["fay", "gus"]);
    await listed([{ id: "fay", name: "Fay" }], true);
    assert.deepEqual(feed.members.get("fay"), { id: "fay", name: "Fay" });
    assert.ok(feed.members.has("gus"));
    await listed([{ id: "fay" }], false); // complete: gus has gone meanwhile
    assert.deepEqual([...feed.members.keys()], ["fay"]);
  });
});
