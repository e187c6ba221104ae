/**
 * The fastapi_channels JavaScript client: one ES module, no build step, no dependencies.
 *
 * Speaks the Envuso packet protocol, with the API of Envuso's `socket-client`
 * (`new SocketClient(url)`, `usingJwt`, `connect`, `subscribe`, `listen`, `emit`,
 * `unsubscribe`, `disconnect`) and more: several listeners per event and `off`, promises for
 * subscriptions and replies, reconnection with capped exponential backoff and jitter,
 * re-subscription after a reconnect, a token provider called before every connection attempt,
 * connection state events, and unexpected packets reported instead of thrown. On history
 * channels it tracks the last position received and subscribes again from it, so the server
 * replays what a reconnect missed; on presence channels it keeps the member list.
 *
 * Served by a fastapi_channels app at `<channels path>/client.js` (`/ws/client.js` by default):
 *
 *     import { SocketClient } from "/ws/client.js";
 *     const client = new SocketClient("ws://localhost:8000/ws").usingJwt(() => getToken());
 *     await client.connect();
 *     const chat = await client.subscribe("chat:1");
 *     chat.listen("message", (data) => console.log(data));
 *     chat.emit("message", { text: "hi" });
 *
 * Works in browsers and in Node (22+, or 20 with `--experimental-websocket`, or any
 * implementation of the standard WebSocket API passed as `options.WebSocket`).
 *
 * @module fastapi-channels
 */

/** Reserved event names on the wire. */
export const ServerEventTypes = Object.freeze({
  SOCKET_PING: "ping",
  SOCKET_PONG: "pong",
  SOCKET_READY: "ready",
  SOCKET_DISCONNECT: "disconnect",
  CHANNEL_SUBSCRIBE_REQUEST: "subscribe-channel-request",
  CHANNEL_SUBSCRIBE_RESPONSE: "subscribe-channel-response",
  CHANNEL_UNSUBSCRIBE_REQUEST: "unsubscribe-channel-request",
  ERROR: "channels:error",
  AUTHENTICATE: "channels:authenticate",
  AUTHENTICATE_RESPONSE: "channels:authenticate-response",
  REPLY: "channels:reply",
  PRESENCE: "channels:presence",
  JOIN: "channels:join",
  LEAVE: "channels:leave",
  SUBSCRIBED: "channels:subscribed",
  UNSUBSCRIBED: "channels:unsubscribed",
});

/**
 * What this client announces at connect (`?channels-features=`): it waits the `reconnect_after`
 * of a restart's `disconnect`, and takes `channels:subscribed` from the server. A server that
 * knows nothing of it ignores the parameter.
 */
export const FEATURES = Object.freeze({
  parameter: "channels-features",
  value: "reconnect-advice,server-subscriptions",
});

/** The longest `reconnect_after` taken, in ms; a larger one is ignored. */
const MAX_ADVICE = 3600 * 1000;
/** The share of an advised delay added at random, so clients advised alike come back apart. */
const ADVICE_JITTER = 0.1;

/** Connection states, with Envuso's values. */
export const ConnectionStatus = Object.freeze({
  NONE: "none",
  CONNECTING: "connecting",
  CONNECTED: "connected",
  DISCONNECTED: "disconnected",
  RE_CONNECTING: "re-connecting",
});

/** Events the client itself emits through `on()`; the `channels:` prefix is reserved. */
export const ClientEvents = Object.freeze({
  STATE: "channels:state",
  WARNING: "channels:warning",
  SUBSCRIPTION: "channels:subscription",
  RENEWAL: "channels:renewal",
});

/** Base class of every error this module raises or rejects with. */
export class ChannelsError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}

/**
 * The server refused the connection for good: a `disconnect` packet before `ready`, then a
 * close the reconnect rule does not retry (1000 or 1008). A refusal closed with a code it
 * retries (`server busy`, 1013) is a `ConnectionClosedError` instead.
 */
export class RefusedError extends ChannelsError {
  /** @param {string} reason @param {number} [code] */
  constructor(reason, code) {
    super(`connection refused: ${reason}`);
    /** The reason the server gave. */
    this.reason = reason;
    /** The close code that followed, when known. */
    this.code = code ?? null;
  }
}

/** The server refused a subscription, or the channel was unsubscribed while pending. */
export class SubscriptionError extends ChannelsError {
  /** @param {string} channel @param {string} reason */
  constructor(channel, reason) {
    super(`subscription to ${channel} refused: ${reason}`);
    this.channel = channel;
    this.reason = reason;
  }
}

/** The connection is not open, or closed while an answer was awaited. */
export class ConnectionClosedError extends ChannelsError {
  /** @param {string} message @param {number} [code] @param {string} [reason] */
  constructor(message, code, reason) {
    super(message);
    this.code = code ?? null;
    this.reason = reason ?? "";
  }
}

/** No answer came within the time allowed. */
export class TimeoutError extends ChannelsError {}

