// A browser page logs in over HTTP, then opens a websocket with the token (no client library).
// docs/authentication.md includes its sections; clients/js/test/docs.test.mjs runs each of them.

// --8<-- [start:login]
export async function logIn(username, password, origin = location.origin) {
  const response = await fetch(`${origin}/login`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username, password }),
  });
  if (!response.ok) throw new Error("wrong name or password");
  return (await response.json()).access_token;
}

export function openSocket(token, origin = location.origin) {
  const url = `${origin.replace(/^http/, "ws")}/ws`;
  // The Envuso client offers the token alone: new WebSocket(url, token), echoed back.
  // Offering ["bearer", token] keeps the token out of the handshake response.
  return new WebSocket(url, ["bearer", token]);
}
// --8<-- [end:login]

// --8<-- [start:renew]
export function scheduleRenewal(socket, token, fetchFreshToken) {
  let timer;
  const schedule = (current) => {
    const claims = current.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const { exp } = JSON.parse(atob(claims));
    const delay = (exp * 1000 - Date.now()) * 0.75; // at three quarters of the lifetime
    timer = setTimeout(async () => {
      const fresh = await fetchFreshToken(); // e.g. POST /login, or a refresh route
      socket.send(JSON.stringify({ event: "channels:authenticate", data: { token: fresh } }));
      schedule(fresh);
    }, delay);
  };
  schedule(token);
  socket.addEventListener("close", () => clearTimeout(timer));
}
// --8<-- [end:renew]
