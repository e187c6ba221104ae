// The JavaScript client in Node with another WebSocket implementation (docs/clients.md).
// clients/js/test/docs.test.mjs runs it.

// --8<-- [start:node]
import WebSocket from "ws"; // the npm package, or any implementation of the standard API
import { SocketClient } from "./channels.js"; // fastapi_channels/static/channels.js, copied

export function nodeClient(url, token) {
  return new SocketClient(url, { WebSocket, token });
}
// --8<-- [end:node]