/** The server refused to renew the token in-band; the connection goes on with the old one. */
export class RenewalError extends ChannelsError {
  /** @param {string} reason */
  constructor(reason) {
    super(`token renewal refused: ${reason}`);
    this.reason = reason;
  }
}

/** The server answered a request with an error. */
export class ReplyError extends ChannelsError {
  /** @param {{code?: string, message?: string}} error */
  constructor(error) {
    super(error?.message || error?.code || "request failed");
    this.code = error?.code ?? null;
    this.error = error;
  }
}

const CLOSE_NORMAL = 1000;
const CLOSE_NO_STATUS = 1005;
const CLOSE_POLICY_VIOLATION = 1008;
const OPEN = 1;

const DEFAULT_RECONNECT = Object.freeze({
  initialDelay: 1000,
  maxDelay: 30000,
  factor: 2,
  jitter: 0.5,
  maxAttempts: Infinity,
  shouldReconnect: defaultShouldReconnect,
});

/**
 * The default reconnect rule: a close with 1000 or 1005 (the server ended the connection on
 * purpose) or 1008 (policy violation) stops for good; any other close, abnormal drops (1006)
 * included, reconnects.
 *
 * @param {{code: number, reason: string}} close
 * @returns {boolean}
 */
export function defaultShouldReconnect(close) {
  return ![CLOSE_NORMAL, CLOSE_NO_STATUS, CLOSE_POLICY_VIOLATION].includes(close.code);
}

/**
 * The delay before reconnect attempt `attempt` (0 first): `initialDelay * factor ** attempt`,
 * capped at `maxDelay`, less a random share of up to `jitter` of it.
 *
 * @param {number} attempt
 * @param {{initialDelay: number, maxDelay: number, factor: number, jitter: number}} options
 * @param {() => number} [random]
 * @returns {number} milliseconds
 */
export function backoffDelay(attempt, options, random = Math.random) {
  const base = Math.min(options.maxDelay, options.initialDelay * options.factor ** attempt);
  return Math.max(0, base * (1 - options.jitter * random()));
}

/** The reply error codes after which a request with retries is sent again. */
const RETRIED_CODES = new Set(["outcome-unknown", "broker-unavailable"]);

/** A fresh idempotency key: 32 random hex characters. */
function newKey() {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * The wait before reconnecting, in ms, when a `disconnect` packet's data advised one
 * (`reconnect_after`, seconds): never less than advised, up to a tenth more at random; `null`
 * when there is no usable advice (the backoff applies).
 *
 * @param {unknown} data
 * @param {() => number} [random]
 * @returns {number | null}
 */
export function advisedDelay(data, random = Math.random) {
  const seconds = isObject(data) ? data.reconnect_after : undefined;
  if (typeof seconds !== "number" || !(seconds >= 0) || seconds * 1000 > MAX_ADVICE) return null;
  return seconds * 1000 * (1 + ADVICE_JITTER * random());
}

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/** A wire position `{offset, epoch}` as a fresh object, or `null` for anything else. */
function parsePosition(value) {
  if (!isObject(value) || !Number.isInteger(value.offset) || typeof value.epoch !== "string") {
    return null;
  }
  return { offset: value.offset, epoch: value.epoch };
}

/** The `exp` claim of a JWT (seconds), or `null` for anything else; the signature is not
 * checked: the client only uses it to time a renewal. */
export function jwtExpiry(token) {
  const payload = typeof token === "string" ? token.split(".")[1] : undefined;
  if (!payload) return null;
  try {
    const claims = JSON.parse(atob(payload.replace(/-/g, "+").replace(/_/g, "/")));
    return typeof claims?.exp === "number" ? claims.exp : null;
  } catch {
    return null;
  }
}

/**
 * Listeners by event name, several per event: the part `SocketClient` and `SocketChannel` share.
 * A client's listeners get plain events and the client's own `channels:` events; a channel's get
 * that channel's events.
 */
class Listeners {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
  }

  /**
   * Call `callback(data, packet)` for each `event`; several may listen, each once.
   *
   * @param {string} event
   * @param {(data: any, packet: object) => void} callback
   * @returns {this}
   */
  on(event, callback) {
    if (typeof callback !== "function") throw new TypeError("callback must be a function");
    let set = this._listeners.get(event);
    if (!set) this._listeners.set(event, (set = new Set()));
    set.add(callback);
    return this;
  }

  /** Envuso's name for `on`. */
  listen(event, callback) {
    return this.on(event, callback);
  }

  /** Like `on`, for the next `event` only. */
  once(event, callback) {
    const wrapper = (data, packet) => {
      this.off(event, wrapper);
      callback(data, packet);
    };
    return this.on(event, wrapper);
  }

  /** Remove one listener of `event`, or all of them without `callback`. */
  off(event, callback) {
    if (callback === undefined) this._listeners.delete(event);
    else this._listeners.get(event)?.delete(callback);
    return this;
  }
}

