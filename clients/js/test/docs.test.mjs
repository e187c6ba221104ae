// The JavaScript samples of the docs (docs/examples/js), run against the apps the pages describe:
// the private chat (docs/examples/private/private_chat.py) and, for short-lived tokens, the JWT test app.
import assert from "node:assert/strict";
import { register } from "node:module";
import { after, before, describe, test } from "node:test";

import { FEATURES, SocketClient } from "../../../fastapi_channels/static/channels.js";
import { next, startProxy, startServer, within } from "../support/harness.mjs";

register("../support/docs-hooks.mjs", import.meta.url);
const chat = await import("../../../docs/examples/js/chat.mjs");
const tokens = await import("../../../docs/examples/js/tokens.mjs");
const node = await import("../../../docs/examples/js/node.mjs");
const login = await import("../../../docs/examples/js/login.mjs");
const history = await import("../../../docs/examples/js/history.mjs");
const shim = await import("../support/ws-shim.mjs");

const PASSWORDS = { ann: "correct horse", bob: "battery staple", eve: "eavesdropper" };
let server;
let jwtServer;
let roomServer;
const clients = [];

function origin() {
  return `http://127.0.0.1:${server.port}`;
}

/** A token provider for `name`, logging in anew each time, as a page would. */
function tokenOf(name) {
  return () => login.logIn(name, PASSWORDS[name], origin());
}

/** A plain client of `name`, subscribed to `channel`. */
async function member(name, channel = "dm:ann.bob") {
  const client = new SocketClient(server.url(), { token: tokenOf(name), reconnect: false });
  clients.push(client);
  await client.connect();
  return { client, channel: await client.subscribe(channel) };
}

/** Collects what a sample shows; `wait(text)` resolves once it was shown. */
function screen() {
  const shown = [];
  const waiting = [];
  const show = (...parts) => {
    shown.push(parts.join(" "));
    for (const [text, resolve] of waiting) if (shown.includes(text)) resolve();
  };
  show.shown = shown;
  show.wait = (text) =>
    within(
      shown.includes(text) ? Promise.resolve() : new Promise((r) => waiting.push([text, r])),
      5000,
      `shown: ${text}`,
    );
  return show;
}

before(async () => {
  [server, jwtServer, roomServer] = await Promise.all([
    startServer(["--app", "docs.examples.private.private_chat:app"]),
    startServer(["--jwt"]),
    startServer(["--app", "docs.examples.presence_history:app"]),
  ]);
});

after(async () => {
  await Promise.all(clients.map((c) => c.disconnect()));
  await Promise.all([server.stop(), jwtServer.stop(), roomServer.stop()]);
});

describe("docs/clients.md", { timeout: 20000 }, () => {
  test("connect, subscribe, listen, emit, then leave", async () => {
    const bob = await member("bob");
    const heard = next(bob.channel, "message");
    const show = screen();
    const opened = await chat.openConversation(server.url(), tokenOf("ann"), show);
    clients.push(opened.client);
    assert.deepEqual(await heard, { author: "ann", text: "hello" });
    await show.wait("ann: hello");
    assert.equal(show.shown[0], "ann is typing");
    bob.channel.emit("message", { text: "hi ann" });
    await show.wait("bob: hi ann");
    await show.wait("a message from bob");
    await chat.leave(opened);
    assert.equal(opened.client.state, "disconnected");
    assert.equal(opened.client.hasSubscription("dm:ann.bob"), false);
  });

  test("the Envuso callback style, granted and refused", async () => {
    const { client } = await member("eve", "dm:bob.eve");
    const show = screen();
    chat.joinEnvusoStyle(client, "dm:ann.bob", show);
    await show.wait("refused: not authorised");
    const bob = await member("bob");
    const own = screen();
    chat.joinEnvusoStyle(bob.client, "dm:bob.eve", own);
    await next(bob.client, "channels:subscription", { accept: (c) => c.channel === "dm:bob.eve" });
    (await member("eve", "dm:bob.eve")).channel.emit("message", { text: "psst" });
    await own.wait("psst");
  });

  test("requests and replies", async () => {
    const ann = await member("ann");
    const answers = await chat.askAndSay(ann.client, ann.channel);
    assert.deepEqual(answers, {
      contacts: { bob: "dm:ann.bob", eve: "dm:ann.eve" },
      line: { author: "ann", text: "hi" },
      refused: "invalid-data",
    });
  });

  test("renewing the token in-band", async () => {
    const renewals = [];
    const client = tokens.renewingClient(server.url(), tokenOf("bob"), (text) => renewals.push(text));
    clients.push(client);
    await client.connect();
    const answer = await tokens.renewNow(client, await tokenOf("bob")());
    assert.equal(answer.successful, true);
    assert.ok(answer.expires_at > Date.now() / 1000 + 60);
    assert.equal(renewals.length, 2);
    assert.match(renewals[0], /^renewed until \d+$/);
  });

  test("reconnecting with a fresh token after the network drops", async (t) => {
    const proxy = await startProxy(server.port);
    t.after(() => proxy.close());
    const badges = [];
    const url = `ws://127.0.0.1:${proxy.port}/ws`;
    const client = await tokens.resilientClient(url, tokenOf("ann"), (state, delay) =>
      badges.push(delay === undefined ? state : `${state} in ${delay} ms`),
    );
    clients.push(client);
    const back = next(client, "channels:state", { accept: (s) => s.state === "connected" });
    proxy.drop();
    await back;
    assert.deepEqual(badges.slice(0, 2), ["connecting", "connected"]);
    assert.match(badges[2], /^re-connecting in [\d.]+ ms$/);
  });

  test("in Node, with another WebSocket implementation", async () => {
    const client = node.nodeClient(server.url(), await tokenOf("eve")());
    clients.push(client);
    await client.connect();
    const opened = shim.opened.map((url) => new URL(url));
    assert.deepEqual(
      opened.map((url) => `${url.origin}${url.pathname}`),
      [server.url()],
    );
    assert.equal(opened[0].searchParams.get("channels-features"), FEATURES.value);
    assert.deepEqual(await client.request("contacts"), { ann: "dm:ann.eve", bob: "dm:bob.eve" });
  });
});

