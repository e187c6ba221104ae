// Token expiry and in-band renewal against an app that authenticates with real JWTs.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  RenewalError,
  SocketClient,
  jwtExpiry,
} from "../../../fastapi_channels/static/channels.js";
import { next, startServer } from "../support/harness.mjs";

let server;
const clients = [];

async function token(sub, lifetime = 60) {
  return (await server.post("/_test/token", { sub, lifetime })).token;
}

function client(options) {
  const made = new SocketClient(server.url(), { reconnect: { initialDelay: 20 }, ...options });
  clients.push(made);
  return made;
}

before(async () => {
  server = await startServer(["--jwt"]);
});

after(async () => {
  await Promise.all(clients.map((c) => c.disconnect()));
  await server.stop();
});

describe("tokens", { timeout: 20000 }, () => {
  test("renew() swaps the token on the live connection", async () => {
    let calls = 0;
    const c = client({ token: () => token("ann", 30 + ++calls) });
    await c.connect();
    const id = c.id;
    const renewed = next(c, "channels:renewal");
    const answer = await c.renew();
    assert.equal(answer.successful, true);
    assert.equal((await renewed).expiresAt, answer.expires_at);
    assert.equal(calls, 2, "the provider gave the renewal a fresh token");
    c.emit("whoami");
    assert.deepEqual(await next(c, "whoami"), { user: "ann", expires_at: answer.expires_at });
    assert.equal(c.id, id, "no reconnect");
  });

  test("a renewal the server refuses rejects and the connection goes on", async () => {
    const c = client({ token: await token("ann") });
    await c.connect();
    const error = await c.renew(await token("bob")).catch((e) => e);
    assert.ok(error instanceof RenewalError);
    assert.equal(error.reason, "authentication failed"); // generic on purpose
    c.emit("whoami");
    assert.equal((await next(c, "whoami")).user, "ann");
  });

  test("renewBefore renews on its own before the token expires", async () => {
    let calls = 0;
    const c = client({ token: () => (calls++, token("cy", 2)), renewBefore: 1500 });
    await c.connect();
    const id = c.id;
    const first = await next(c, "channels:renewal");
    const second = await next(c, "channels:renewal");
    assert.ok(first.successful && second.successful);
    assert.ok(second.expiresAt >= first.expiresAt);
    assert.equal(c.id, id, "no reconnect");
    assert.equal(calls, 3);
  });

  test("an expired token closes with 4001; the provider's fresh token reconnects", async () => {
    const c = client({ token: () => token("dee", 2) });
    await c.connect();
    const firstId = c.id;
    const lost = next(c, "channels:state", { accept: (s) => s.state === "re-connecting" });
    const back = next(c, "channels:state", {
      accept: (s) => s.state === "connected" && c.id !== firstId,
      timeout: 8000,
    });
    const state = await lost;
    assert.equal(state.code, 4001);
    assert.equal(state.reason, "token expired");
    await back;
  });

  test("jwtExpiry reads exp and ignores anything else", async () => {
    const issued = await token("eve", 100);
    assert.ok(Math.abs(jwtExpiry(issued) - (Date.now() / 1000 + 100)) < 5);
    assert.equal(jwtExpiry("user-alice"), null);
    assert.equal(jwtExpiry("a.b.c"), null);
    assert.equal(jwtExpiry(null), null);
  });
});
