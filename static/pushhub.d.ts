// Type declarations for pushhub.js, the browser client of pushhub. See docs/client.md.

/** Any JSON value: what `data` of a message may be. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A durable channel's position: the last message processed. The epoch is "" (with
 * offset 0) for a channel that had no history yet. */
export interface Position {
  offset: number;
  epoch: string;
}

/** A channel's member counts (a `presence_count` event). */
export interface PresenceCounts {
  users: number;
  connections: number;
  /** false: the channel has more members than its bound, and join and leave events
   * stopped; true: they go on from here, so read the member list again. */
  joinLeave: boolean;
}

/** A presence member: a user, or an anonymous connection (`user` null, `client` set). */
export interface Member {
  user: string | null;
  client?: string;
  info: { [key: string]: Json } | null;
  /** Present in presence query answers: the member's connections on all nodes. */
  connections?: number;
}

export interface PresencePage {
  members: Member[];
  next_cursor: string | null;
}

export interface History {
  offset: number;
  epoch: string;
  messages: { offset: number; data: Json }[];
  /** Pass as `since` (same `reverse`) to read on; null when there is nothing more. A
   * reply holds at most `recovery_max` messages and a quarter of the outbound queue. */
  next_since: number | null;
}

export interface Published {
  channel: string;
  offset?: number;
  epoch?: string;
}

/** A `message` event as it came from the server. */
export interface PushhubMessage {
  type: "message";
  channel: string;
  data: Json;
  offset?: number;
  epoch?: string;
}

export interface BackoffOptions {
  /** Ceiling of the first retry's delay in ms. Default 500. */
  base?: number;
  /** Largest ceiling in ms. Default 20000. */
  cap?: number;
  /** A source of numbers in [0, 1). Default Math.random. */
  random?: () => number;
}

/** The delay in ms before retry `attempt` (0 for the first): uniform in
 * [0, min(cap, base * 2^attempt)], full jitter. */
export function backoffDelay(attempt: number, options?: BackoffOptions): number;

/** Whether to reconnect after a close with `code`: 4000-4499 and 1001, 1006, 1009, 1011,
 * 1012, 1013, 1014 yes; 4500-4999 and every other code no. */
export function shouldReconnect(code: number): boolean;

/** A stable key for a member: `u:<user>`, or `c:<client>` for anonymous members. */
export function memberKey(member: Pick<Member, "user" | "client">): string;

/** A refusal from the server (`code` as in docs/protocol.md) or from the client:
 * `disconnected`, `timeout`, `token`, `bad_json`, `bad_url`. */
export class PushhubError extends Error {
  readonly name: "PushhubError";
  readonly code: string;
  constructor(code: string, message: string);
}

export type TokenSource =
  string | ((context: { reason: "connect" | "refresh" }) => Promise<string> | string);
export type SubscriptionTokenSource = string | ((channel: string) => Promise<string> | string);

export interface PushhubOptions {
  /** Default: ws(s)://<this page's host>/ws. */
  url?: string;
  /** A connection token, or a function fetching one: called before every connection and
   * again `refreshMargin` before the token expires. Without it: development mode. */
  token?: TokenSource;
  /** Development mode only: the user id and presence info to state. */
  user?: string;
  info?: { [key: string]: Json };
  /** Reconnect backoff in ms. Default { base: 500, cap: 20000 }. */
  backoff?: { base?: number; cap?: number };
  /** Random source for the backoff, for tests. */
  random?: () => number;
  /** Silence allowed beyond the server's ping_interval before the connection counts as
   * dead, in ms. Default: one more ping_interval (so 2 × ping_interval in all). */
  pingMargin?: number;
  /** Time for a socket to open and answer `connect`, in ms. Default 10000. */
  connectTimeout?: number;
  /** Time for presence, publish, history and ping answers, in ms. Default 10000. */
  requestTimeout?: number;
  /** Refresh the token this long before it expires (at most a third of its remaining
   * lifetime), in ms. Default 30000. */
  refreshMargin?: number;
  /** A connection that lasted this long (ms) starts the backoff over. Default 5000. */
  stableAfter?: number;
  /** The WebSocket constructor. Default globalThis.WebSocket. */
  WebSocket?: typeof WebSocket;
}

export type State = "disconnected" | "connecting" | "connected" | "reconnecting" | "failed";

export interface ConnectedInfo {
  client: string;
  user: string | null;
  /** Seconds between the server's ping events. */
  pingInterval: number | null;
  /** Token expiry, unix seconds; null in development mode. */
  expiresAt: number | null;
  /** Whether this is not the first connection of this client. */
  reconnected: boolean;
}

