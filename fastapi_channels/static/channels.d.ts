// Types of channels.js, the fastapi_channels JavaScript client.

/** Reserved event names on the wire. */
export declare const ServerEventTypes: Readonly<{
  SOCKET_PING: "ping";
  SOCKET_PONG: "pong";
  SOCKET_READY: "ready";
  SOCKET_DISCONNECT: "disconnect";
  CHANNEL_SUBSCRIBE_REQUEST: "subscribe-channel-request";
  CHANNEL_SUBSCRIBE_RESPONSE: "subscribe-channel-response";
  CHANNEL_UNSUBSCRIBE_REQUEST: "unsubscribe-channel-request";
  ERROR: "channels:error";
  AUTHENTICATE: "channels:authenticate";
  AUTHENTICATE_RESPONSE: "channels:authenticate-response";
  REPLY: "channels:reply";
  PRESENCE: "channels:presence";
  JOIN: "channels:join";
  LEAVE: "channels:leave";
  SUBSCRIBED: "channels:subscribed";
  UNSUBSCRIBED: "channels:unsubscribed";
}>;

/** What the client announces at connect: the `channels-features` query parameter. */
export declare const FEATURES: Readonly<{
  parameter: "channels-features";
  value: "reconnect-advice,server-subscriptions";
}>;

/** Where an event stands in a history channel: an offset within an epoch. */
export interface Position {
  offset: number;
  epoch: string;
}

/** A presence channel's member: the info the server chose, with at least an `id`. */
export interface Member {
  id: string | number;
  [key: string]: unknown;
}

/**
 * The data of `channels:presence`: a presence channel's member list. `partial` marks a list
 * that may lack members (the server's broker is refilling its records after a restart): it is
 * merged into `SocketChannel.members`, and a complete list follows.
 */
export interface MemberList {
  channel: string;
  members: Member[];
  partial?: true;
}

/** Connection states, with Envuso's values. */
export declare const ConnectionStatus: Readonly<{
  NONE: "none";
  CONNECTING: "connecting";
  CONNECTED: "connected";
  DISCONNECTED: "disconnected";
  RE_CONNECTING: "re-connecting";
}>;
export type ConnectionState = (typeof ConnectionStatus)[keyof typeof ConnectionStatus];

/** Events the client itself emits through `on()`. */
export declare const ClientEvents: Readonly<{
  STATE: "channels:state";
  WARNING: "channels:warning";
  SUBSCRIPTION: "channels:subscription";
  RENEWAL: "channels:renewal";
}>;

/** A packet as it travels on the wire. */
export interface Packet<T = unknown> {
  event: string;
  data?: T;
  channel?: string;
  id?: number | string;
  error?: ReplyErrorBody;
}

/** The `error` member of a reply, and the `data` of a `channels:error` packet. */
export interface ReplyErrorBody {
  code?: string;
  message?: string;
  [key: string]: unknown;
}

/** `channels:state`: the connection moved to `state`. */
export interface StateChange {
  state: ConnectionState;
  previous: ConnectionState;
  /** The connection id, on `connected`. */
  id?: string | null;
  /** The close code, when a connection closed. */
  code?: number;
  /** The reason the server gave (`disconnect` packet or close frame), or the error's message. */
  reason?: string;
  /** The failure that caused this state, if any (a `RefusedError` for a refusal). */
  error?: Error;
  /** On `re-connecting`: the number of the next attempt, and the delay before it in ms. */
  attempt?: number;
  delay?: number;
}

/** `channels:subscription`: the server answered a subscription request. */
export interface SubscriptionChange {
  channel: string;
  successful: boolean;
  reason: string | null;
  /** True when this answers the automatic re-subscription after a reconnect. */
  resubscribed: boolean;
  /** On a history channel: the position the channel continues from. */
  position?: Position | null;
  /** After subscribing from a position: whether every missed event was replayed; `false`
   * means the events could not be replayed, so reload the state they build. */
  recovered?: boolean;
}

/** `channels:renewal`: the outcome of an in-band token renewal. */
export interface RenewalChange {
  successful: boolean;
  reason: string | null;
  /** The new token's `exp` (seconds since the epoch), when known. */
  expiresAt: number | null;
}

/** The server's answer to `channels:authenticate`. */
export interface RenewalAnswer {
  successful: boolean;
  expires_at?: number | null;
  reason?: string;
}

/** `channels:warning`: something unexpected happened; never thrown. */
export interface Warning {
  message: string;
  packet?: Packet;
  data?: unknown;
  error?: unknown;
}

export interface CloseInfo {
  code: number;
  reason: string;
  wasClean?: boolean;
}

export interface ReconnectOptions {
  /** Delay before the first attempt, in ms (1000). */
  initialDelay?: number;
  /** Upper bound of a delay, in ms (30000). */
  maxDelay?: number;
  /** Growth per attempt (2). */
  factor?: number;
  /** Share of a delay that is randomly taken off, 0..1 (0.5). */
  jitter?: number;
  /** Consecutive failed attempts before giving up (Infinity). */
  maxAttempts?: number;
  /** Whether a lost connection is re-established; `defaultShouldReconnect` by default. */
  shouldReconnect?: (close: CloseInfo) => boolean;
}

export type TokenProvider = () => string | null | undefined | Promise<string | null | undefined>;

