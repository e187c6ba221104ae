// Module resolution for the docs' JavaScript examples (docs/examples/js), registered by
// test/docs.test.mjs: the specifiers a page or a Node script would use lead to this repository.
const client = new URL("../../../fastapi_channels/static/channels.js", import.meta.url).href;
const ws = new URL("./ws-shim.mjs", import.meta.url).href;
const examples = new URL("../../../docs/examples/js/", import.meta.url).href;

export async function resolve(specifier, context, nextResolve) {
  const fromExample = context.parentURL?.startsWith(examples) ?? false;
  // A page imports the module its app serves at /ws/client.js; a Node script a copy of it.
  if (fromExample && (specifier === "/ws/client.js" || specifier === "./channels.js")) {
    return { url: client, shortCircuit: true };
  }
  // The `ws` package is not installed here: Node's own WebSocket stands in for it.
  if (fromExample && specifier === "ws") return { url: ws, shortCircuit: true };
  return nextResolve(specifier, context);
}
