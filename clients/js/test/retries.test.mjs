// Requests with retries against a real server (tests/client_app.py): after `outcome-unknown`
// the client sends the same idempotency key again, and subscribers get the message once.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { ReplyError, SocketClient } from "../../../fastapi_channels/static/channels.js";
import { next, startServer } from "../support/harness.mjs";

let server;
const clients = [];

function client() {
  const made = new SocketClient(server.url("/ws"), { reconnect: false });
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

describe("request with retries", { timeout: 20000 }, () => {
  test("sends the same key again and the message is delivered once", async () => {
    const sender = client();
    const watcher = client();
    await Promise.all([sender.connect(), watcher.connect()]);
    const room = await sender.subscribe("public:js-retry");
    const seen = await watcher.subscribe("public:js-retry");
    const said = [];
    seen.on("said", (data) => said.push(data));
    const first = next(seen, "said");
    const answer = await room.request("say-flaky", "once", { retries: 2, retryDelay: 10 });
    assert.match(answer.key, /^[0-9a-f]{32}$/);
    assert.equal(answer.attempts, 2);
    assert.equal(await first, "once");
    const fence = next(seen, "said", { accept: (data) => data === "fence" });
    await room.request("say", "fence");
    await fence;
    assert.deepEqual(said, ["once", "fence"]);
  });

  test("uses the key given, and without retries rejects with outcome-unknown", async () => {
    const c = client();
    await c.connect();
    const room = await c.subscribe("public:js-retry-key");
    const answer = await room.request("say-flaky", 1, { key: "js-key", retries: 1, retryDelay: 10 });
    assert.deepEqual(answer, { key: "js-key", attempts: 2 });
    const error = await room.request("say-flaky", 1, { key: "js-once" }).catch((e) => e);
    assert.ok(error instanceof ReplyError);
    assert.equal(error.code, "outcome-unknown");
  });
});
