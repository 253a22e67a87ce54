// pushhub.js: the browser client for pushhub. An ES module with no dependencies.
//
// It does the hard parts of a long-lived WebSocket so applications need not: reconnect
// with full-jitter backoff, only for close codes that allow it; resubscribe everything;
// recover durable channels from the last offset and epoch; notice a dead connection from
// missed server pings; wait while the browser is offline; fetch and refresh tokens.
// docs/client.md is the guide, docs/protocol.md the wire protocol it speaks.

/** The delay in ms before reconnect attempt `attempt` (0 for the first retry): uniform in
 * [0, min(cap, base * 2^attempt)]. Full jitter spreads the reconnects of many browsers
 * after a shared outage (a deploy closes every socket with 1012) instead of sending them
 * back in waves. `random` is injectable so the schedule can be tested. */
export function backoffDelay(attempt, { base = 500, cap = 20000, random = Math.random } = {}) {
  const n = Math.min(Math.max(Math.floor(attempt) || 0, 0), 64);
  return random() * Math.min(cap, base * 2 ** n);
}

/** Whether the client should reconnect after the server closed with `code`:
 * 4000-4499 yes, 4500-4999 no, and of the standard codes only those a new connection
 * does not repeat by itself (the same rule as pushhub/errors.py). */
export function shouldReconnect(code) {
  if (code >= 4000 && code < 4500) return true;
  if (code >= 4500 && code < 5000) return false;
  return [1001, 1006, 1009, 1011, 1012, 1013, 1014].includes(code);
}

/** A stable key for a presence member: its user id, or its connection id if anonymous. */
export function memberKey(member) {
  return member.user != null ? "u:" + member.user : "c:" + member.client;
}

/** An error from the server (`code` as in docs/protocol.md) or from the client itself
 * (`disconnected`, `timeout`, `token`). */
export class PushhubError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "PushhubError";
    this.code = code;
  }
}

const TOKEN_EXPIRED = 4002;
// Browsers let a page close with 1000 or 3000-4999 only; 1006 is what the browser itself
// reports for a connection that died, so a dropped socket reads the same either way.
const DROPPED = 1006;
// setTimeout fires at once beyond this (2^31-1 ms, about 24.8 days).
const MAX_TIMER = 2147483647;

class Emitter {
  #handlers = new Map();

  /** Call `fn` on every `type` event; returns a function that removes it. */
  on(type, fn) {
    let set = this.#handlers.get(type);
    if (!set) this.#handlers.set(type, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  off(type, fn) {
    this.#handlers.get(type)?.delete(fn);
  }