/** A channel subscription; obtained from `SocketClient.subscribe`. */
export class SocketChannel extends Listeners {
  /** @param {string} name @param {SocketClient} client */
  constructor(name, client) {
    super();
    /** The concrete channel name. */
    this.name = name;
    /** "pending" | "subscribed" | "denied" | "unsubscribed" */
    this.state = "pending";
    /**
     * On a history channel, the position of the last event received (or the one the server
     * said the channel continues from): `{offset, epoch}`, or `null`. The client subscribes
     * again from it after a reconnect; keep it to resume a later session (`subscribe(name,
     * {since})`).
     */
    this.position = null;
    /**
     * After subscribing from a position: whether the server replayed everything missed since
     * (`false`: reload the state this channel's events build); `null` when no position was sent.
     */
    this.recovered = null;
    /**
     * On a presence channel, the members by id (their info as the server sends it). A member
     * list marked `partial` is merged into them; a complete one replaces them.
     */
    this.members = new Map();
    this._client = client;
    this._deferred = null;
    this._held = null;
  }

  /** Envuso's accessor for the name. */
  getName() {
    return this.name;
  }

  /** Whether the server granted the subscription on the current connection. */
  get subscribed() {
    return this.state === "subscribed";
  }

  /**
   * Send `event` on this channel.
   *
   * @throws {ConnectionClosedError} the client is not connected.
   */
  emit(event, data) {
    this._client._send({ event, channel: this.name, data });
  }

  /**
   * Send `event` on this channel and wait for the server's reply (see `SocketClient.request`).
   */
  request(event, data, options = {}) {
    return this._client.request(event, data, { ...options, channel: this.name });
  }

  /** Unsubscribe; the channel's listeners are removed. */
  unsubscribe() {
    this._client.unsubscribe(this.name);
  }

  _subscribe() {
    if (this.state === "subscribed") return Promise.resolve(this);
    if (this._deferred === null) {
      let resolve, reject;
      const promise = new Promise((res, rej) => {
        resolve = res;
        reject = rej;
      });
      // A refusal is also reported by `channels:subscription`: an unawaited promise (Envuso's
      // style without a callback) must not become an unhandled rejection.
      promise.catch(() => {});
      this._deferred = { promise, resolve, reject };
      this.state = "pending";
      this._client._requestSubscription(this.name);
    }
    return this._deferred.promise;
  }

  _settle(successful, reason) {
    this.state = successful ? "subscribed" : "denied";
    const deferred = this._deferred;
    this._deferred = null;
    if (deferred === null) return;
    if (successful) {
      // The events that come with the answer (a replay, the member list, live events) may be
      // read in the same turn as the answer itself: hold them until the code awaiting
      // `subscribe()` has run and added its listeners, then deliver them in order.
      this._held = [];
      setTimeout(() => this._release(), 0);
      deferred.resolve(this);
    } else deferred.reject(new SubscriptionError(this.name, reason || "refused"));
  }

  _release() {
    const held = this._held;
    this._held = null;
    if (held === null || this.state !== "subscribed") return;
    for (const [packet, quiet] of held) this._dispatch(packet, quiet);
  }

  _dispatch(packet, quiet = false) {
    if (this._held !== null) {
      this._held.push([packet, quiet]);
      return;
    }
    const position = parsePosition(packet.position);
    if (position !== null) this.position = position;
    const listeners = this._listeners.get(packet.event);
    if (!listeners || listeners.size === 0) {
      if (!quiet) {
        this._client._warn(`no listener for "${packet.event}" on channel ${this.name}`, { packet });
      }
      return;
    }
    for (const callback of [...listeners]) this._client._invoke(callback, packet);
  }

  _onPresence(packet) {
    const data = packet.data;
    if (packet.event === ServerEventTypes.PRESENCE) {
      if (!Array.isArray(data.members)) return;
      const listed = data.members.filter((member) => isObject(member) && "id" in member);
      // A partial list (the server's broker is refilling its records after a restart) is
      // merged into the members held, so the room never looks emptier than it is, until a
      // complete list replaces them.
      if (data.partial === true) for (const m of listed) this.members.set(m.id, m);
      else this.members = new Map(listed.map((m) => [m.id, m]));
    } else if (isObject(data.member) && "id" in data.member) {
      if (packet.event === ServerEventTypes.JOIN) this.members.set(data.member.id, data.member);
      else this.members.delete(data.member.id);
    }
    this._dispatch(packet, true);
  }
}

