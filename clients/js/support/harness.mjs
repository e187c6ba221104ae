// Test support: a real fastapi_channels server in a child process, a TCP proxy that can drop
// connections, and waits that always time out.
import { spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync } from "node:fs";
import net from "node:net";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL(".", import.meta.url));
const venvPython = fileURLToPath(new URL("../../../.venv/bin/python", import.meta.url));
/** The interpreter of the test server: $PYTHON, else the project's .venv, else python3. */
const PYTHON = process.env.PYTHON || (existsSync(venvPython) ? venvPython : "python3");

/** Reject with a clear message when `promise` takes longer than `ms`. */
export function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Resolve with the data of the next `event` on `target` (client or channel) for which
 * `accept(data)` holds. */
export function next(target, event, { accept = () => true, timeout = 5000 } = {}) {
  let listener;
  const promise = new Promise((resolve) => {
    listener = (data) => {
      if (accept(data)) {
        target.off(event, listener);
        resolve(data);
      }
    };
    target.on(event, listener);
  });
  return within(promise, timeout, `event ${event}`).finally(() => target.off(event, listener));
}

/** Start `tests/client_app.py` on a free loopback port; `args` go to support/server.py
 * (`--max-connections N`, `--max-connections-per-user N`). */
export async function startServer(args = []) {
  const child = spawn(PYTHON, [`${here}server.py`, ...args], {
    stdio: ["pipe", "pipe", "inherit"],
  });
  const lines = createInterface({ input: child.stdout });
  const exited = once(child, "exit").then(([code]) => {
    throw new Error(`the test server exited with ${code} (PYTHON=${PYTHON})`);
  });
  exited.catch(() => {});
  const [line] = await within(Promise.race([once(lines, "line"), exited]), 20000, "server start");
  const { port } = JSON.parse(line);
  return {
    port,
    url: (path = "/ws", p = port) => `ws://127.0.0.1:${p}${path}`,
    async post(path, body) {
      const response = await fetch(`http://127.0.0.1:${port}${path}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      if (!response.ok) throw new Error(`POST ${path}: ${response.status}`);
      return response.json();
    },
    async get(path, headers = {}) {
      return fetch(`http://127.0.0.1:${port}${path}`, { headers });
    },
    async stop() {
      if (child.exitCode !== null) return;
      const gone = once(child, "exit");
      child.stdin.end();
      await within(gone, 10000, "server stop").catch(() => child.kill("SIGKILL"));
    },
  };
}

/** A TCP proxy to `port`; `drop()` cuts every connection without a close frame, and `down`
 * refuses new ones. */
export async function startProxy(port) {
  const sockets = new Set();
  const server = net.createServer((inbound) => {
    if (proxy.down) {
      inbound.resetAndDestroy();
      return;
    }
    const outbound = net.connect(port, "127.0.0.1");
    for (const socket of [inbound, outbound]) {
      sockets.add(socket);
      socket.on("close", () => sockets.delete(socket));
      socket.on("error", () => {});
    }
    inbound.pipe(outbound);
    outbound.pipe(inbound);
    inbound.on("close", () => outbound.destroy());
    outbound.on("close", () => inbound.destroy());
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const proxy = {
    /** While true, new connections are cut at once, as if the server were unreachable. */
    down: false,
    port: server.address().port,
    get connections() {
      return sockets.size / 2;
    },
    drop() {
      for (const socket of sockets) socket.resetAndDestroy?.() ?? socket.destroy();
    },
    async close() {
      this.drop();
      server.close();
    },
  };
  return proxy;
}

/** A loopback port nothing listens on (it was free a moment ago). */
export async function closedPort() {
  const server = net.createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address();
  server.close();
  await once(server, "close");
  return port;
}