  _emit(type, ...args) {
    for (const fn of [...(this.#handlers.get(type) ?? [])]) {
      // A throwing handler must not break the frame loop; report it like an uncaught error.
      try {
        fn(...args);
      } catch (err) {
        setTimeout(() => {
          throw err;
        });
      }
    }
  }
}

function defaultUrl() {
  const loc = globalThis.location;
  return loc ? (loc.protocol === "https:" ? "wss://" : "ws://") + loc.host + "/ws" : "";
}

/** One channel of a Pushhub connection. Made by `hub.subscribe()`. Events: `message`
 * (data, event), `join` (member), `leave` (member), `count` (counts), `subscribed`
 * (info), `error` (err). */
export class Subscription extends Emitter {
  #hub;
  #token;

  constructor(hub, channel, options) {
    super();
    this.#hub = hub;
    this.channel = channel;
    /** pending | subscribing | subscribed | unsubscribed | failed */
    this.state = "pending";
    /** The last durable position processed, {offset, epoch}, or null. */
    this.position = options.since ?? null;
    /** The last recovery's outcome: true, false, or null when none was needed. */
    this.recovered = null;
    this.#token = options.token;
    this._ever = false; // whether it was ever subscribed, so a new subscribe is a re-subscribe
    this._attempt = 0;
    this._handlers(options);
  }

  _handlers(o) {
    if (o.onMessage) this.on("message", o.onMessage);
    if (o.onJoin) this.on("join", o.onJoin);
    if (o.onLeave) this.on("leave", o.onLeave);
    if (o.onCount) this.on("count", o.onCount);
    if (o.onSubscribed) this.on("subscribed", o.onSubscribed);
    if (o.onError) this.on("error", o.onError);
  }

  async _frame() {
    const frame = { type: "subscribe", channel: this.channel };
    if (this.position) frame.since = { offset: this.position.offset, epoch: this.position.epoch };
    const token = typeof this.#token === "function" ? await this.#token(this.channel) : this.#token;
    if (token != null) frame.token = token;
    return frame;
  }

  _event(ev) {
    if (ev.type === "message") {
      if (typeof ev.offset === "number") {
        const p = this.position;
        // A message already processed (same epoch, offset not beyond ours) is not repeated.
        if (p && p.epoch === ev.epoch && ev.offset <= p.offset) return;
        this.position = { offset: ev.offset, epoch: ev.epoch };
      }
      this._emit("message", ev.data, ev);
    } else if (ev.type === "presence_count") {
      // Past the channel's member bound the server sends counts instead of join and
      // leave; joinLeave true means events go on from here: read the member list again.
      this._emit("count", {
        users: ev.users,
        connections: ev.connections,
        joinLeave: ev.join_leave === true,
      });
    } else {
      const member = { user: ev.user ?? null, info: ev.info ?? null };
      if (ev.client) member.client = ev.client;
      this._emit(ev.type, member);
    }
  }

  _subscribed(reply) {
    this.state = "subscribed";
    this._attempt = 0;
    if (typeof reply.offset === "number")
      this.position = { offset: reply.offset, epoch: reply.epoch };
    const resubscribed = this._ever;
    this._ever = true;
    // After a gap, a channel that cannot recover (not durable) has lost what was sent.
    this.recovered = "recovered" in reply ? reply.recovered : resubscribed ? false : null;
    this._emit("subscribed", {
      recovered: this.recovered,
      resubscribed,
      offset: reply.offset ?? null,
      epoch: reply.epoch ?? null,
    });
  }

  /** Stop receiving the channel. Resolves once the server confirmed, or at once offline. */
  unsubscribe() {
    return this.#hub._unsubscribe(this);
  }

  presence(options) {
    return this.#hub.presence(this.channel, options);
  }

  presenceAll(options) {
    return this.#hub.presenceAll(this.channel, options);
  }

  history(options) {
    return this.#hub.history(this.channel, options);
  }

  publish(data, options) {
    return this.#hub.publish(this.channel, data, options);
  }
}

/** A connection to pushhub that keeps itself alive. Events: `state` (state, previous),
 * `connecting`, `connected` (info), `disconnected` (info), `offline`, `online`,
 * `refreshed` (info), `error` (err). States: disconnected, connecting, connected,
 * reconnecting, failed. */
export class Pushhub extends Emitter {
  #opt;
  #token;
  #ws = null;
  #gen = 0; // bumped per connection attempt; stale callbacks compare and bail out
  #attempt = 0;
  #nextId = 0;
  #pending = new Map();
  #subs = new Map();
  #timers = {};
  #lastSeen = 0;
  #connectedAt = 0;
  #everConnected = false;
  #listening = false;
  #onOnline = () => this.#online();
  #onOffline = () => this.#offline();

  constructor(options = {}) {
    super();
    this.#opt = {
      url: defaultUrl(),
      backoff: {},
      connectTimeout: 10000,
      requestTimeout: 10000,
      refreshMargin: 30000,
      stableAfter: 5000,
      WebSocket: globalThis.WebSocket,
      ...options,
    };
    this.#token = options.token;
    this.url = this.#opt.url;
    this.state = "disconnected";
    /** From the last `connected` reply: connection id, user, seconds between pings,
     * token expiry (unix seconds) or null. */
    this.client = null;
    this.user = null;
    this.pingInterval = null;
    this.expiresAt = null;
  }

  /** Start connecting (and keep reconnecting until `close()`). */
  connect() {
    if (this.state !== "disconnected" && this.state !== "failed") return;
    if (!this.#listening && globalThis.addEventListener) {
      globalThis.addEventListener("online", this.#onOnline);
      globalThis.addEventListener("offline", this.#onOffline);
      this.#listening = true;
    }
    this.#attempt = 0;
    if (globalThis.navigator?.onLine === false) this.#setState("reconnecting");
    else this.#open();
  }

  /** Close the connection and stop reconnecting. Subscriptions are kept: a later
   * `connect()` subscribes them again. */
  close() {
    if (this.#listening) {
      globalThis.removeEventListener("online", this.#onOnline);
      globalThis.removeEventListener("offline", this.#onOffline);
      this.#listening = false;
    }
    const ws = this.#ws;
    this.#ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      ws.close(1000);
    }
    const was = this.state;
    this.#gen++;
    this.#setState("disconnected");
    this.#lost();
    if (was !== "disconnected" && was !== "failed") {
      const info = { code: 1000, reason: "closed by the client", reconnect: false, delay: null };
      this._emit("disconnected", { ...info, wasConnected: was === "connected" });
    }
  }

  /** Replace the token (a string or an async function) used from the next connect on. */
  setToken(token) {
    this.#token = token;
  }

  /** Subscribe to `channel`, or add handlers to its existing subscription. `options`:
   * onMessage(data, event), onJoin(member), onLeave(member), onSubscribed(info),
   * onError(err), since {offset, epoch}, token (string or async (channel) => string). */
  subscribe(channel, options = {}) {
    if (typeof channel !== "string" || !channel)
      throw new TypeError("channel must be a non-empty string");
    let sub = this.#subs.get(channel);
    if (sub) {
      sub._handlers(options);
      return sub;
    }
    sub = new Subscription(this, channel, options);
    this.#subs.set(channel, sub);
    if (this.state === "connected") this.#subscribe(sub);
    return sub;
  }

  /** The subscription of `channel`, if any. */
  getSubscription(channel) {
    return this.#subs.get(channel);
  }

  subscriptions() {
    return [...this.#subs.values()];
  }

  /** One page of a channel's members: {members, next_cursor}. Subscribe first. */
  async presence(channel, { limit, cursor } = {}) {
    const reply = await this.#request({ type: "presence", channel, limit, cursor });
    return { members: reply.members, next_cursor: reply.next_cursor };
  }

  /** Every member of a channel, following cursors (at most `maxPages` pages). */
  async presenceAll(channel, { limit = 1000, maxPages = 100 } = {}) {
    const seen = new Map();
    let cursor;
    for (let page = 0; page < maxPages; page++) {
      const reply = await this.presence(channel, { limit, cursor });
      for (const m of reply.members) seen.set(memberKey(m), m);
      if (!(cursor = reply.next_cursor)) break;
    }
    return [...seen.values()];
  }

  /** Publish over the socket (channels with `client_publish`): {channel, offset?, epoch?}. */
  async publish(channel, data, { idempotencyKey } = {}) {
    const reply = await this.#request({
      type: "publish",
      channel,
      data,
      idempotency_key: idempotencyKey,
    });
    delete reply.type;
    delete reply.id;
    return reply;
  }

  /** A durable channel's kept messages: {offset, epoch, messages, next_since}. A reply
   * holds at most recovery_max messages and a bounded number of bytes; pass next_since
   * as `since` for the rest (null: nothing more). Subscribe first. */
  async history(channel, { since, limit, reverse } = {}) {
    const reply = await this.#request({ type: "history", channel, since, limit, reverse });
    return {
      offset: reply.offset,
      epoch: reply.epoch,
      messages: reply.messages,
      next_since: reply.next_since ?? null,
    };
  }

  /** An application-level round trip; resolves to the time it took in ms. */
  async ping() {
    const start = performance.now();
    await this.#request({ type: "ping" });
    return performance.now() - start;
  }

  // ---- connection lifecycle ------------------------------------------------------------

  #setState(state) {
    const previous = this.state;
    if (state === previous) return;
    this.state = state;
    this._emit("state", state, previous);
  }

  async #open() {
    const gen = ++this.#gen;
    this.#clear("retry");
    this.#setState("connecting");
    this._emit("connecting", { attempt: this.#attempt, url: this.url });
    let token;
    try {
      token = await this.#fetchToken("connect");
    } catch (err) {
      if (gen !== this.#gen) return;
      this._emit("error", err);
      return this.#closed(DROPPED, "token callback failed");
    }
    if (gen !== this.#gen) return;
    let ws;
    try {
      ws = new this.#opt.WebSocket(this.url);
    } catch (err) {
      // A malformed URL: retrying cannot help.
      this._emit("error", new PushhubError("bad_url", err.message));
      return this.#closed(4500, "bad url");
    }
    this.#ws = ws;
    this.#lastSeen = Date.now();
    this.#timer("connect", this.#opt.connectTimeout, () => this.#drop("connect timeout"));
    ws.onopen = () => {
      const frame = { type: "connect" };
      if (token != null) frame.token = token;
      else {
        if (this.#opt.user != null) frame.user = this.#opt.user;
        if (this.#opt.info != null) frame.info = this.#opt.info;
      }
      this.#call(
        frame,
        (reply) => this.#onConnected(reply),
        (err) => this.#refused(err),
      );
    };
    ws.onmessage = (ev) => this.#onFrame(ev.data);
    ws.onclose = (ev) => {
      if (ws === this.#ws) this.#closed(ev.code, ev.reason);
    };
    ws.onerror = () => {}; // a close event always follows
  }

  async #fetchToken(reason) {
    const source = this.#token;
    if (typeof source !== "function") return source ?? null;
    let token;
    try {
      token = await source({ reason });
    } catch (err) {
      throw new PushhubError("token", "the token callback failed: " + (err?.message ?? err));
    }
    if (typeof token !== "string" || !token) {
      throw new PushhubError("token", "the token callback must resolve to a non-empty string");
    }
    return token;
  }

  #onConnected(reply) {
    this.#clear("connect");
    this.client = reply.client;
    this.user = reply.user ?? null;
    this.pingInterval = typeof reply.ping_interval === "number" ? reply.ping_interval : null;
    this.expiresAt = reply.expires_at ?? null;
    this.#connectedAt = Date.now();
    const reconnected = this.#everConnected;
    this.#everConnected = true;
    this.#setState("connected");
    this.#watch();
    this.#scheduleRefresh();
    for (const sub of this.#subs.values()) this.#subscribe(sub);
    this._emit("connected", {
      client: this.client,
      user: this.user,
      pingInterval: this.pingInterval,
      expiresAt: this.expiresAt,
      reconnected,
    });
  }

  #refused(err) {
    if (err.code === "disconnected") return;
    this._emit("error", err);
    // A refused token is followed by the server's close, whose code says what to do
    // (4002 expired: fetch another; 4004 too many connections: back off; 4501: stop);
    // the connect timeout covers a close that never comes. While Redis is away, retry.
    // Anything else is a malformed connect frame that would be refused again.
    const closing = ["unauthorized", "token_expired", "too_many_connections", "rate_limited"];
    if (closing.includes(err.code)) return;
    if (err.code === "unavailable") this.#drop("connect refused: unavailable");
    else this.#drop("connect refused: " + err.code, 4500);
  }

  /** Give up on the current socket without waiting for its close handshake, which a dead
   * connection would never finish. */
  #drop(reason, code = DROPPED) {
    const ws = this.#ws;
    if (!ws) return;
    this.#ws = null;
    ws.onopen = ws.onmessage = ws.onclose = null;
    ws.close(1000);
    this.#closed(code, reason);
  }

  #closed(code, reason) {
    this.#ws = null;
    const wasConnected = this.state === "connected";
    this.#lost();
    if (this.state === "disconnected") return;
    if (wasConnected && Date.now() - this.#connectedAt >= this.#opt.stableAfter) this.#attempt = 0;
    // An expired token is worth a reconnect only if a fresh one can be fetched.
    let again = shouldReconnect(code);
    if (code === TOKEN_EXPIRED && typeof this.#token !== "function") again = false;
    let delay = null;
    if (!again) this.#setState("failed");
    else {
      this.#setState("reconnecting");
      if (globalThis.navigator?.onLine !== false) {
        delay = backoffDelay(this.#attempt++, { ...this.#opt.backoff, random: this.#opt.random });
        this.#timer("retry", delay, () => this.#open());
      }
    }
    this._emit("disconnected", {
      code,
      reason: reason ?? "",
      reconnect: again,
      delay,
      wasConnected,
    });
  }

  /** Forget everything tied to the socket that just went away. */
  #lost() {
    for (const name of ["connect", "watch", "refresh", "retry"]) this.#clear(name);
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) p.fail(new PushhubError("disconnected", "the connection closed"));
    for (const sub of this.#subs.values()) if (sub.state !== "failed") sub.state = "pending";
  }

  #online() {
    this._emit("online");
    if (this.state === "reconnecting") {
      this.#attempt = 0;
      this.#open();
    }
  }

  #offline() {
    this._emit("offline");
    if (this.#ws) this.#drop("browser offline");
    else if (this.state === "reconnecting") this.#clear("retry");
  }

  // ---- dead connection detection ---------------------------------------------------------

  /** The server sends a `ping` event every `ping_interval` s: silence for longer than that
   * plus `pingMargin` (by default one more interval) means the connection is dead even if
   * the socket looks open. */
  #watch() {
    if (this.pingInterval == null) return;
    const limit = this.pingInterval * 1000 + (this.#opt.pingMargin ?? this.pingInterval * 1000);
    const check = () => {
      const idle = Date.now() - this.#lastSeen;
      if (idle >= limit) this.#drop("no ping from the server for " + idle + " ms");
      else this.#timer("watch", limit - idle, check);
    };
    this.#timer("watch", limit, check);
  }

  // ---- token refresh --------------------------------------------------------------------

  #scheduleRefresh(retryIn) {
    if (this.expiresAt == null || typeof this.#token !== "function") return;
    const now = Date.now();
    const due = this.expiresAt * 1000;
    // Refresh a margin before expiry (at most a third of the time left), and never more
    // often than once a second, even if this clock runs ahead of the server's.
    const early = due - Math.min(this.#opt.refreshMargin, (due - now) / 3);
    const at = retryIn != null ? now + retryIn : Math.max(early, now + 1000);
    const tick = () => {
      if (Date.now() < at) this.#timer("refresh", at - Date.now(), tick);
      else this.#refresh();
    };
    this.#timer("refresh", at - Date.now(), tick);
  }

  async #refresh() {
    const gen = this.#gen;
    let token;
    try {
      token = await this.#fetchToken("refresh");
    } catch (err) {
      if (gen !== this.#gen) return;
      this._emit("error", err);
      return this.#scheduleRefresh(5000);
    }
    if (gen !== this.#gen || this.state !== "connected") return;
    this.#call(
      { type: "refresh", token },
      (reply) => {
        this.expiresAt = reply.expires_at ?? null;
        this._emit("refreshed", { expiresAt: this.expiresAt });
        this.#scheduleRefresh();
      },
      (err) => {
        if (err.code === "disconnected") return;
        this._emit("error", err);
        // Try again while the token lasts; at expiry the server closes with 4002 and the
        // reconnect fetches a fresh token anyway.
        if (err.code !== "unknown_type") this.#scheduleRefresh(5000);
      },
    );
  }

  // ---- frames --------------------------------------------------------------------------

  #send(frame) {
    if (this.#ws?.readyState === 1) this.#ws.send(JSON.stringify(frame));
  }

  /** Send a frame with a fresh id; `ok` or `fail` runs synchronously when the reply is
   * read, so nothing that follows it in the same server frame can overtake it. */
  #call(frame, ok, fail, timeout = 0) {
    const id = ++this.#nextId;
    const entry = { ok, fail };
    if (timeout > 0) {
      entry.timer = setTimeout(() => {
        this.#pending.delete(id);
        fail(new PushhubError("timeout", `no reply to ${frame.type} within ${timeout} ms`));
      }, timeout);
    }
    this.#pending.set(id, entry);
    this.#send({ ...frame, id });
  }

  #request(frame) {
    return new Promise((resolve, reject) => {
      if (this.state !== "connected") reject(new PushhubError("disconnected", "not connected"));
      else this.#call(frame, resolve, reject, this.#opt.requestTimeout);
    });
  }

  #onFrame(data) {
    this.#lastSeen = Date.now();
    if (typeof data !== "string") return;
    // One server frame may carry several events, one per line (docs/protocol.md).
    for (const line of data.split("\n")) {
      let ev;
      try {
        ev = JSON.parse(line);
      } catch {
        this._emit(
          "error",
          new PushhubError("bad_json", "the server sent a frame that is not JSON"),
        );
        continue;
      }
      this.#dispatch(ev);
    }
  }

  #dispatch(ev) {
    if (ev.id != null && this.#pending.has(ev.id)) {
      const entry = this.#pending.get(ev.id);
      this.#pending.delete(ev.id);
      clearTimeout(entry.timer);
      if (ev.type === "error") entry.fail(new PushhubError(ev.code, ev.message));
      else entry.ok(ev);
      return;
    }
    const sub = ev.channel != null ? this.#subs.get(ev.channel) : undefined;
    switch (ev.type) {
      case "message":
      case "join":
      case "leave":
      case "presence_count":
        if (sub && (sub.state === "subscribed" || sub.state === "subscribing")) sub._event(ev);
        break;
      case "unsubscribed":
        // The server lost messages of a durable channel on their way to this node:
        // subscribe again from the last position to get them, or hear recovered: false.
        if (ev.reason === "recover" && sub?.state === "subscribed") {
          sub.state = "pending";
          this.#subscribe(sub);
        }
        break;
      case "error":
        this._emit("error", new PushhubError(ev.code, ev.message));
        break;
      // "ping" and anything new: receiving it already fed the watchdog.
    }
  }

  async #subscribe(sub) {
    const gen = this.#gen;
    if (sub.state !== "pending") return;
    sub.state = "subscribing";
    let frame;
    try {
      frame = await sub._frame();
    } catch (err) {
      if (gen !== this.#gen || this.#subs.get(sub.channel) !== sub) return;
      sub.state = "pending";
      sub._emit(
        "error",
        new PushhubError(
          "token",
          "the subscription token callback failed: " + (err?.message ?? err),
        ),
      );
      return this.#retrySubscribe(sub, gen);
    }
    if (gen !== this.#gen || sub.state !== "subscribing") return;
    this.#call(
      frame,
      (reply) => sub.state === "subscribing" && sub._subscribed(reply),
      (err) => {
        if (err.code === "disconnected" || sub.state !== "subscribing") return;
        sub._emit("error", err);
        if (err.code === "unavailable") {
          sub.state = "pending";
          this.#retrySubscribe(sub, gen);
        } else {
          sub.state = "failed";
          this.#subs.delete(sub.channel);
        }
      },
    );
  }

  #retrySubscribe(sub, gen) {
    setTimeout(
      () => {
        if (
          gen === this.#gen &&
          this.state === "connected" &&
          this.#subs.get(sub.channel) === sub
        ) {
          this.#subscribe(sub);
        }
      },
      backoffDelay(sub._attempt++, { ...this.#opt.backoff, random: this.#opt.random }),
    );
  }

  _unsubscribe(sub) {
    const active = sub.state === "subscribed" || sub.state === "subscribing";
    sub.state = "unsubscribed";
    if (this.#subs.get(sub.channel) === sub) this.#subs.delete(sub.channel);
    if (!active || this.state !== "connected") return Promise.resolve();
    return new Promise((resolve) => {
      this.#call(
        { type: "unsubscribe", channel: sub.channel },
        () => resolve(),
        () => resolve(),
        this.#opt.requestTimeout,
      );
    });
  }

  // ---- timers --------------------------------------------------------------------------

  #timer(name, ms, fn) {
    clearTimeout(this.#timers[name]);
    this.#timers[name] = setTimeout(fn, Math.min(Math.max(ms, 0), MAX_TIMER));
  }

  #clear(name) {
    clearTimeout(this.#timers[name]);
    delete this.#timers[name];
  }
}
