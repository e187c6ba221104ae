// The demo chat page. Everything goes through the JavaScript client the app serves itself.
//
// - log in: POST /login {username} answers {token}; the token opens the websocket;
// - global-chat: the room, with "message", "typing" and "announcement" events;
// - chat:user.<me>: my inbox. A direct message is a request on it, {to, text}: the server
//   delivers it to the recipient's inbox and echoes it to mine;
// - "typing": a plain event, {} for the room or {to} for a private chat.
import { SocketClient } from "/ws/client.js";

const $ = (id) => document.getElementById(id);
const ROOM = "global-chat";
const TYPING_EVERY = 2000; // ms between two "typing" events while typing in one conversation
const TYPING_SHOWN = 3500; // ms a "typing" notice stays up without a new one

let me = null;
let client = null;
let room = null;
let inbox = null;
let active = null;
const conversations = new Map(); // "room" or "@<name>" -> conversation

// ---- logging in ------------------------------------------------------------------------------

async function fetchToken(name) {
  let response;
  try {
    response = await fetch("/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username: name }),
    });
  } catch {
    // Not a TypeError: the client would take that for a bug and stop reconnecting.
    throw new Error("the server cannot be reached");
  }
  if (response.status === 422) throw new Error("use 1 to 24 lower-case letters, digits, - or _");
  if (!response.ok) throw new Error(`login failed (HTTP ${response.status})`);
  return (await response.json()).token;
}

$("login-name").value = sessionStorage.getItem("demo-name") ?? "";

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = $("login-name").value.trim().toLowerCase();
  const button = event.submitter ?? $("login").querySelector("button");
  button.disabled = true;
  let token;
  try {
    token = await fetchToken(name);
  } catch (error) {
    $("login-error").textContent = `Cannot log in: ${error.message}.`;
    $("login-error").hidden = false;
    button.disabled = false;
    return;
  }
  start(name, token).catch((error) => note(conversation("room"), `Cannot chat: ${error.message}`));
});

async function start(name, firstToken) {
  me = name;
  sessionStorage.setItem("demo-name", name);
  $("login-view").hidden = true;
  $("chat-view").hidden = false;
  $("me").hidden = false;
  $("me-name").textContent = name;
  $("logout").hidden = false;
  select(conversation("room"));

  // --8<-- [start:connect]
  // The first attempt uses the token just fetched; reconnects and renewals log in again. (This
  // login needs no password; a real app would use a refresh token or a session here.)
  let token = firstToken;
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
  client = new SocketClient(url, {
    token: async () => {
      const next = token ?? (await fetchToken(name));
      token = null;
      return next;
    },
    renewBefore: 5 * 60_000, // renew in-band five minutes before the token expires
  });
  client.on("channels:state", showState);
  client.on("channels:subscription", ({ channel, successful, reason }) => {
    if (!successful) note(conversation("room"), `${channel} refused: ${reason}`);
  });

  await client.connect({ retry: true });
  [room, inbox] = await Promise.all([client.subscribe(ROOM), client.subscribe(`chat:user.${me}`)]);
  room.listen("message", ({ from, text }) => {
    meet(from);
    stopTyping(conversation("room"), from);
    line(conversation("room"), from, text);
  });
  room.listen("announcement", ({ text }) => announce(conversation("room"), text));
  room.listen("typing", ({ from }) => {
    meet(from);
    typing(conversation("room"), from);
  });
  inbox.listen("message", ({ from, to, text }) => {
    const chat = conversation(`@${from === me ? to : from}`);
    stopTyping(chat, from);
    line(chat, from, text);
  });
  inbox.listen("typing", ({ from }) => typing(conversation(`@${from}`), from));
  // --8<-- [end:connect]
  window.chatClient = client; // for poking at it from the console
  enableSending();
  note(conversation("room"), `You are ${me}. Say hello!`);
}

$("logout").addEventListener("click", async () => {
  sessionStorage.removeItem("demo-name");
  await client?.disconnect();
  location.reload();
});

function showState({ state, delay, reason }) {
  const badge = $("state");
  badge.dataset.state = state;
  if (state === "re-connecting" && delay !== undefined) {
    badge.textContent = `reconnecting in ${Math.ceil(delay / 1000)} s`;
  } else if (state === "disconnected" && reason) {
    badge.textContent = `disconnected: ${reason}`;
  } else {
    badge.textContent = state;
  }
  enableSending();
}

/** Sending needs a connection and both channels (subscribed again on their own after a loss). */
function enableSending() {
  $("send-button").disabled = client.state !== "connected" || inbox === null;
}

// ---- conversations ---------------------------------------------------------------------------