/** A connection to a fastapi_channels (or Envuso) websocket server. */
export class SocketClient extends Listeners {
  /**
   * @param {string} url the websocket endpoint, e.g. `ws://localhost:8000/ws`.
   * @param {string | string[] | object} [options] Envuso's `protocols`, or the options:
   *   `token` (a string, or a function returning one or a promise of one, called before every
   *   attempt), `tokenTransport` (`"subprotocol"`, the default: the token is the offered
   *   subprotocol as Envuso sends it; `"bearer"`: `bearer, <token>` is offered and the server
   *   echoes only `bearer`; `"query"`: `?token=`), `protocols`, `WebSocket` (an implementation
   *   of the standard API; `globalThis.WebSocket` by default), `reconnect` (`false`, or
   *   overrides of `initialDelay`, `maxDelay`, `factor`, `jitter`, `maxAttempts`,
   *   `shouldReconnect`), `connectTimeout` (ms until `ready`, 10000), `requestTimeout`
   *   (ms, 10000), `renewBefore` (ms: with a token provider, renew the token in-band that
   *   long before its `exp`; off by default).
   */
  constructor(url, options = {}) {
    super();
    if (typeof options === "string" || Array.isArray(options)) options = { protocols: options };
    this.url = url;
    this.protocols = [].concat(options.protocols ?? []);
    this._token = options.token ?? null;
    this.tokenTransport = options.tokenTransport ?? "subprotocol";
    this._WebSocket = options.WebSocket ?? null;
    this.reconnect =
      options.reconnect === false ? null : { ...DEFAULT_RECONNECT, ...(options.reconnect ?? {}) };
    this.connectTimeout = options.connectTimeout ?? 10000;
    this.requestTimeout = options.requestTimeout ?? 10000;
    this.renewBefore = options.renewBefore ?? null;
    this._renewTimer = null;
    /** The connection id the server sent in `ready`. */
    this.id = null;
    this._status = ConnectionStatus.NONE;
    this._ws = null;
    /** @type {Map<string, SocketChannel>} */
    this._channels = new Map();
    this._leaving = new Set();
    this._pending = new Map();
    this._sequence = 0;
    this._connecting = null;
    this._stopped = true;
    this._sleep = null;
  }

  /**
   * Authenticate with `token`: a string, or a function (sync or async) returning the token,
   * called before every connection attempt so a reconnect uses a fresh one.
   *
   * @returns {this}
   */
  usingJwt(token) {
    this._token = token;
    return this;
  }

  /** The connection state (a `ConnectionStatus` value). */
  get state() {
    return this._status;
  }

  /** Envuso's accessor for the state. */
  getConnectionStatus() {
    return this._status;
  }

  /** The underlying WebSocket, `null` between connections. */
  getWs() {
    return this._ws;
  }

  /** Whether a subscription to `name` exists (granted or pending). */
  hasSubscription(name) {
    return this._channels.has(name);
  }

  /** The channel object for `name`, or `undefined`. */
  channel(name) {
    return this._channels.get(name);
  }

  /**
   * Connect and resolve with the `ready` packet's data (`{id}`) once the server is ready.
   *
   * Rejects with `RefusedError` when the server refuses (no retry), or with
   * `ConnectionClosedError`/`TimeoutError` when the attempt fails. With `{retry: true}`, failed
   * attempts (not refusals) are retried with the reconnect backoff until one succeeds.
   * Once connected, a lost connection is re-established on its own (see `reconnect`).
   *
   * @param {{retry?: boolean}} [options]
   * @returns {Promise<{id: string}>}
   */
  connect(options = {}) {
    if (this._status === ConnectionStatus.CONNECTED) return Promise.resolve({ id: this.id });
    if (this._connecting) return this._connecting;
    this._stopped = false;
    const attempt = this._connectLoop(Boolean(options.retry), false, 0);
    this._connecting = attempt.finally(() => {
      this._connecting = null;
    });
    return this._connecting;
  }

  /**
   * Close the connection on purpose (no reconnect) and resolve once it is closed.
   * Channels and listeners are kept: a later `connect()` subscribes again.
   */
  disconnect(code = CLOSE_NORMAL, reason = "") {
    this._stopped = true;
    clearTimeout(this._renewTimer);
    if (this._status === ConnectionStatus.NONE || this._status === ConnectionStatus.DISCONNECTED) {
      this._setState(ConnectionStatus.DISCONNECTED, { code, reason });
      return Promise.resolve();
    }
    const done = new Promise((resolve) => {
      const listener = (change) => {
        if (change.state !== ConnectionStatus.DISCONNECTED) return;
        this.off(ClientEvents.STATE, listener);
        resolve();
      };
      this.on(ClientEvents.STATE, listener);
    });
    if (this._sleep) this._sleep.cancel();
    const ws = this._ws;
    if (ws && ws.readyState <= OPEN) {
      try {
        ws.close(code, reason);
      } catch (error) {
        this._warn(`cannot close with code ${code}, closing with 1000`, { error });
        ws.close();
      }
    }
    return done;
  }

