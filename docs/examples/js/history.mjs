// History and presence channels with the JavaScript client (docs/clients.md), against
// docs/examples/presence_history.py; clients/js/test/docs.test.mjs runs each section.

// --8<-- [start:recover]
export async function followRoom(client, render, reloadFromServer, storage = localStorage) {
  client.on("channels:subscription", ({ channel, recovered }) => {
    if (recovered === false) reloadFromServer(channel);
  });
  // resume from a position kept across page loads
  const kept = storage.getItem("room-position");
  const since = kept ? JSON.parse(kept) : undefined;
  const room = await client.subscribe("room:1", { since });
  room.listen("message", (data, packet) => {
    render(data);
    storage.setItem("room-position", JSON.stringify(packet.position));
  });
  return room;
}
// --8<-- [end:recover]

// --8<-- [start:presence]
export async function showWhoIsHere(client, toast, renderOnline) {
  const room = await client.subscribe("room:2");
  const update = () => renderOnline([...room.members.values()]); // kept up to date
  for (const event of ["channels:presence", "channels:join", "channels:leave"]) {
    room.listen(event, update);
  }
  room.listen("channels:join", ({ member }) => toast(`${member.name} is here`));
  return room;
}
// --8<-- [end:presence]
