// The demo chat page. Everything goes through the JavaScript client the app serves itself.
//
// - log in: POST /login {username} answers {token}; the token opens the websocket;
// - global-chat: the room, with "message", "typing" and "announcement" events;
// - chat:user.<me>: my inbox. A direct message is a request on it, {to, text}: the server
//   delivers it to the recipient's inbox and echoes it to mine;
// - "typing": a plain event, {} for the room or {to} for a private chat;
// - both channels keep their recent messages (history): the page loads them over HTTP, then
//   subscribes from there, and after a reconnect the server replays what it missed;
// - the room is a presence channel: its members are who is online.
import { SocketClient } from "/ws/client.js";

const $ = (id) => document.getElementById(id);
const ROOM = "global-chat";
const INBOX = () => `chat:user.${me}`;
const TYPING_EVERY = 2000; // ms between two "typing" events while typing in one conversation
const TYPING_SHOWN = 3500; // ms a "typing" notice stays up without a new one

let me = null;
let token = null; // the latest token, for HTTP requests too
let client = null;
let room = null;
let inbox = null;
let active = null;
const conversations = new Map(); // "room" or "@<name>" -> conversation
const shown = new Set(); // "<channel>@<epoch>:<offset>" of every kept event shown

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
  let first;
  try {
    first = await fetchToken(name);
  } catch (error) {
    $("login-error").textContent = `Cannot log in: ${error.message}.`;
    $("login-error").hidden = false;
    button.disabled = false;
    return;
  }
  start(name, first).catch((error) => note(conversation("room"), `Cannot chat: ${error.message}`));
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
  // The token is fetched again for every connection attempt after the first and for renewals.
  // (This login needs no password; a real app would use a refresh token or a session here.)
  token = firstToken;
  let offered = false;
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
  client = new SocketClient(url, {
    token: async () => {
      if (offered) token = await fetchToken(name);
      offered = true;
      return token;
    },
    renewBefore: 5 * 60_000, // renew in-band five minutes before the token expires
  });
  client.on("channels:state", showState);
  client.on("channels:subscription", ({ channel, successful, reason, recovered }) => {
    if (!successful) note(conversation("room"), `${channel} refused: ${reason}`);
    // After a reconnect the client asks for what was missed; if that is no longer kept,
    // start again from what the server keeps now.
    else if (recovered === false) reload(channel).catch((error) => note(active, error.message));
  });

  // What the room and my inbox keep, then everything after it: nothing missed, nothing twice.
  const since = { [ROOM]: await load(ROOM), [INBOX()]: await load(INBOX()) };
  await client.connect({ retry: true });
  [room, inbox] = await Promise.all(
    [ROOM, INBOX()].map((channel) => client.subscribe(channel, { since: since[channel] })),
  );
  room.listen("message", (data, packet) => show(ROOM, packet));
  room.listen("announcement", (data, packet) => show(ROOM, packet));
  room.listen("typing", ({ from }) => {
    meet(from);
    typing(conversation("room"), from);
  });
  for (const event of ["channels:presence", "channels:join", "channels:leave"]) {
    room.listen(event, showOnline);
  }
  inbox.listen("message", (data, packet) => show(INBOX(), packet));
  inbox.listen("typing", ({ from }) => typing(conversation(`@${from}`), from));
  // --8<-- [end:connect]
  window.chatClient = client; // for poking at it from the console
  showOnline();
  enableSending();
  note(conversation("room"), `You are ${me}. Say hello!`);
}