  /**
   * Subscribe to a channel. Resolves with the channel once the server grants it; rejects with
   * `SubscriptionError` when it refuses. With Envuso's `callback(error, channel)`, the callback
   * is called as well. Subscribing while (re)connecting sends the request once ready;
   * subscribing to a name twice returns the same channel. Options instead of the callback:
   * `{since: {offset, epoch}}` (a position kept from an earlier session) asks a history channel
   * to replay what came after it, and `callback`.
   *
   * @param {string} name
   * @param {((error: Error | null, channel: SocketChannel) => void) | {since?: {offset: number, epoch: string}, callback?: Function}} [callback]
   * @returns {Promise<SocketChannel>}
   */
  subscribe(name, callback) {
    let since = null;
    if (isObject(callback)) {
      since = parsePosition(callback.since);
      callback = callback.callback;
    }
    let promise;
    if (typeof name !== "string" || name === "") {
      promise = Promise.reject(new TypeError("channel name must be a non-empty string"));
    } else if (this._stopped) {
      promise = Promise.reject(new ConnectionClosedError("not connected: call connect() first"));
    } else {
      let channel = this._channels.get(name);
      if (!channel) {
        channel = new SocketChannel(name, this);
        channel.position = since;
        this._channels.set(name, channel);
        this._leaving.delete(name);
      }
      promise = channel._subscribe();
    }
    if (typeof callback === "function") {
      promise.then(
        (channel) => this._invokeCallback(callback, null, channel),
        (error) => this._invokeCallback(callback, error, this._channels.get(name) ?? null),
      );
    }
    return promise;
  }

  /** Unsubscribe from `name` (a no-op when not subscribed); its listeners are removed. */
  unsubscribe(name) {
    const channel = this._channels.get(name);
    if (!channel) return;
    this._channels.delete(name);
    channel._listeners.clear();
    channel._settle(false, "unsubscribed");
    channel.state = "unsubscribed";
    if (this._isOpen()) {
      this._leaving.add(name);
      this._sendUnsubscribe(name);
    }
  }

  /**
   * Send a plain event.
   *
   * @throws {ConnectionClosedError} the client is not connected.
   */
  emit(event, data) {
    this._send({ event, data });
  }

  /**
   * Send `event` with an `id` and resolve with the `data` of the server's reply
   * (`{"event": "channels:reply", "id": <id>, "data": ...}`).
   *
   * Rejects with `ReplyError` when the reply carries an `error` (or a `channels:error` packet
   * names the id), `TimeoutError` after `timeout` ms, and `ConnectionClosedError` when not
   * connected or when the connection is lost first (the request is not sent again).
   *
   * With `retries`, the packet carries an idempotency `key` (`options.key`, else a fresh random
   * one) and is sent again, with a new `id` and the same key, when the answer is
   * `outcome-unknown` or `broker-unavailable` or no reply comes within `timeout`, up to
   * `retries` times (the n-th after `retryDelay * n` ms, 500 by default). The server delivers
   * the handler's broadcasts once per key, so a retried message is not delivered twice.
   *
   * @param {string} event
   * @param {any} [data]
   * @param {{timeout?: number, channel?: string, key?: string, retries?: number,
   *   retryDelay?: number}} [options]
   * @returns {Promise<any>}
   */
  async request(event, data, options = {}) {
    const retries = options.retries ?? 0;
    if (retries <= 0) return this._request(event, data, options, options.key);
    const key = options.key ?? newKey();
    const delay = options.retryDelay ?? 500;
    for (let attempt = 0; ; attempt++) {
      if (attempt) await new Promise((resolve) => setTimeout(resolve, delay * attempt));
      try {
        return await this._request(event, data, options, key);
      } catch (error) {
        const retried =
          error instanceof TimeoutError ||
          (error instanceof ReplyError && RETRIED_CODES.has(error.code));
        if (!retried || attempt >= retries) throw error;
      }
    }
  }

