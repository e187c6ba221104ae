// Tokens with the JavaScript client: renewal in-band, reconnecting with a fresh token.
// docs/clients.md includes its sections; clients/js/test/docs.test.mjs runs each of them.
import { SocketClient } from "/ws/client.js";

// --8<-- [start:renewal]
export function renewingClient(url, getToken, onRenewal) {
  const client = new SocketClient(url, {
    token: getToken, // called again for each renewal
    renewBefore: 60_000, // renew a minute before the token's exp
  });
  client.on("channels:renewal", ({ successful, reason, expiresAt }) => {
    onRenewal(successful ? `renewed until ${expiresAt}` : `renewal refused: ${reason}`);
  });
  return client;
}

export async function renewNow(client, someToken) {
  await client.renew(); // now, with a fresh token from the provider
  return client.renew(someToken); // or with this one: resolves with {successful, expires_at}
}
// --8<-- [end:renewal]

// --8<-- [start:reconnect]
export async function resilientClient(url, getToken, showBadge) {
  const client = new SocketClient(url, {
    token: getToken,
    reconnect: { initialDelay: 1000, maxDelay: 30000, factor: 2, jitter: 0.5 },
  });
  client.on("channels:state", ({ state, delay }) => showBadge(state, delay));
  await client.connect({ retry: true }); // keep trying until the server is reachable
  return client;
}
// --8<-- [end:reconnect]
