// The JavaScript client in a page of the private chat (docs/examples/private/private_chat.py).
// docs/clients.md includes its sections; clients/js/test/docs.test.mjs runs each of them.

// --8<-- [start:connect]
import { ReplyError, SocketClient } from "/ws/client.js";

export async function openConversation(url, getToken, show) {
  const client = new SocketClient(url).usingJwt(getToken); // asked before every connection
  await client.connect();

  const chat = await client.subscribe("dm:ann.bob"); // rejects with SubscriptionError if refused
  chat.listen("message", (line) => show(`${line.author}: ${line.text}`)); // several per event
  chat.once("typing", ({ author }) => show(`${author} is typing`)); // the next one only
  client.on("notification", (data, packet) => show(`a message from ${data.from}`)); // plain events

  chat.emit("typing");
  chat.emit("message", { text: "hello" });
  return { client, chat };
}

export async function leave({ client, chat }) {
  chat.unsubscribe();
  await client.disconnect();
}
// --8<-- [end:connect]

// --8<-- [start:callback]
export function joinEnvusoStyle(client, name, show) {
  client.subscribe(name, (error, channel) => {
    if (error) return show(`refused: ${error.reason}`);
    channel.listen("message", (line) => show(line.text));
  });
}
// --8<-- [end:callback]

// --8<-- [start:requests]
export async function askAndSay(client, chat) {
  const contacts = await client.request("contacts", null, { timeout: 5000 }); // a plain event
  const line = await chat.request("message", { text: "hi" }); // as a channel event
  const refused = await chat.request("message", { text: "" }).catch((error) => {
    if (error instanceof ReplyError) return error.code; // "invalid-data": the handler did not run
    throw error;
  });
  return { contacts, line, refused };
}
// --8<-- [end:requests]