export interface DisconnectedInfo {
  code: number;
  reason: string;
  /** Whether the client will reconnect by itself. */
  reconnect: boolean;
  /** ms until the next attempt; null when not reconnecting or waiting for the network. */
  delay: number | null;
  /** Whether the socket had been connected (false: an attempt failed). */
  wasConnected: boolean;
}

export interface SubscribedInfo {
  /** true: every missed message was replayed before this event; false: messages may
   * have been missed (resynchronise); null: first subscription, nothing to recover. */
  recovered: boolean | null;
  /** Whether this is a subscribe again (after a reconnect or a recover notice). */
  resubscribed: boolean;
  /** The channel's position, on durable channels. */
  offset: number | null;
  epoch: string | null;
}

export interface SubscriptionOptions {
  onMessage?: (data: Json, event: PushhubMessage) => void;
  onJoin?: (member: Member) => void;
  onLeave?: (member: Member) => void;
  /** Member counts, sent instead of join and leave past the channel's member bound. */
  onCount?: (counts: PresenceCounts) => void;
  onSubscribed?: (info: SubscribedInfo) => void;
  onError?: (error: PushhubError) => void;
  /** Recover from this position on the first subscribe (e.g. one saved across reloads). */
  since?: Position;
  /** A subscription token, or a function of the channel fetching one before each subscribe. */
  token?: SubscriptionTokenSource;
}

interface SubscriptionEvents {
  message: (data: Json, event: PushhubMessage) => void;
  join: (member: Member) => void;
  leave: (member: Member) => void;
  count: (counts: PresenceCounts) => void;
  subscribed: (info: SubscribedInfo) => void;
  error: (error: PushhubError) => void;
}

export class Subscription {
  readonly channel: string;
  readonly state: "pending" | "subscribing" | "subscribed" | "unsubscribed" | "failed";
  /** The last durable position processed, or null. */
  readonly position: Position | null;
  /** The last subscribe's recovery outcome (see SubscribedInfo.recovered). */
  readonly recovered: boolean | null;
  on<K extends keyof SubscriptionEvents>(type: K, handler: SubscriptionEvents[K]): () => void;
  off<K extends keyof SubscriptionEvents>(type: K, handler: SubscriptionEvents[K]): void;
  unsubscribe(): Promise<void>;
  presence(options?: { limit?: number; cursor?: string | null }): Promise<PresencePage>;
  presenceAll(options?: { limit?: number; maxPages?: number }): Promise<Member[]>;
  history(options?: { since?: number; limit?: number; reverse?: boolean }): Promise<History>;
  publish(data: Json, options?: { idempotencyKey?: string }): Promise<Published>;
}

interface PushhubEvents {
  state: (state: State, previous: State) => void;
  connecting: (info: { attempt: number; url: string }) => void;
  connected: (info: ConnectedInfo) => void;
  disconnected: (info: DisconnectedInfo) => void;
  offline: () => void;
  online: () => void;
  refreshed: (info: { expiresAt: number | null }) => void;
  error: (error: PushhubError) => void;
}

export class Pushhub {
  constructor(options?: PushhubOptions);
  readonly url: string;
  readonly state: State;
  /** From the last `connected` reply. */
  readonly client: string | null;
  readonly user: string | null;
  readonly pingInterval: number | null;
  readonly expiresAt: number | null;
  on<K extends keyof PushhubEvents>(type: K, handler: PushhubEvents[K]): () => void;
  off<K extends keyof PushhubEvents>(type: K, handler: PushhubEvents[K]): void;
  connect(): void;
  close(): void;
  setToken(token: TokenSource | undefined): void;
  subscribe(channel: string, options?: SubscriptionOptions): Subscription;
  getSubscription(channel: string): Subscription | undefined;
  subscriptions(): Subscription[];
  presence(
    channel: string,
    options?: { limit?: number; cursor?: string | null },
  ): Promise<PresencePage>;
  presenceAll(channel: string, options?: { limit?: number; maxPages?: number }): Promise<Member[]>;
  publish(channel: string, data: Json, options?: { idempotencyKey?: string }): Promise<Published>;
  history(
    channel: string,
    options?: { since?: number; limit?: number; reverse?: boolean },
  ): Promise<History>;
  /** An application-level round trip; resolves to its duration in ms. */
  ping(): Promise<number>;
}
