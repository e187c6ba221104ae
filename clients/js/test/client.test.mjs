// The JavaScript client against a real fastapi_channels server (tests/client_app.py).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  ConnectionClosedError,
  ConnectionStatus,
  RefusedError,
  ReplyError,
  SocketClient,
  SubscriptionError,
  TimeoutError,
} from "../../../fastapi_channels/static/channels.js";
import { closedPort, next, startServer, within } from "../support/harness.mjs";

let server;
const clients = [];

function client(options = {}, path = "/ws") {
  const made = new SocketClient(server.url(path), { reconnect: { initialDelay: 20 }, ...options });
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

describe("connect", { timeout: 20000 }, () => {
  test("resolves with the connection id and reports each state", async () => {
    const c = client({ token: "user-alice" });
    const states = [];
    c.on("channels:state", (change) => states.push(change.state));
    const ready = await c.connect();
    assert.match(ready.id, /^[0-9a-f]{32}$/);
    assert.equal(c.id, ready.id);
    assert.equal(c.state, ConnectionStatus.CONNECTED);
    assert.deepEqual(states, ["connecting", "connected"]);
    await c.disconnect();
    assert.equal(c.getConnectionStatus(), ConnectionStatus.DISCONNECTED);
  });

  test("sends the token as the subprotocol by default, as Envuso does", async () => {
    const c = client().usingJwt("user-bob");
    await c.connect();
    assert.equal(c.getWs().protocol, "user-bob");
    c.emit("whoami");
    assert.deepEqual(await next(c, "whoami"), { user: "bob", token: "user-bob" });
  });

  test("offers bearer, <token> and gets only bearer echoed", async () => {
    const c = client({ token: "user-carol", tokenTransport: "bearer" });
    await c.connect();
    assert.equal(c.getWs().protocol, "bearer");
    c.emit("whoami");
    assert.equal((await next(c, "whoami")).user, "carol");
  });

  test("can send the token as a query parameter", async () => {
    const c = client({ token: "user-dave", tokenTransport: "query" });
    await c.connect();
    c.emit("whoami");
    assert.equal((await next(c, "whoami")).user, "dave");
  });

  test("connects anonymously without a token, also when the provider returns null", async () => {
    const c = client({ token: () => null });
    await c.connect();
    assert.equal(c.getWs().protocol, "");
    c.emit("whoami");
    assert.deepEqual(await next(c, "whoami"), { user: null, token: null });
  });

  test("a refusal rejects with the server's reason and does not retry", async () => {
    const c = client({ token: "bad-token" });
    const states = [];
    c.on("channels:state", (change) => states.push(change.state));
    const error = await c.connect({ retry: true }).then(
      () => assert.fail("connected"),
      (e) => e,
    );
    assert.ok(error instanceof RefusedError);
    assert.equal(error.reason, "invalid token");
    assert.equal(c.state, ConnectionStatus.DISCONNECTED);
    assert.deepEqual(states, ["connecting", "disconnected"]);
  });

  test("a server that is not there rejects without retry unless asked", async () => {
    const c = client({ token: "user-x" });
    c.url = server.url("/ws", await closedPort());
    await assert.rejects(c.connect(), ConnectionClosedError);
    assert.equal(c.state, ConnectionStatus.DISCONNECTED);
  });
});

describe("subscriptions", { timeout: 20000 }, () => {
  let c;
  before(async () => {
    c = client({ token: "user-erin" });
    await c.connect();
  });

  test("a granted subscription resolves with the channel", async () => {
    const channel = await c.subscribe("public:granted");
    assert.equal(channel.name, "public:granted");
    assert.equal(channel.state, "subscribed");
    assert.ok(c.hasSubscription("public:granted"));
    assert.equal(await c.subscribe("public:granted"), channel, "the same channel twice");
  });

  test("a denied subscription rejects with the reason and is forgotten", async () => {
    const error = await c.subscribe("private:someone-else").catch((e) => e);
    assert.ok(error instanceof SubscriptionError);
    assert.equal(error.channel, "private:someone-else");
    assert.equal(error.reason, "not authorised");
    assert.equal(c.hasSubscription("private:someone-else"), false);
    const unknown = await c.subscribe("nowhere").catch((e) => e);
    assert.equal(unknown.reason, "no channel matches this name");
  });

  test("Envuso's callback style still works, error first", async () => {
    const granted = await new Promise((resolve) =>
      c.subscribe("private:erin", (error, channel) => resolve({ error, channel })),
    );
    assert.equal(granted.error, null);
    assert.equal(granted.channel.name, "private:erin");
    const denied = await new Promise((resolve) =>
      c.subscribe("private:frank", (error, channel) => resolve({ error, channel })),
    );
    assert.ok(denied.error instanceof SubscriptionError);
  });

  test("channel events reach every listener of the event until it is removed", async () => {
    const channel = await c.subscribe("public:events");
    const first = [];
    const second = [];
    const addFirst = (data) => first.push(data);
    channel.listen("said", addFirst).on("said", (data, packet) => second.push(packet));
    channel.emit("say", { text: "one" });
    await next(channel, "said");
    channel.off("said", addFirst);
    channel.emit("say", { text: "two" });
    await next(channel, "said");
    assert.deepEqual(first, [{ text: "one" }]);
    assert.deepEqual(
      second.map((p) => [p.channel, p.data.text]),
      [
        ["public:events", "one"],
        ["public:events", "two"],
      ],
    );
  });

  test("events published by the app arrive on the channel", async () => {
    const channel = await c.subscribe("public:news");
    const arrived = next(channel, "headline");
    await server.post("/_test/publish", { channel: "public:news", event: "headline", data: 7 });
    assert.equal(await arrived, 7);
  });

  test("after unsubscribe no more events are delivered", async () => {
    const channel = await c.subscribe("public:leave");
    const seen = [];
    channel.listen("said", (data) => seen.push(data));
    channel.unsubscribe();
    assert.equal(channel.state, "unsubscribed");
    assert.equal(c.hasSubscription("public:leave"), false);
    const other = await c.subscribe("public:stay");
    await server.post("/_test/publish", { channel: "public:leave", event: "said", data: 1 });
    const marker = next(other, "said");
    await server.post("/_test/publish", { channel: "public:stay", event: "said", data: 2 });
    await marker; // published after the first, so the first would have arrived by now
    assert.deepEqual(seen, []);
  });

  test("subscribe before connect rejects instead of throwing", async () => {
    const idle = client();
    await assert.rejects(idle.subscribe("public:x"), ConnectionClosedError);
  });
});

describe("plain events", { timeout: 20000 }, () => {
  test("emit and on, several listeners and once", async () => {
    const c = client({ token: "user-gina" });
    await c.connect();
    const seen = [];
    c.on("echo", (data) => seen.push(["on", data]));
    c.once("echo", (data) => seen.push(["once", data]));
    c.emit("echo", 1);
    await next(c, "echo");
    c.emit("echo", 2);
    await next(c, "echo");
    assert.deepEqual(seen, [
      ["on", 1],
      ["once", 1],
      ["on", 2],
    ]);
  });

  test("the server's error packet is an event; unhandled it becomes a warning", async () => {
    const c = client({ token: "user-hal" });
    await c.connect();
    const warning = next(c, "channels:warning");
    c.emit("no-such-event", {});
    assert.match((await warning).message, /no listener for event/);
    const error = next(c, "channels:error");
    c.emit("no-such-event", {});
    assert.equal((await error).code, "unknown-event");
  });

  test("a throwing listener is reported and the others still run", async () => {
    const c = client({ token: "user-ian" });
    await c.connect();
    const seen = [];
    c.on("echo", () => {
      throw new Error("boom");
    });
    c.on("echo", (data) => seen.push(data));
    const warning = next(c, "channels:warning");
    c.emit("echo", "x");
    assert.equal((await warning).error.message, "boom");
    assert.deepEqual(seen, ["x"]);
  });

  test("emit while not connected throws ConnectionClosedError", () => {
    const c = client();
    assert.throws(() => c.emit("echo", 1), ConnectionClosedError);
  });
});

describe("requests (reply packets matched by id)", { timeout: 20000 }, () => {
  test("resolve with the reply's data, reject on an error or a timeout", async () => {
    const c = client({}, "/replies");
    await c.connect();
    const [a, b] = await Promise.all([c.request("add", { n: 1 }), c.request("add", { n: 2 })]);
    assert.deepEqual(a, { event: "add", data: { n: 1 } });
    assert.deepEqual(b, { event: "add", data: { n: 2 } });
    const failed = await c.request("fail").catch((e) => e);
    assert.ok(failed instanceof ReplyError);
    assert.equal(failed.code, "rejected");
    await assert.rejects(c.request("ignore", null, { timeout: 50 }), TimeoutError);
  });

  test("pending requests reject when the connection closes", async () => {
    const c = client({}, "/replies");
    await c.connect();
    const pending = c.request("ignore", null, { timeout: 5000 });
    await c.disconnect();
    await assert.rejects(within(pending, 2000, "rejection"), ConnectionClosedError);
  });
});

describe("requests answered by the server's listeners", { timeout: 20000 }, () => {
  test("the return value is the reply; a refusal or an unknown event rejects", async () => {
    const c = client({ token: "user-sal" });
    await c.connect();
    assert.deepEqual(await c.request("add", { a: 1, b: 2 }), { sum: 3 });
    const refused = await c.request("add", { a: "x" }).catch((e) => e);
    assert.ok(refused instanceof ReplyError);
    assert.equal(refused.code, "rejected");
    assert.equal(refused.message, "a and b must be numbers");
    assert.equal((await c.request("no-such-event").catch((e) => e)).code, "unknown-event");
    const room = await c.subscribe("public:replies");
    const said = next(room, "said");
    assert.equal(await room.request("say", "hi"), null);
    assert.equal(await said, "hi");
  });
});

describe("the served module", { timeout: 20000 }, () => {
  test("is served at <path>/client.js as JavaScript, with a validator", async () => {
    const response = await server.get("/ws/client.js");
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type"), /^text\/javascript/);
    const etag = response.headers.get("etag");
    assert.ok(etag);
    assert.match(await response.text(), /export class SocketClient/);
    const again = await server.get("/ws/client.js", { "if-none-match": etag });
    assert.equal(again.status, 304);
    const served = await import(`data:text/javascript,${encodeURIComponent(await (await server.get("/ws/client.js")).text())}`);
    assert.equal(typeof served.SocketClient, "function");
  });
});
