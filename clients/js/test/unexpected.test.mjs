// What the server cannot be made to send: the client meets it through an injected WebSocket.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { ConnectionStatus, SocketClient } from "../../../fastapi_channels/static/channels.js";
import { next } from "../support/harness.mjs";

/** A stand-in for the standard WebSocket; the test plays the server through it. */
class FakeSocket {
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = 0;
    this.sent = [];
  }
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  receive(text) {
    this.onmessage?.({ data: text });
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close(code = 1005, reason = "") {
    this.readyState = 3;
    const event = { code, reason, wasClean: true };
    this.onclose?.(event);
    for (const listener of this.closeListeners ?? []) listener(event);
  }
  addEventListener(type, listener) {
    if (type === "close") (this.closeListeners ??= []).push(listener);
  }
}

/** The client's socket, once its connection attempt created one (a few microtasks). */
/** One turn of the event loop: timers set before it (0 ms) have run. */
function turn() {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

async function socketOf(client) {
  for (let i = 0; i < 100 && client.getWs() === null; i++) await Promise.resolve();
  assert.ok(client.getWs() instanceof FakeSocket, "no socket was created");
  return client.getWs();
}

/** A client past `ready` on a fake socket, and its warnings. */
async function readyClient() {
  const { client, warnings, connecting } = connectedClient();
  const socket = await socketOf(client);
  socket.open();
  socket.receive('{"event": "ready", "data": {"id": "y"}}');
  await connecting;
  return { client, warnings, socket };
}

const GRANTED = '{"event": "subscribe-channel-response", "data": {"channel": "room", "successful": true}}';

function connectedClient() {
  const client = new SocketClient("ws://fake/ws", { WebSocket: FakeSocket, reconnect: false });
  const warnings = [];
  client.on("channels:warning", (warning) => warnings.push(warning.message));
  const connecting = client.connect();
  return { client, warnings, connecting };
}

describe("unexpected packets", { timeout: 10000 }, () => {
  test("are reported as warnings and never thrown", async () => {
    const { client, warnings, connecting } = connectedClient();
    const socket = await socketOf(client);
    socket.open();
    socket.receive("not json");
    socket.receive('{"event": "hello"}');
    socket.receive("[1, 2]");
    socket.receive('{"event": "ready", "data": {"id": "x"}}');
    await connecting;
    socket.receive('{"event": "said", "channel": "nowhere", "data": 1}');
    socket.receive('{"event": "subscribe-channel-response", "data": {"channel": "nowhere"}}');
    socket.receive('{"event": "channels:reply", "id": 99, "data": 1}');
    socket.receive('{"event": "ping"}');
    assert.deepEqual(warnings, [
      "frame is not JSON",
      '"hello" received before ready',
      "frame is not a packet",
      'event "said" for channel nowhere, not subscribed',
      "subscription response for unknown channel nowhere",
      "reply to unknown request 99",
    ]);
    assert.deepEqual(socket.sent, [{ event: "pong", data: {} }]);
    assert.equal(client.state, ConnectionStatus.CONNECTED);
  });

  test("a channel event without a listener is a warning, unlike Envuso's throw", async () => {
    const { client, warnings, socket } = await readyClient();
    const subscribed = client.subscribe("room");
    assert.deepEqual(socket.sent.at(-1), {
      event: "subscribe-channel-request",
      data: { channel: "room" },
    });
    socket.receive(GRANTED);
    await subscribed;
    socket.receive('{"event": "unheard", "channel": "room", "data": null}');
    await turn(); // events are held for one turn after the subscription (see below)
    assert.deepEqual(warnings, ['no listener for "unheard" on channel room']);
  });

  test("events read with the subscription answer reach listeners added after await", async () => {
    const { client, warnings, socket } = await readyClient();
    const subscribed = client.subscribe("room");
    // the answer and two events in one read, before the awaiting code runs
    socket.receive(GRANTED);
    socket.receive('{"event": "message", "channel": "room", "data": 1}');
    socket.receive('{"event": "message", "channel": "room", "data": 2}');
    const room = await subscribed;
    const got = [];
    room.listen("message", (data) => got.push(data));
    await turn();
    assert.deepEqual(got, [1, 2]);
    socket.receive('{"event": "message", "channel": "room", "data": 3}');
    assert.deepEqual(got, [1, 2, 3]); // then delivered at once again
    assert.deepEqual(warnings, []);
  });

  test("disconnect() while the handshake is pending resolves and stops", async () => {
    const client = new SocketClient("ws://fake/ws", { WebSocket: FakeSocket });
    const connecting = client.connect({ retry: true });
    await socketOf(client);
    const stopped = next(client, "channels:state", { accept: (s) => s.state === "disconnected" });
    await client.disconnect();
    await stopped;
    await assert.rejects(connecting);
    assert.equal(client.state, ConnectionStatus.DISCONNECTED);
  });
});

describe("subscriptions nobody awaits", { timeout: 10000 }, () => {
  test("a refusal is an event, not an unhandled rejection", async () => {
    const { client, connecting } = connectedClient();
    const socket = await socketOf(client);
    socket.open();
    socket.receive('{"event": "ready", "data": {"id": "z"}}');
    await connecting;
    let unhandled = null;
    const onUnhandled = (reason) => (unhandled = reason);
    process.on("unhandledRejection", onUnhandled);
    try {
      const answer = next(client, "channels:subscription");
      client.subscribe("secret"); // Envuso's style: no callback, promise ignored
      socket.receive(
        '{"event": "subscribe-channel-response", "data": {"channel": "secret", "successful": false, "reason": "no"}}',
      );
      assert.deepEqual(await answer, {
        channel: "secret",
        successful: false,
        reason: "no",
        resubscribed: false,
      });
      await new Promise((resolve) => setImmediate(resolve)); // let rejection tracking run
      assert.equal(unhandled, null);
    } finally {
      process.off("unhandledRejection", onUnhandled);
    }
  });
});
