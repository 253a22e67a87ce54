// Unit tests of static/pushhub.js, run in Chromium by test_client_unit.py.
//
// Each export is one test: it resolves to a summary or throws. A scripted stand-in for
// the server (FakeSocket, injected through the client's `WebSocket` option) plays the
// parts a real pushhub cannot be made to play on demand: token expiry and refresh (the
// server side is not built yet), close codes it does not send, coalesced frames.
import { Pushhub, backoffDelay, shouldReconnect } from "/static/pushhub.js";

function assert(condition, message) {
  if (!condition) throw new Error("assertion failed: " + message);
}

function equal(actual, expected, what) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${what}: expected ${e}, got ${a}`);
}

/** Poll `predicate` every 5 ms; fail naming `what` after `ms`. */
async function until(predicate, what, ms = 3000) {
  const deadline = performance.now() + ms;
  while (!predicate()) {
    if (performance.now() > deadline)
      throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** A WebSocket class whose "server" is `script(socket, frame)`, called for every frame
 * the client sends. Sockets open on the next tick. */
function fakeServer(script) {
  const sockets = [];
  class FakeSocket {
    constructor(url) {
      this.url = url;
      this.sent = [];
      this.readyState = 0;
      sockets.push(this);
      setTimeout(() => {
        if (this.readyState !== 0) return;
        this.readyState = 1;
        this.onopen?.();
      });
    }
    send(text) {
      const frame = JSON.parse(text);
      this.sent.push(frame);
      script(this, frame);
    }
    close(code = 1005, reason = "") {
      if (this.readyState === 3) return;
      this.readyState = 3;
      setTimeout(() => this.onclose?.({ code, reason }));
    }
    /** Server to client: several events in one frame, one per line. */
    push(...events) {
      this.onmessage?.({ data: events.map((e) => JSON.stringify(e)).join("\n") });
    }
    serverClose(code, reason = "") {
      this.readyState = 3;
      this.onclose?.({ code, reason });
    }
    frames(type) {
      return this.sent.filter((f) => f.type === type);
    }
  }
  return { FakeSocket, sockets };
}

/** The usual answers: connected, subscribed, unsubscribed. */
function basics(extra = {}) {
  return (ws, f) => {
    if (f.type === "connect") {
      ws.push({
        type: "connected",
        client: "n.1",
        user: f.user ?? null,
        ping_interval: 25,
        expires_at: null,
        id: f.id,
        ...extra,
      });
    } else if (f.type === "subscribe") {
      ws.push({ type: "subscribed", channel: f.channel, id: f.id });
    } else if (f.type === "unsubscribe") {
      ws.push({ type: "unsubscribed", channel: f.channel, id: f.id });
    }
  };
}

function record(hub) {
  const events = [];
  for (const name of ["connected", "disconnected", "error", "refreshed"]) {
    hub.on(name, (info) =>
      events.push(name === "error" ? { name, code: info.code } : { name, ...info }),
    );
  }
  return events;
}

const fast = { backoff: { base: 5, cap: 5 } };

export async function backoffSchedule() {
  const ceilings = [];
  for (let n = 0; n < 12; n++) ceilings.push(backoffDelay(n, { random: () => 1 }));
  const floors = [];
  for (let n = 0; n < 12; n++) floors.push(backoffDelay(n, { random: () => 0 }));
  const samples = {};
  for (let n = 0; n < 9; n++) {
    samples[n] = Array.from({ length: 2000 }, () => backoffDelay(n));
  }
  const odd = [1e6, Infinity, NaN, -3, 2.7].map((n) => backoffDelay(n, { random: () => 1 }));
  const custom = [0, 1, 2, 3].map((n) => backoffDelay(n, { base: 100, cap: 250, random: () => 1 }));
  return { ceilings, floors, samples, odd, custom };
}

export async function closeCodes() {
  const codes = [
    1000, 1001, 1002, 1005, 1006, 1007, 1008, 1009, 1011, 1012, 1013, 1014, 1015, 3000, 4000, 4001,
    4002, 4003, 4004, 4005, 4499, 4500, 4501, 4999,
  ];
  return Object.fromEntries(codes.map((c) => [c, shouldReconnect(c)]));
}

export async function closeCodesDecideWhetherTheClientReconnects() {
  const outcomes = {};
  for (const [code, token] of [
    [4001],
    [1012],
    [1006],
    [4002, async () => "fresh"],
    [4500],
    [4501],
    [1000],
    [1002],
    [4002, "static-token"],
  ]) {
    const { FakeSocket, sockets } = fakeServer(basics());
    const hub = new Pushhub({ url: "ws://fake/ws", WebSocket: FakeSocket, token, ...fast });
    const events = record(hub);
    hub.connect();
    await until(() => hub.state === "connected", "connected");
    sockets[0].serverClose(code);
    await until(() => events.some((e) => e.name === "disconnected"), "disconnected");
    const reported = events.find((e) => e.name === "disconnected");
    if (reported.reconnect) {
      await until(
        () => hub.state === "connected" && sockets.length === 2,
        "reconnected after " + code,
      );
    } else {
      assert(hub.state === "failed", `state after ${code} is ${hub.state}`);
    }
    outcomes[`${code}${typeof token === "string" ? " static token" : ""}`] = reported.reconnect;
    hub.close();
  }
  return outcomes;
}

export async function tokensAreFetchedForEachConnectionAndRefreshedBeforeExpiry() {
  const reasons = [];
  let expiresIn = 0.9; // seconds: the first token is refreshed well within the test
  const { FakeSocket, sockets } = fakeServer((ws, f) => {
    const now = Date.now() / 1000;
    if (f.type === "connect") {
      ws.push({
        type: "connected",
        client: "n.1",
        user: "u",
        ping_interval: 25,
        expires_at: now + expiresIn,
        id: f.id,
      });
    } else if (f.type === "refresh") {
      ws.push({ type: "refreshed", expires_at: now + 3600, id: f.id });
    } else if (f.type === "subscribe") {
      ws.push({ type: "subscribed", channel: f.channel, id: f.id });
    }
  });
  const hub = new Pushhub({
    url: "ws://fake/ws",
    WebSocket: FakeSocket,
    token: async ({ reason }) => {
      reasons.push(reason);
      return "t" + reasons.length;
    },
    ...fast,
  });
  const events = record(hub);
  hub.subscribe("private:1", { token: async (channel) => "sub-" + channel });
  hub.connect();
  await until(() => sockets[0]?.frames("refresh").length === 1, "a refresh frame");
  await until(() => events.some((e) => e.name === "refreshed"), "the refreshed event");
  const first = sockets[0];
  equal(first.frames("connect")[0].token, "t1", "connect token");
  equal(first.frames("refresh")[0].token, "t2", "refresh token");
  equal(first.frames("subscribe")[0].token, "sub-private:1", "subscription token");
  assert(hub.expiresAt > Date.now() / 1000 + 3000, "expiresAt follows the refreshed reply");
  // At expiry the server closes with 4002: reconnect with a fresh token, resubscribe.
  expiresIn = 3600;
  first.serverClose(4002, "token expired");
  await until(() => sockets[1]?.frames("subscribe").length === 1, "a resubscribe on a new socket");
  equal(sockets[1].frames("connect")[0].token, "t3", "token on reconnect");
  equal(sockets[1].frames("subscribe")[0].token, "sub-private:1", "subscription token again");
  equal(reasons, ["connect", "refresh", "connect"], "token callback reasons");
  hub.close();
  return { reasons, refreshed: events.filter((e) => e.name === "refreshed").length };
}

export async function aFailingTokenCallbackIsReportedAndRetried() {
  let calls = 0;
  const { FakeSocket, sockets } = fakeServer(basics());
  const hub = new Pushhub({
    url: "ws://fake/ws",
    WebSocket: FakeSocket,
    token: async () => {
      if (++calls === 1) throw new Error("auth backend down");
      return "ok";
    },
    ...fast,
  });
  const events = record(hub);
  hub.connect();
  await until(() => hub.state === "connected", "connected after a retry");
  const error = events.find((e) => e.name === "error");
  equal(error.code, "token", "error code");
  equal(sockets.length, 1, "sockets opened (none without a token)");
  equal(sockets[0].frames("connect")[0].token, "ok", "token sent");
  hub.close();
  return { calls };
}

export async function coalescedFramesAreSplitAndDurableChannelsRecoverFromTheirLastPosition() {
  let recoverWith = true;
  const { FakeSocket, sockets } = fakeServer((ws, f) => {
    if (f.type === "connect") {
      ws.push({
        type: "connected",
        client: "n." + sockets.length,
        user: null,
        ping_interval: 25,
        expires_at: null,
        id: f.id,
      });
    } else if (f.type === "subscribe" && !f.since) {
      ws.push({ type: "subscribed", channel: f.channel, offset: 0, epoch: "e1", id: f.id });
    } else if (f.type === "subscribe" && recoverWith) {
      // Replayed messages, then the reply, in one frame.
      ws.push(
        { type: "message", channel: f.channel, data: { n: 4 }, offset: 4, epoch: "e1" },
        {
          type: "subscribed",
          channel: f.channel,
          offset: 4,
          epoch: "e1",
          recovered: true,
          id: f.id,
        },
      );
    } else if (f.type === "subscribe") {
      ws.push({
        type: "subscribed",
        channel: f.channel,
        offset: 9,
        epoch: "e2",
        recovered: false,
        id: f.id,
      });
    }
  });
  const hub = new Pushhub({ url: "ws://fake/ws", WebSocket: FakeSocket, ...fast });
  const got = [];
  const subscribed = [];
  hub.subscribe("user:1", {
    onMessage: (data, ev) => got.push(ev.offset),
    onSubscribed: (info) => subscribed.push(info),
  });
  hub.connect();
  await until(() => subscribed.length === 1, "subscribed");
  const ws = sockets[0];
  const msg = (n) => ({ type: "message", channel: "user:1", data: { n }, offset: n, epoch: "e1" });
  ws.push(msg(1), msg(2), { type: "ping" }, msg(3));
  ws.push(msg(2)); // a duplicate is not handed to the application
  equal(got, [1, 2, 3], "offsets delivered");
  ws.push({ type: "unsubscribed", channel: "user:1", reason: "recover" });
  await until(() => subscribed.length === 2, "resubscribed after a recover notice");
  equal(ws.frames("subscribe")[1].since, { offset: 3, epoch: "e1" }, "since after the notice");
  equal(got, [1, 2, 3, 4], "offsets after recovery");
  recoverWith = false;
  ws.serverClose(1012);
  await until(() => subscribed.length === 3, "resubscribed after a reconnect");
  equal(
    sockets[1].frames("subscribe")[0].since,
    { offset: 4, epoch: "e1" },
    "since after a reconnect",
  );
  equal(
    hub.getSubscription("user:1").position,
    { offset: 9, epoch: "e2" },
    "position after recovered: false",
  );
  hub.close();
  return subscribed.map(({ recovered, resubscribed, offset, epoch }) => ({
    recovered,
    resubscribed,
    offset,
    epoch,
  }));
}

export async function serverPingsKeepTheConnectionAndSilenceDropsIt() {
  const { FakeSocket, sockets } = fakeServer(basics({ ping_interval: 0.1 }));
  const hub = new Pushhub({ url: "ws://fake/ws", WebSocket: FakeSocket, pingMargin: 100, ...fast });
  const events = record(hub);
  hub.connect();
  await until(() => hub.state === "connected", "connected");
  // Pings every 50 ms for 600 ms, three times the 200 ms limit: the connection stays.
  for (let i = 0; i < 12; i++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    sockets[0].push({ type: "ping" });
  }
  equal(sockets.length, 1, "sockets while pings arrive");
  // Silence: dropped after about 200 ms, and a new connection follows.
  const silentSince = performance.now();
  await until(
    () => sockets.length === 2 && hub.state === "connected",
    "a new connection after silence",
  );
  const dropped = events.find((e) => e.name === "disconnected");
  assert(
    /no ping/.test(dropped.reason) && dropped.reconnect,
    "disconnected: " + JSON.stringify(dropped),
  );
  hub.close();
  return { detectedAfterMs: Math.round(performance.now() - silentSince) };
}

export async function requestsFailFastWithoutAConnection() {
  const { FakeSocket, sockets } = fakeServer(basics());
  const hub = new Pushhub({ url: "ws://fake/ws", WebSocket: FakeSocket, ...fast });
  const codes = [];
  await hub.presence("a").catch((err) => codes.push(err.code));
  hub.connect();
  await until(() => hub.state === "connected", "connected");
  const pending = hub.publish("a", 1).catch((err) => codes.push(err.code)); // never answered
  sockets[0].serverClose(1012);
  await pending;
  hub.close();
  return codes;
}

export async function unsubscribeAndCloseStopEverything() {
  const { FakeSocket, sockets } = fakeServer(basics());
  const hub = new Pushhub({ url: "ws://fake/ws", WebSocket: FakeSocket, ...fast });
  const sub = hub.subscribe("a");
  hub.connect();
  await until(() => sub.state === "subscribed", "subscribed");
  await sub.unsubscribe();
  equal(
    sockets[0].frames("unsubscribe").map((f) => f.channel),
    ["a"],
    "unsubscribe frames",
  );
  equal(hub.subscriptions().length, 0, "subscriptions left");
  hub.subscribe("b");
  hub.close();
  equal(hub.state, "disconnected", "state after close");
  hub.connect(); // close() keeps subscriptions: connecting again subscribes them
  await until(() => sockets[1]?.frames("subscribe").length === 1, "subscribe on the new socket");
  equal(sockets[1].frames("subscribe")[0].channel, "b", "channel resubscribed");
  hub.close();
  return "ok";
}

export async function aRefusedConnectFollowsTheServersCloseCode() {
  const outcomes = {};
  for (const [code, close] of [
    ["token_expired", 4002],
    ["unauthorized", 4004],
    ["unauthorized", 4501],
    ["bad_request", null],
  ]) {
    let refusals = 1; // refuse the first connect only
    const { FakeSocket, sockets } = fakeServer((ws, f) => {
      if (f.type !== "connect") return;
      if (refusals-- > 0) {
        ws.push({ type: "error", id: f.id, code, message: "refused" });
        if (close) setTimeout(() => ws.serverClose(close));
      } else {
        ws.push({
          type: "connected",
          client: "n.2",
          user: "u",
          ping_interval: 25,
          expires_at: null,
          id: f.id,
        });
      }
    });
    const hub = new Pushhub({
      url: "ws://fake/ws",
      WebSocket: FakeSocket,
      token: async () => "t",
      ...fast,
    });
    const events = record(hub);
    hub.connect();
    await until(() => hub.state === "connected" || hub.state === "failed", "connected or failed");
    const closed = events.find((e) => e.name === "disconnected");
    outcomes[`${code} ${close}`] = { state: hub.state, code: closed.code, sockets: sockets.length };
    hub.close();
  }
  return outcomes;
}

export async function presenceEventsComeInOneFrameAndCountsPastTheBound() {
  const { FakeSocket, sockets } = fakeServer(basics());
  const hub = new Pushhub({ url: "ws://fake/ws", WebSocket: FakeSocket, ...fast });
  const seen = [];
  hub.subscribe("room:1", {
    onJoin: (m) => seen.push(["join", m.user ?? m.client]),
    onLeave: (m) => seen.push(["leave", m.user ?? m.client]),
    onCount: (c) => seen.push(["count", c.users, c.connections, c.joinLeave]),
  });
  hub.connect();
  await until(() => hub.getSubscription("room:1").state === "subscribed", "subscribed");
  const ws = sockets[0];
  // One tick's events: several lines in one frame.
  ws.push(
    { type: "join", channel: "room:1", user: "ada", info: null },
    { type: "join", channel: "room:1", user: null, client: "n.9", info: null },
    { type: "leave", channel: "room:1", user: "ada" },
  );
  ws.push({ type: "presence_count", channel: "room:1", users: 1001, connections: 1200, join_leave: false });
  ws.push({ type: "presence_count", channel: "room:2", users: 5, connections: 5, join_leave: false });
  ws.push({ type: "presence_count", channel: "room:1", users: 999, connections: 1000, join_leave: true });
  hub.close();
  return seen;
}