/** What `channel` keeps, shown (once); returns the position to subscribe from. */
async function load(channel) {
  const response = await fetch(`/history/${channel}`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  if (!response.ok) throw new Error(`cannot load ${channel} (HTTP ${response.status})`);
  const { position, messages } = await response.json();
  for (const packet of messages) show(channel, packet, { live: false });
  return position;
}

/** Some messages were missed and are no longer kept: show what is kept now instead. */
async function reload(channel) {
  const inRoom = channel === ROOM;
  for (const chat of conversations.values()) {
    if ((chat.peer === null) === inRoom) chat.log.replaceChildren();
  }
  for (const key of shown) if (key.startsWith(`${channel}@`)) shown.delete(key);
  await load(channel);
  note(conversation("room"), "Some messages were missed; this is what the server keeps.");
}

/** Show a kept event of the room or the inbox, unless it was shown already. */
function show(channel, { event, data, position }, { live = true } = {}) {
  const key = position ? `${channel}@${position.epoch}:${position.offset}` : null;
  if (shown.has(key)) return;
  if (key) shown.add(key);
  const when = { at: new Date(data.at), live };
  if (event === "announcement") return announce(conversation("room"), data.text, when);
  const peer = data.from === me ? data.to : data.from;
  const chat = conversation(channel === ROOM ? "room" : `@${peer}`);
  if (channel === ROOM) meet(data.from);
  stopTyping(chat, data.from);
  line(chat, data.from, data.text, when);
}

$("logout").addEventListener("click", async () => {
  sessionStorage.removeItem("demo-name");
  await client?.disconnect();
  location.reload();
});

function showState({ state, delay, reason }) {
  const badge = $("state");
  badge.dataset.state = state;
  document.body.dataset.state = state; // who is online is not known while disconnected
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
  const dot = document.createElement("span");
  dot.className = "dot";
  dot.hidden = !peer;
  const label = document.createElement("span");
  label.className = "name";
  label.textContent = title;
  const badge = document.createElement("span");
  badge.className = "badge";
  badge.hidden = true;
  button.append(dot, label, badge);
  item.append(button);
  (peer ? $("people") : $("rooms")).append(item);
  if (peer) $("nobody").hidden = true;

  found = { key, peer, title, log, button, badge, unread: 0, online: false, typers: new Map() };
  found.lastTyping = 0;
  button.addEventListener("click", () => select(found));
  conversations.set(key, found);
  mark(found);
  return found;
}

/** Show in a conversation's list entry: online or not, unread count, someone typing. */
function mark(chat) {
  const typing = chat.typers.size > 0;
  chat.badge.textContent = String(chat.unread);
  chat.badge.hidden = chat.unread === 0;
  chat.button.classList.toggle("online", chat.online);
  chat.button.classList.toggle("has-unread", chat.unread > 0);
  chat.button.classList.toggle("is-typing", typing);
  const label = [chat.title];
  if (chat.peer) label.push(chat.online ? "online" : "offline");
  if (chat.unread) label.push(`${chat.unread} unread`);
  if (typing) label.push("typing");
  chat.button.setAttribute("aria-label", label.join(", "));
}

/** Put `name` (someone seen in the room) in the list of people to chat with. */
function meet(name) {
  if (name !== me) conversation(`@${name}`);
}

/** Who is online, from the room's member list: online people first, then the others. */
function showOnline() {
  const online = room?.members ?? new Map();
  for (const id of online.keys()) meet(String(id));
  const people = [...conversations.values()].filter((chat) => chat.peer !== null);
  for (const chat of people) {
    chat.online = online.has(chat.peer);
    mark(chat);
  }
  people.sort((a, b) => b.online - a.online || a.peer.localeCompare(b.peer));
  for (const chat of people) $("people").append(chat.button.parentElement);
  $("online-count").textContent = online.size ? `· ${online.size} online` : "";
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

/** Add `item` to a conversation; `at` is when it was said, `live` whether it counts as unread. */
function add(chat, item, { at = new Date(), live = true } = {}) {
  const time = document.createElement("time");
  time.dateTime = at.toISOString();
  time.textContent = at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  item.append(time);
  chat.log.append(item);
  if (chat === active) {
    item.scrollIntoView({ block: "end" });
  } else if (live && !item.classList.contains("notice")) {
    chat.unread += 1;
    mark(chat);
  }
}

function line(chat, from, text, when) {
  const item = document.createElement("li");
  item.className = from === me ? "line mine" : "line";
  const who = document.createElement("span");
  who.className = "from";
  who.textContent = from === me ? "you" : from;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  item.append(who, body);
  add(chat, item, when);
}

function announce(chat, text, when) {
  const item = document.createElement("li");
  item.className = "announcement";
  const label = document.createElement("strong");
  label.textContent = "Announcement ";
  item.append(label, text);
  add(chat, item, when);
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
