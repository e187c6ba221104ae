// Stands for the `ws` package in the docs' Node example: Node's own WebSocket, counting its uses.
export const opened = [];

export default class WebSocket extends globalThis.WebSocket {
  constructor(url, protocols) {
    super(url, protocols);
    opened.push(url);
  }
}