  /** One attempt of `request`: a fresh `id`, and `key` when given. */
  _request(event, data, options, key) {
    const id = ++this._sequence;
    const packet = { event, data, id };
    if (options.channel !== undefined) packet.channel = options.channel;
    if (key !== undefined) packet.key = key;
    try {
      this._send(packet);
    } catch (error) {
      return Promise.reject(error);
    }
    const timeout = options.timeout ?? this.requestTimeout;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new TimeoutError(`no reply to "${event}" within ${timeout} ms`));
      }, timeout);
      this._pending.set(id, { resolve, reject, timer });
    });
  }

  /**
   * Renew the connection's token in-band (`channels:authenticate`), keeping the connection and
   * its subscriptions: with `token`, or a fresh one from the token provider.
   *
   * Resolves with the server's answer (`{successful: true, expires_at}`); rejects with
   * `RenewalError` when the server refuses it (the connection goes on until the old token
   * expires), or as `request` does. Each outcome is also a `channels:renewal` event. With the
   * `renewBefore` option (ms) and a token provider, the client renews on its own that long
   * before the token's `exp` (or at half its remaining life, if that is later).
   *
   * @param {string} [token]
   * @returns {Promise<{successful: boolean, expires_at?: number | null}>}
   */
  async renew(token) {
    const fresh = token !== undefined ? token : await this._currentToken();
    if (fresh === null || fresh === undefined) throw new TypeError("no token to renew with");
    const answer = await this.request(ServerEventTypes.AUTHENTICATE, { token: fresh });
    const successful = isObject(answer) && answer.successful === true;
    const reason = successful ? null : String(answer?.reason ?? "refused");
    const expiresAt = successful ? (answer.expires_at ?? null) : null;
    this._emitLocal(ClientEvents.RENEWAL, { successful, reason, expiresAt });
    if (!successful) throw new RenewalError(reason);
    this._scheduleRenewal(expiresAt);
    return answer;
  }

  // ------------------------------------------------------------------ internals

  /** Attempt until connected; `step` indexes the next backoff delay. */
  async _connectLoop(retry, reconnecting, step) {
    let failures = 0;
    for (;;) {
      try {
        return await this._attempt(reconnecting);
      } catch (error) {
        failures += 1;
        const fatal =
          error instanceof RefusedError ||
          error instanceof TypeError ||
          error?.name === "SyntaxError";
        const retryable = (retry || reconnecting) && this.reconnect !== null;
        if (this._stopped || fatal || !retryable || failures >= this.reconnect.maxAttempts) {
          this._stopped = true;
          this._setState(ConnectionStatus.DISCONNECTED, {
            reason: error.reason ?? error.message,
            error,
          });
          throw error;
        }
        const delay = backoffDelay(step, this.reconnect);
        step += 1;
        this._setState(ConnectionStatus.RE_CONNECTING, { attempt: step, delay, error });
        await this._backoff(delay);
      }
    }
  }

  async _attempt(reconnecting) {
    if (!reconnecting && this._status !== ConnectionStatus.RE_CONNECTING) {
      this._setState(ConnectionStatus.CONNECTING);
    }
    const token = await this._currentToken();
    if (this._stopped) throw new ConnectionClosedError("disconnected by the client");
    const WebSocketImpl = this._WebSocket ?? globalThis.WebSocket;
    if (typeof WebSocketImpl !== "function") {
      throw new TypeError("no WebSocket implementation: pass options.WebSocket");
    }
    const { url, protocols } = this._handshake(token);
    return new Promise((resolve, reject) => {
      const ws = protocols.length ? new WebSocketImpl(url, protocols) : new WebSocketImpl(url);
      const session = { ws, ready: false, closingReason: null, advised: null };
      this._ws = ws;
      let settled = false;
      let refusal = null;
      const fail = (error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (this._ws === ws) this._ws = null;
        reject(error);
      };
      const timer = setTimeout(() => {
        fail(
          refusal !== null
            ? new RefusedError(refusal)
            : new TimeoutError(`no ready packet within ${this.connectTimeout} ms`),
        );
        try {
          ws.close();
        } catch {}
      }, this.connectTimeout);
      ws.onmessage = (message) => {
        if (settled && !session.ready) return;
        const packet = this._parse(message.data);
        if (packet === null) return;
        if (session.ready) {
          this._onPacket(session, packet);
        } else if (packet.event === ServerEventTypes.SOCKET_READY) {
          settled = true;
          clearTimeout(timer);
          session.ready = true;
          this._onReady(packet, token);
          resolve(isObject(packet.data) ? packet.data : {});
        } else if (packet.event === ServerEventTypes.SOCKET_DISCONNECT) {
          refusal = String(packet.data?.reason ?? "refused"); // the close code tells if it is final
        } else {
          this._warn(`"${packet.event}" received before ready`, { packet });
        }
      };
      ws.onerror = () => {
        // Some implementations (Node 20's) report a failed handshake with an error and no
        // close event: the attempt has failed either way.
        if (!session.ready) fail(new ConnectionClosedError("connection failed", 1006, ""));
      };
      ws.onclose = (event) => {
        if (session.ready) {
          this._onLost(session, event);
        } else if (refusal !== null) {
          const retry = this.reconnect?.shouldReconnect ?? defaultShouldReconnect;
          const close = { code: event.code, reason: refusal, wasClean: event.wasClean };
          fail(
            retry(close)
              ? new ConnectionClosedError(`refused for now: ${refusal}`, event.code, refusal)
              : new RefusedError(refusal, event.code),
          );
        } else {
          fail(
            new ConnectionClosedError(
              `connection closed before ready (${event.code})`,
              event.code,
              event.reason,
            ),
          );
        }
      };
    });
  }

  async _currentToken() {
    const token = typeof this._token === "function" ? await this._token() : this._token;
    return token === undefined || token === null || token === "" ? null : String(token);
  }

  _handshake(token) {
    const announced = new URL(this.url);
    announced.searchParams.set(FEATURES.parameter, FEATURES.value);
    let url = announced.toString();
    const protocols = [...this.protocols];
    if (token !== null) {
      if (this.tokenTransport === "query") {
        const parsed = new URL(url);
        parsed.searchParams.set("token", token);
        url = parsed.toString();
      } else if (this.tokenTransport === "bearer") {
        protocols.unshift("bearer", token);
      } else {
        protocols.unshift(token);
      }
    }
    return { url, protocols };
  }

  _onReady(packet, token) {
    this.id = isObject(packet.data) ? (packet.data.id ?? null) : null;
    const previous = this._status;
    this._status = ConnectionStatus.CONNECTED;
    this._leaving.clear();
    for (const channel of this._channels.values()) {
      if (channel.state === "subscribed") channel.state = "pending";
      this._sendSubscribe(channel.name);
    }
    this._emitLocal(ClientEvents.STATE, { state: this._status, previous, id: this.id });
    if (token !== null) this._scheduleRenewal(jwtExpiry(token));
  }

  _onLost(session, event) {
    if (this._ws === session.ws) this._ws = null;
    clearTimeout(this._renewTimer);
    const code = event.code;
    const reason = session.closingReason ?? event.reason ?? "";
    this._failPending(new ConnectionClosedError(`connection lost (${code})`, code, reason));
    for (const channel of this._channels.values()) {
      if (channel.state === "subscribed") channel.state = "pending";
    }
    const again =
      !this._stopped &&
      this.reconnect !== null &&
      this.reconnect.shouldReconnect({ code, reason, wasClean: event.wasClean });
    if (!again) {
      this._stopped = true;
      this._setState(ConnectionStatus.DISCONNECTED, { code, reason });
      return;
    }
    this._connecting = this._reconnectAfterDrop(code, reason, session.advised).finally(() => {
      this._connecting = null;
    });
    this._connecting.catch(() => {});
  }

  /** Wait the server's advice (a restart's `reconnect_after`) or the first backoff delay. */
  async _reconnectAfterDrop(code, reason, advised) {
    const delay = advised ?? backoffDelay(0, this.reconnect);
    this._setState(ConnectionStatus.RE_CONNECTING, { code, reason, attempt: 1, delay });
    await this._backoff(delay);
    return this._connectLoop(true, true, 1);
  }

  /** Wait `delay` ms before the next attempt; `disconnect()` ends the wait, and the client. */
  async _backoff(delay) {
    try {
      await this._wait(delay);
    } catch (error) {
      this._setState(ConnectionStatus.DISCONNECTED, { reason: error.message, error });
      throw error;
    }
  }

  _scheduleRenewal(expiresAt) {
    clearTimeout(this._renewTimer);
    this._renewTimer = null;
    if (this.renewBefore === null || typeof this._token !== "function") return;
    if (typeof expiresAt !== "number") return;
    const remaining = expiresAt * 1000 - Date.now();
    if (remaining <= 0) return;
    // Never sooner than half the token's remaining life: a short token must not renew in a loop.
    const delay = Math.max(remaining - this.renewBefore, remaining / 2);
    this._renewTimer = setTimeout(() => {
      this._renewTimer = null;
      if (!this._isOpen()) return;
      this.renew().catch((error) => {
        // Lost meanwhile: the reconnect asks the provider anyway.
        if (this._isOpen()) this._warn("renewing the token failed", { error });
      });
    }, delay);
  }

  _wait(delay) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._sleep = null;
        resolve();
      }, delay);
      this._sleep = {
        cancel: () => {
          clearTimeout(timer);
          this._sleep = null;
          reject(new ConnectionClosedError("disconnected by the client"));
        },
      };
    });
  }

  _onPacket(session, packet) {
    const data = packet.data;
    switch (packet.event) {
      case ServerEventTypes.CHANNEL_SUBSCRIBE_RESPONSE:
        return this._onSubscribeResponse(data);
      case ServerEventTypes.REPLY:
        return this._onReply(packet);
      case ServerEventTypes.SOCKET_PING:
        return this._trySend({ event: ServerEventTypes.SOCKET_PONG, data: {} });
      case ServerEventTypes.SOCKET_DISCONNECT:
        session.closingReason = String(data?.reason ?? "");
        session.advised = advisedDelay(data);
        break;
      case ServerEventTypes.SUBSCRIBED:
      case ServerEventTypes.UNSUBSCRIBED:
        this._onServerSubscription(packet.event, data);
        break;
      case ServerEventTypes.PRESENCE:
      case ServerEventTypes.JOIN:
      case ServerEventTypes.LEAVE:
        if (isObject(data)) this._channels.get(data.channel)?._onPresence(packet);
        break;
      case ServerEventTypes.ERROR: {
        const id = packet.id ?? data?.id;
        if (id !== undefined && this._settlePending(id, null, data)) return;
        if (!this._listeners.get(packet.event)?.size) {
          this._warn(`server error: ${data?.message ?? "unknown"}`, { packet });
          return;
        }
        break;
      }
    }
    if (typeof packet.channel === "string") {
      const channel = this._channels.get(packet.channel);
      if (channel) channel._dispatch(packet);
      else if (!this._leaving.has(packet.channel)) {
        this._warn(`event "${packet.event}" for channel ${packet.channel}, not subscribed`, {
          packet,
        });
      }
      return;
    }
    this._emitLocal(packet.event, data, packet);
  }

  _onSubscribeResponse(data) {
    const name = data?.channel;
    const channel = this._channels.get(name);
    if (!channel) {
      if (!this._leaving.has(name)) {
        this._warn(`subscription response for unknown channel ${name}`, { data });
      }
      return;
    }
    const resubscribed = channel._deferred === null;
    const successful = Boolean(data.successful);
    const history = {};
    if (successful && "position" in data) {
      channel.position = parsePosition(data.position);
      history.position = channel.position;
    }
    if ("recovered" in data) {
      channel.recovered = data.recovered === true;
      history.recovered = channel.recovered;
    }
    channel._settle(successful, data.reason);
    if (!successful) this._channels.delete(name);
    this._emitLocal(ClientEvents.SUBSCRIPTION, {
      channel: name,
      successful,
      reason: data.reason ?? null,
      resubscribed,
      ...history,
    });
  }

  /**
   * A subscription the server made (`channels:subscribed`) joins the channel table as granted,
   * so it is subscribed again after a reconnect; one it ended (`channels:unsubscribed`) leaves
   * it, with its listeners. Listeners of the client get the packet right after, and the
   * channel's events wait until they have run.
   */
  _onServerSubscription(event, data) {
    const name = data?.channel;
    if (typeof name !== "string" || name === "") return;
    if (event === ServerEventTypes.UNSUBSCRIBED) {
      const channel = this._channels.get(name);
      if (!channel) return;
      this._channels.delete(name);
      channel._listeners.clear();
      channel._settle(false, "unsubscribed by the server");
      channel.state = "unsubscribed";
      this._leaving.add(name);
      return;
    }
    let channel = this._channels.get(name);
    if (!channel) {
      channel = new SocketChannel(name, this);
      this._channels.set(name, channel);
      this._leaving.delete(name);
    }
    const position = parsePosition(data.position);
    if (position !== null) channel.position = position;
    channel._settle(true, null);
    if (channel._held === null) {
      channel._held = [];
      setTimeout(() => channel._release(), 0);
    }
  }

  _onReply(packet) {
    const id = packet.id;
    if (!this._settlePending(id, packet.data, packet.error)) {
      this._warn(`reply to unknown request ${id}`, { packet });
    }
  }

  _settlePending(id, data, error) {
    const pending = this._pending.get(id);
    if (!pending) return false;
    this._pending.delete(id);
    clearTimeout(pending.timer);
    if (error) pending.reject(new ReplyError(error));
    else pending.resolve(data);
    return true;
  }

  _failPending(error) {
    const pending = [...this._pending.values()];
    this._pending.clear();
    for (const { reject, timer } of pending) {
      clearTimeout(timer);
      reject(error);
    }
  }

  _requestSubscription(name) {
    if (this._isOpen()) this._sendSubscribe(name);
  }

  _sendSubscribe(name) {
    const data = { channel: name };
    const position = this._channels.get(name)?.position;
    if (position) data.since = { offset: position.offset, epoch: position.epoch };
    this._trySend({ event: ServerEventTypes.CHANNEL_SUBSCRIBE_REQUEST, data });
  }

  _sendUnsubscribe(name) {
    this._trySend({
      event: ServerEventTypes.CHANNEL_UNSUBSCRIBE_REQUEST,
      channel: name,
      data: { channel: name },
    });
  }

  _isOpen() {
    return (
      this._status === ConnectionStatus.CONNECTED && this._ws !== null && this._ws.readyState === OPEN
    );
  }

  _send(packet) {
    if (!this._isOpen()) throw new ConnectionClosedError("not connected");
    this._ws.send(JSON.stringify(packet));
  }

  _trySend(packet) {
    try {
      this._send(packet);
    } catch (error) {
      this._warn(`could not send "${packet.event}"`, { error });
    }
  }

  _parse(text) {
    let packet;
    try {
      packet = JSON.parse(text);
    } catch (error) {
      this._warn("frame is not JSON", { data: text, error });
      return null;
    }
    if (!isObject(packet) || typeof packet.event !== "string") {
      this._warn("frame is not a packet", { data: text });
      return null;
    }
    return packet;
  }

  _setState(state, details = {}) {
    const previous = this._status;
    this._status = state;
    if (previous === state && !("attempt" in details)) return;
    this._emitLocal(ClientEvents.STATE, { state, previous, ...details });
  }

  _emitLocal(event, data, packet = { event, data }) {
    const listeners = this._listeners.get(event);
    if (!listeners) return;
    for (const callback of [...listeners]) this._invoke(callback, packet, data);
  }

  _invoke(callback, packet, data = packet.data) {
    try {
      const result = callback(data, packet);
      if (result && typeof result.then === "function") {
        result.then(undefined, (error) => this._listenerFailed(packet, error));
      }
    } catch (error) {
      this._listenerFailed(packet, error);
    }
  }

  _invokeCallback(callback, error, channel) {
    try {
      callback(error, channel);
    } catch (thrown) {
      this._warn("subscribe callback failed", { error: thrown });
    }
  }

  _listenerFailed(packet, error) {
    if (packet.event === ClientEvents.WARNING) {
      console.error("fastapi_channels: a channels:warning listener failed", error);
      return;
    }
    this._warn(`listener for "${packet.event}" failed`, { packet, error });
  }

  _warn(message, details = {}) {
    const warning = { message, ...details };
    if (this._listeners.get(ClientEvents.WARNING)?.size) {
      this._emitLocal(ClientEvents.WARNING, warning);
    } else {
      console.warn(`fastapi_channels: ${message}`, details);
    }
  }
}