export interface SocketClientOptions {
  /** A token, or a function called before every connection attempt. */
  token?: string | TokenProvider | null;
  /** How the token travels: as the subprotocol (Envuso's way, default), `bearer, <token>`, or `?token=`. */
  tokenTransport?: "subprotocol" | "bearer" | "query";
  /** Extra subprotocols to offer. */
  protocols?: string | string[];
  /** A standard WebSocket implementation; `globalThis.WebSocket` by default. */
  WebSocket?: new (url: string, protocols?: string | string[]) => WebSocket;
  /** `false` to never reconnect, or overrides of the backoff. */
  reconnect?: false | ReconnectOptions;
  /** Time allowed from opening the socket to the `ready` packet, in ms (10000). */
  connectTimeout?: number;
  /** Default time allowed for a reply, in ms (10000). */
  requestTimeout?: number;
  /** With a token provider: renew the token in-band this many ms before its `exp` (off). */
  renewBefore?: number | null;
}

export interface RequestOptions {
  /** Time allowed for the reply, in ms. */
  timeout?: number;
  /** Send the request as a channel event of this channel. */
  channel?: string;
  /** The idempotency key sent with the packet (a fresh random one when `retries` is set). */
  key?: string;
  /** Times the request is sent again, with the same key, after `outcome-unknown`,
   * `broker-unavailable` or no reply (0 by default). */
  retries?: number;
  /** The n-th retry waits `retryDelay * n` ms first (500 by default). */
  retryDelay?: number;
}

export type Listener<T = any> = (data: T, packet: Packet<T>) => unknown;

export declare class ChannelsError extends Error {}
/** A refusal for good (closed with a code the reconnect rule does not retry). */
export declare class RefusedError extends ChannelsError {
  readonly reason: string;
  readonly code: number | null;
}
export declare class SubscriptionError extends ChannelsError {
  readonly channel: string;
  readonly reason: string;
}
export declare class ConnectionClosedError extends ChannelsError {
  readonly code: number | null;
  readonly reason: string;
}
export declare class TimeoutError extends ChannelsError {}
export declare class RenewalError extends ChannelsError {
  readonly reason: string;
}
export declare class ReplyError extends ChannelsError {
  readonly code: string | null;
  readonly error: ReplyErrorBody;
}

export declare function defaultShouldReconnect(close: CloseInfo): boolean;
/** A JWT's `exp` claim (unverified), or null. */
export declare function jwtExpiry(token: string | null | undefined): number | null;
/** The wait (ms) a `disconnect`'s `reconnect_after` advises, up to a tenth more; or null. */
export declare function advisedDelay(data: unknown, random?: () => number): number | null;
export declare function backoffDelay(
  attempt: number,
  options: Required<Pick<ReconnectOptions, "initialDelay" | "maxDelay" | "factor" | "jitter">>,
  random?: () => number,
): number;

export declare class SocketChannel {
  readonly name: string;
  readonly state: "pending" | "subscribed" | "denied" | "unsubscribed";
  readonly subscribed: boolean;
  /** On a history channel: the last position received; the client resubscribes from it. */
  readonly position: Position | null;
  /** After subscribing from a position: whether everything missed was replayed. */
  readonly recovered: boolean | null;
  /** On a presence channel: the members by id (a `partial` list is merged, a complete one replaces them). */
  readonly members: Map<string | number, Member>;
  getName(): string;
  listen<T = any>(event: string, callback: Listener<T>): this;
  on<T = any>(event: string, callback: Listener<T>): this;
  once<T = any>(event: string, callback: Listener<T>): this;
  off(event: string, callback?: Listener): this;
  /** @throws ConnectionClosedError when not connected. */
  emit(event: string, data?: unknown): void;
  request<T = unknown>(event: string, data?: unknown, options?: Omit<RequestOptions, "channel">): Promise<T>;
  unsubscribe(): void;
}

export declare class SocketClient {
  constructor(url: string, options?: SocketClientOptions | string | string[]);
  url: string;
  readonly id: string | null;
  readonly state: ConnectionState;
  usingJwt(token: string | TokenProvider | null): this;
  getConnectionStatus(): ConnectionState;
  getWs(): WebSocket | null;
  hasSubscription(name: string): boolean;
  channel(name: string): SocketChannel | undefined;
  connect(options?: { retry?: boolean }): Promise<{ id: string }>;
  disconnect(code?: number, reason?: string): Promise<void>;
  subscribe(
    name: string,
    callback?:
      | ((error: Error | null, channel: SocketChannel | null) => void)
      | {
          since?: Position;
          callback?: (error: Error | null, channel: SocketChannel | null) => void;
        },
  ): Promise<SocketChannel>;
  unsubscribe(name: string): void;
  on(event: "channels:state", callback: (change: StateChange) => unknown): this;
  on(event: "channels:subscription", callback: (change: SubscriptionChange) => unknown): this;
  on(event: "channels:warning", callback: (warning: Warning) => unknown): this;
  on(event: "channels:renewal", callback: (change: RenewalChange) => unknown): this;
  on(event: "channels:error", callback: Listener<ReplyErrorBody>): this;
  on<T = any>(event: string, callback: Listener<T>): this;
  listen<T = any>(event: string, callback: Listener<T>): this;
  once<T = any>(event: string, callback: Listener<T>): this;
  off(event: string, callback?: (...args: any[]) => unknown): this;
  /** @throws ConnectionClosedError when not connected. */
  emit(event: string, data?: unknown): void;
  request<T = unknown>(event: string, data?: unknown, options?: RequestOptions): Promise<T>;
  renew(token?: string): Promise<RenewalAnswer>;
  renewBefore: number | null;
}