/** The conversation `key` ("room" or "@<name>"), created with its pane and list entry. */
function conversation(key) {
  let found = conversations.get(key);
  if (found) return found;
  const peer = key === "room" ? null : key.slice(1);
  const title = peer ?? `# ${ROOM}`;
  const log = document.createElement("ol");
  log.className = "log";
  log.setAttribute("role", "log");
  log.setAttribute("aria-label", peer ? `Messages with ${peer}` : `Messages in ${ROOM}`);
  log.dataset.conversation = key;
  log.hidden = true;
  $("panes").append(log);

  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "conversation-button";
  button.dataset.conversation = key;
  const label = document.createElement("span");
  label.className = "name";
  label.textContent = title;
  const badge = document.createElement("span");
  badge.className = "badge";
  badge.hidden = true;
  button.append(label, badge);
  item.append(button);
  (peer ? $("people") : $("rooms")).append(item);
  if (peer) $("nobody").hidden = true;

  found = { key, peer, title, log, button, badge, unread: 0, typers: new Map(), lastTyping: 0 };
  button.addEventListener("click", () => select(found));
  conversations.set(key, found);
  mark(found);
  return found;
}

/** Show a conversation's unread count and whether someone types in it, in its list entry. */
function mark(chat) {
  const typing = chat.typers.size > 0;
  chat.badge.textContent = String(chat.unread);
  chat.badge.hidden = chat.unread === 0;
  chat.button.classList.toggle("has-unread", chat.unread > 0);
  chat.button.classList.toggle("is-typing", typing);
  const extra = [chat.unread ? `${chat.unread} unread` : "", typing ? "typing" : ""];
  chat.button.setAttribute("aria-label", [chat.title, ...extra.filter(Boolean)].join(", "));
}

/** Put `name` (someone seen in the room) in the list of people to chat with. */
function meet(name) {
  if (name !== me) conversation(`@${name}`);
}

function select(chat) {
  active?.log.setAttribute("hidden", "");
  active?.button.removeAttribute("aria-current");
  active = chat;
  chat.log.hidden = false;
  chat.button.setAttribute("aria-current", "page");
  chat.unread = 0;
  mark(chat);
  $("conversation-title").textContent = chat.peer ? `Private chat with ${chat.peer}` : chat.title;
  $("text").placeholder = chat.peer ? `Message ${chat.peer}` : `Message ${ROOM}`;
  chat.log.lastElementChild?.scrollIntoView({ block: "end" });
  showTyping();
}

function add(chat, item) {
  const time = document.createElement("time");
  const now = new Date();
  time.dateTime = now.toISOString();
  time.textContent = now.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  item.append(time);
  chat.log.append(item);
  if (chat === active) {
    item.scrollIntoView({ block: "end" });
  } else if (!item.classList.contains("notice")) {
    chat.unread += 1;
    mark(chat);
  }
}

function line(chat, from, text) {
  const item = document.createElement("li");
  item.className = from === me ? "line mine" : "line";
  const who = document.createElement("span");
  who.className = "from";
  who.textContent = from === me ? "you" : from;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  item.append(who, body);
  add(chat, item);
}

function announce(chat, text) {
  const item = document.createElement("li");
  item.className = "announcement";
  const label = document.createElement("strong");
  label.textContent = "Announcement ";
  item.append(label, text);
  add(chat, item);
}

function note(chat, text) {
  const item = document.createElement("li");
  item.className = "notice";
  item.textContent = text;
  add(chat, item);
}

$("open-chat").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("open-name");
  input.value = input.value.trim().toLowerCase();
  if (!input.reportValidity() || input.value === me) return;
  const name = input.value;
  select(conversation(`@${name}`));
  input.value = "";
  $("text").focus();
});

// ---- sending ---------------------------------------------------------------------------------

// --8<-- [start:send]
$("send").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("text").value.trim();
  if (!text) return;
  const chat = active;
  try {
    // A request: the server replies {delivered: true}, or refuses (e.g. invalid data). What
    // was said comes back as an event like everyone else's, so it is not shown here.
    if (chat.peer) await inbox.request("message", { to: chat.peer, text }, { timeout: 5000 });
    else await room.request("message", { text }, { timeout: 5000 });
    if ($("text").value.trim() === text) $("text").value = "";
    chat.lastTyping = 0;
  } catch (error) {
    note(chat, `Not sent: ${error.message}`);
  }
});

$("text").addEventListener("input", () => {
  const chat = active;
  if (!$("text").value || client?.state !== "connected") return;
  if (Date.now() - chat.lastTyping < TYPING_EVERY) return;
  chat.lastTyping = Date.now();
  client.emit("typing", chat.peer ? { to: chat.peer } : {});
});
// --8<-- [end:send]

// ---- typing indicator ------------------------------------------------------------------------

function typing(chat, from) {
  if (from === me) return;
  clearTimeout(chat.typers.get(from));
  chat.typers.set(
    from,
    setTimeout(() => stopTyping(chat, from), TYPING_SHOWN),
  );
  mark(chat);
  if (chat === active) showTyping();
}

function stopTyping(chat, from) {
  if (!chat.typers.has(from)) return;
  clearTimeout(chat.typers.get(from));
  chat.typers.delete(from);
  mark(chat);
  if (chat === active) showTyping();
}

function showTyping() {
  const names = [...active.typers.keys()];
  $("typing").textContent =
    names.length === 0
      ? ""
      : names.length === 1
        ? `${names[0]} is typing…`
        : names.length === 2
          ? `${names[0]} and ${names[1]} are typing…`
          : `${names.length} people are typing…`;
}