describe("docs/authentication.md", { timeout: 20000 }, () => {
  test("log in over HTTP, then offer the token with the bearer marker", async (t) => {
    await assert.rejects(login.logIn("ann", "guess", origin()), /wrong name or password/);
    const token = await login.logIn("ann", "correct horse", origin());
    const socket = login.openSocket(token, origin());
    t.after(() => socket.close());
    const first = new Promise((resolve) => socket.addEventListener("message", resolve, { once: true }));
    const ready = JSON.parse((await within(first, 5000, "ready")).data);
    assert.equal(ready.event, "ready");
    assert.equal(socket.protocol, "bearer");
  });

  test("renewal by hand at three quarters of the token's life", async (t) => {
    const fresh = async () => (await jwtServer.post("/_test/token", { sub: "ann", lifetime: 2 })).token;
    const socket = new WebSocket(jwtServer.url(), await fresh());
    t.after(() => socket.close());
    const answers = [];
    const renewed = new Promise((resolve) => {
      socket.addEventListener("message", ({ data }) => {
        const packet = JSON.parse(data);
        answers.push(packet.event);
        if (packet.event === "channels:authenticate-response") resolve(packet.data);
      });
    });
    await within(new Promise((r) => socket.addEventListener("open", r, { once: true })), 5000, "open");
    login.scheduleRenewal(socket, socket.protocol, fresh);
    const answer = await within(renewed, 5000, "the renewal's answer");
    assert.equal(answer.successful, true);
    assert.deepEqual(answers, ["ready", "channels:authenticate-response"]);
  });
});

/** A client of the presence and history app, whose token is the user's name. */
async function roomClient(name) {
  const client = new SocketClient(roomServer.url(), {
    token: name,
    tokenTransport: "query",
    reconnect: false,
  });
  clients.push(client);
  await client.connect();
  return client;
}

/** Stands for a page's localStorage. */
function storage() {
  const items = new Map();
  return { getItem: (key) => items.get(key) ?? null, setItem: (key, value) => items.set(key, value) };
}

describe("docs/clients.md: history and presence", { timeout: 20000 }, () => {
  test("a page resumes from the position it kept, or reloads", async () => {
    const kept = storage();
    const seen = screen();
    const reloads = [];
    const bob = await (await roomClient("bob")).subscribe("room:1");
    const first = await roomClient("ann");
    await history.followRoom(first, (data) => seen(data.text), (name) => reloads.push(name), kept);
    bob.emit("message", { text: "one" });
    await seen.wait("one");
    await first.disconnect();
    bob.emit("message", { text: "two" });
    await next(bob, "message", { accept: (data) => data.text === "two" });

    const again = screen();
    const second = await roomClient("ann");
    const room = await history.followRoom(second, (d) => again(d.text), (n) => reloads.push(n), kept);
    await again.wait("two");
    assert.deepEqual(again.shown, ["two"]);
    assert.equal(room.recovered, true);
    assert.deepEqual(reloads, []);

    const lost = storage();
    lost.setItem("room-position", JSON.stringify({ offset: 1, epoch: "gone" }));
    const third = await roomClient("cy");
    const refused = await history.followRoom(third, () => {}, (name) => reloads.push(name), lost);
    assert.equal(refused.recovered, false);
    assert.deepEqual(reloads, ["room:1"]);
  });

  test("who is here, kept up to date", async () => {
    const toasts = [];
    const online = [];
    const ann = await roomClient("ann");
    const shown = new Promise((resolve) => {
      history.showWhoIsHere(ann, (text) => toasts.push(text), (members) => {
        online.push(members.map((m) => m.name).join(","));
        if (members.length === 2) resolve();
      });
    });
    await within(
      new Promise((resolve) => ann.on("channels:presence", resolve)),
      5000,
      "the member list",
    );
    await (await roomClient("bob")).subscribe("room:2");
    await within(shown, 5000, "bob online");
    assert.deepEqual(online, ["Ann", "Ann,Bob"]);
    assert.deepEqual(toasts, ["Bob is here"]);
  });
});
