// The server's control of a connection, against a real server: a restart's reconnect advice
// (`/_test/restart` ends every connection as a restart does, the server staying up), and
// subscriptions the server makes and ends for a user (`/_test/user-subscription`).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { FEATURES, SocketClient, advisedDelay } from "../../../fastapi_channels/static/channels.js";
import { next, startServer } from "../support/harness.mjs";

let server;
const clients = [];

function client(token) {
  // A backoff far shorter than any advice: a wait seen is the advice's.
  const made = new SocketClient(server.url(), { token, reconnect: { initialDelay: 10 } });
  clients.push(made);
  return made;
}

before(async () => {
  server = await startServer();
});

after(async () => {
  await Promise.all(clients.map((c) => c.disconnect()));
  await server.stop();
});

describe("server control", { timeout: 20000 }, () => {
  test("after a restart the client waits the advised delay, then comes back", async () => {
    const c = client("user-ada");
    await c.connect();
    const advice = next(c, "disconnect");
    const waiting = next(c, "channels:state", { accept: (s) => s.state === "re-connecting" });
    const back = next(c, "channels:state", { accept: (s) => s.state === "connected" });
    await server.post("/_test/restart", { spread: 0.8 });
    const advised = (await advice).reconnect_after * 1000;
    const closedAt = Date.now();
    const state = await waiting;
    assert.equal(state.code, 1012);
    assert.ok(state.delay >= advised && state.delay <= advised * 1.1 + 1e-9, `${state.delay}`);
    await back;
    assert.ok(Date.now() - closedAt >= advised - 50);
  });

  test("a server subscription joins the channel table and outlives a reconnect", async () => {
    const c = client("user-bea");
    await c.connect();
    const heard = [];
    const subscribed = next(c, "channels:subscribed");
    c.on("channels:subscribed", ({ channel }) => {
      c.channel(channel).on("said", (data) => heard.push(data));
    });
    await server.post("/_test/user-subscription", { user: "bea", channel: "public:b" });
    assert.deepEqual(await subscribed, { channel: "public:b" });
    assert.equal(c.channel("public:b").state, "subscribed");
    const first = next(c.channel("public:b"), "said");
    await server.post("/_test/publish", { channel: "public:b", event: "said", data: 1 });
    assert.equal(await first, 1);

    const resubscribed = next(c, "channels:subscription", { accept: (s) => s.resubscribed });
    await server.post("/_test/close", { code: 1012, reason: "restart" });
    assert.equal((await resubscribed).channel, "public:b");
    const second = next(c.channel("public:b"), "said");
    await server.post("/_test/publish", { channel: "public:b", event: "said", data: 2 });
    assert.equal(await second, 2);
    assert.deepEqual(heard, [1, 2]);

    const unsubscribed = next(c, "channels:unsubscribed");
    const body = { user: "bea", channel: "public:b", subscribe: false };
    await server.post("/_test/user-subscription", body);
    assert.deepEqual(await unsubscribed, { channel: "public:b" });
    assert.equal(c.hasSubscription("public:b"), false);
  });

  test("the client announces what it understands; advice outside bounds is ignored", () => {
    const c = new SocketClient("ws://127.0.0.1:1/ws?x=1");
    const url = new URL(c._handshake(null).url);
    assert.equal(url.searchParams.get("x"), "1");
    assert.equal(url.searchParams.get(FEATURES.parameter), "reconnect-advice,server-subscriptions");
    assert.equal(advisedDelay({ reconnect_after: 2 }, () => 0), 2000);
    assert.equal(advisedDelay({ reconnect_after: 2 }, () => 1), 2200);
    for (const bad of [-1, "2", null, 4000]) {
      assert.equal(advisedDelay({ reconnect_after: bad }), null);
    }
    assert.equal(advisedDelay({}), null);
  });
});
