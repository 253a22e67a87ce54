// The pushhub dashboard served at /: connect, subscribe, watch a live tail and presence,
// publish, and chart the node's statistics. Plain DOM and canvas, no libraries; every
// text from the network goes in through textContent, never as HTML.
import { Pushhub, memberKey } from "./pushhub.js";

const $ = (id) => document.getElementById(id);
const TAIL_MAX = 200; // events kept in the live tail
const SAMPLES_MAX = 120; // points per chart

// ---- connection ------------------------------------------------------------------------

let hub = null;
/** channel -> { item, badge, note, list, members: Map | null, counts: {users, connections} | null } */
const channels = new Map();

$("ws-url").value = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";

function mode() {
  return document.querySelector('input[name="mode"]:checked').value;
}

for (const radio of document.querySelectorAll('input[name="mode"]')) {
  radio.addEventListener("change", () => {
    for (const el of document.querySelectorAll("[data-mode]"))
      el.hidden = el.dataset.mode !== mode();
  });
}

$("connect-form").addEventListener("submit", (event) => {
  event.preventDefault();
  hub?.close();
  const options = { url: $("ws-url").value.trim() };
  if (mode() === "token") options.token = $("token").value.trim();
  else if ($("user").value.trim()) options.user = $("user").value.trim();
  hub = new Pushhub(options);
  watch(hub);
  for (const channel of channels.keys()) attach(channel);
  hub.connect();
  $("disconnect").disabled = false;
});

$("disconnect").addEventListener("click", () => {
  hub?.close();
  $("disconnect").disabled = true;
  $("connect").focus();
});

let lastError = null; // the server's last word, to say why the client stopped

function watch(h) {
  lastError = null;
  h.on("state", () => h === hub && showStatus());
  h.on("connected", (info) => {
    lastError = null;
    tail(
      "connected",
      "",
      `as ${info.user ?? "anonymous"} (${info.client})${info.reconnected ? ", reconnected" : ""}`,
    );
    showStatus();
  });
  h.on("disconnected", (info) => {
    const next = !info.reconnect
      ? "not reconnecting"
      : info.delay == null
        ? "waiting for the network"
        : `retry in ${(info.delay / 1000).toFixed(1)} s`;
    tail("disconnected", "", `code ${info.code}${info.reason ? " " + info.reason : ""}; ${next}`);
    showStatus(info);
  });
  h.on("offline", () => tail("offline", "", "the browser is offline"));
  h.on("online", () => tail("online", "", "the browser is online"));
  h.on("error", (err) => {
    lastError = err;
    tail("error", "", `${err.code}: ${err.message}`);
  });
}

function showStatus(info) {
  const status = $("status");
  const state = hub?.state ?? "disconnected";
  status.dataset.state = state;
  const text = {
    disconnected: "Disconnected",
    connecting: "Connecting…",
    connected: `Connected as ${hub?.user ?? "anonymous"}`,
    reconnecting:
      info?.delay == null ? "Reconnecting…" : `Reconnecting in ${(info.delay / 1000).toFixed(1)} s`,
    failed: `Stopped: ${lastError ? lastError.message : `closed with ${info?.code ?? "an error"}`}`,
  }[state];
  if (status.textContent !== text) status.textContent = text;
  const stopped = state === "disconnected" || state === "failed";
  $("connect").textContent = stopped ? "Connect" : "Reconnect";
  $("disconnect").disabled = stopped;
  for (const channel of channels.keys()) renderChannel(channel);
}

// ---- channels and presence ---------------------------------------------------------------

$("subscribe-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("channel");
  const channel = input.value.trim();
  if (!channel) return;
  input.value = "";
  if (channels.has(channel)) return channels.get(channel).item.querySelector("button").focus();
  addChannel(channel);
  if (hub) attach(channel);
  renderChannel(channel);
});

function addChannel(channel) {
  const item = document.createElement("li");
  const head = document.createElement("div");
  head.className = "sub-head";
  const title = document.createElement("h3");
  title.textContent = channel;
  const badge = document.createElement("span");
  badge.className = "badge";
  const button = document.createElement("button");
  button.type = "button";
  button.className = "quiet";
  button.textContent = "Unsubscribe";
  button.setAttribute("aria-label", `Unsubscribe from ${channel}`);
  button.addEventListener("click", () => removeChannel(channel));
  head.append(title, badge, button);
  const note = document.createElement("p");
  note.className = "muted";
  note.style.margin = ".3rem 0 0";
  const list = document.createElement("ul");
  list.className = "members";
  list.setAttribute("aria-label", `Members of ${channel}`);
  item.append(head, note, list);
  $("subscriptions").append(item);
  channels.set(channel, { item, badge, note, list, members: null, counts: null });
  $("no-subscriptions").hidden = true;
  const option = document.createElement("option");
  option.value = channel;
  $("channel-list").append(option);
  if (!$("pub-channel").value) $("pub-channel").value = channel;
}

function removeChannel(channel) {
  const entry = channels.get(channel);
  hub?.getSubscription(channel)?.unsubscribe();
  entry.item.remove();
  channels.delete(channel);
  for (const option of $("channel-list").options) if (option.value === channel) option.remove();
  $("no-subscriptions").hidden = channels.size > 0;
  tail("unsubscribed", channel, "");
  $("channel").focus();
}

function attach(channel) {
  hub.subscribe(channel, {
    onMessage: (data, ev) =>
      tail(
        "message",
        channel,
        JSON.stringify(data) + (ev.offset != null ? `  (offset ${ev.offset})` : ""),
      ),
    onJoin: (member) => {
      const members = channels.get(channel)?.members;
      if (members && !members.has(memberKey(member)))
        members.set(memberKey(member), { ...member, connections: 1 });
      tail("join", channel, memberName(member));
      renderChannel(channel);
    },
    onLeave: (member) => {
      channels.get(channel)?.members?.delete(memberKey(member));
      tail("leave", channel, memberName(member));
      renderChannel(channel);
    },
    onCount: (counts) => {
      const entry = channels.get(channel);
      if (!entry) return;
      if (counts.joinLeave) {
        // Back under the member bound (or events were dropped): read the list again.
        entry.counts = null;
        loadPresence(channel);
        return;
      }
      entry.counts = counts;
      entry.members = null;
      renderChannel(channel);
    },
    onSubscribed: (info) => {
      const recovery =
        info.recovered === true
          ? "recovered every missed message"
          : info.recovered === false
            ? "could not recover: messages may be missing"
            : "";
      tail(
        "subscribed",
        channel,
        [info.offset != null ? `offset ${info.offset}` : "", recovery].filter(Boolean).join("; "),
      );
      loadPresence(channel);
    },
    onError: (err) => {
      tail("error", channel, `${err.code}: ${err.message}`);
      renderChannel(channel, `${err.code}: ${err.message}`);
    },
  });
}

async function loadPresence(channel) {
  let members = null;
  let problem;
  try {
    members = new Map((await hub.presenceAll(channel)).map((m) => [memberKey(m), m]));
  } catch (err) {
    if (err.code === "disconnected") return; // the next subscribe loads it again
    problem =
      err.code === "not_found" ? "presence is off for this channel" : `presence: ${err.code}`;
  }
  const entry = channels.get(channel);
  if (!entry || entry.counts) return; // unsubscribed, or counting, meanwhile
  entry.members = members;
  renderChannel(channel, problem);
}

function memberName(member) {
  return member.user ?? `anonymous ${member.client ?? ""}`.trim();
}

function renderChannel(channel, problem) {
  const entry = channels.get(channel);
  if (!entry) return;
  const state = hub?.getSubscription(channel)?.state ?? (problem ? "failed" : "pending");
  entry.badge.dataset.state = state;
  entry.badge.textContent = state;
  if (problem !== undefined) entry.note.textContent = problem;
  else if (state === "subscribed" && entry.counts) {
    const { users, connections } = entry.counts;
    entry.note.textContent = `${users} users, ${connections} connections (too many to list live)`;
  } else if (state === "subscribed" && entry.members) {
    entry.note.textContent = `${entry.members.size} member${entry.members.size === 1 ? "" : "s"}`;
  } else if (state !== "subscribed") entry.note.textContent = "";
  const names = entry.members && state === "subscribed" ? [...entry.members.values()] : [];
  entry.list.replaceChildren(
    ...names.map((m) => {
      const li = document.createElement("li");
      li.textContent = memberName(m) + (m.connections > 1 ? ` (${m.connections} connections)` : "");
      return li;
    }),
  );
}

// ---- publish -------------------------------------------------------------------------------

$("publish-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const result = $("publish-result");
  result.className = "";
  const channel = $("pub-channel").value.trim();
  let data;
  try {
    data = JSON.parse($("pub-data").value);
  } catch {
    result.className = "error";
    result.textContent = 'Data is not valid JSON (write a string in quotes: "hello").';
    return;
  }
  const via = document.querySelector('input[name="via"]:checked').value;
  try {
    const position =
      via === "socket" ? await publishSocket(channel, data) : await publishHttp(channel, data);
    result.textContent = `Published to ${channel}${position.offset != null ? ` at offset ${position.offset}` : ""} over ${via === "socket" ? "the WebSocket" : "HTTP"}.`;
  } catch (err) {
    result.className = "error";
    result.textContent = `Not published: ${err.message}`;
  }
});

async function publishSocket(channel, data) {
  if (!hub || hub.state !== "connected") throw new Error("connect first, or publish over HTTP");
  try {
    return await hub.publish(channel, data);
  } catch (err) {
    throw new Error(
      err.code === "forbidden"
        ? "this channel does not allow client_publish; publish over HTTP"
        : `${err.code}: ${err.message}`,
    );
  }
}

async function publishHttp(channel, data) {
  const response = await fetch("/api/publish", {
    method: "POST",
    headers: { "content-type": "application/json", ...authHeader() },
    body: JSON.stringify({ channel, data }),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(httpProblem(response.status, body));
  return body.results?.[0] ?? {};
}

function authHeader() {
  const key = $("api-key").value.trim();
  return key ? { authorization: `Bearer ${key}` } : {};
}

function httpProblem(status, body) {
  if (status === 401) return "the HTTP API needs an API key (enter one under Connection)";
  if (status === 403)
    return "without API keys the HTTP API answers only the machine pushhub runs on";
  return body.error ? `${body.error.code}: ${body.error.message}` : `HTTP ${status}`;
}

// ---- live tail -----------------------------------------------------------------------------

const events = []; // newest first

function tail(kind, channel, text) {
  const entry = { time: new Date(), kind, channel, text };
  events.unshift(entry);
  events.length = Math.min(events.length, TAIL_MAX);
  if ($("pause").checked || !matches(entry)) return;
  const list = $("tail");
  list.prepend(tailItem(entry));
  while (list.children.length > TAIL_MAX) list.lastChild.remove();
}

function matches(entry) {
  const filter = $("filter").value.trim().toLowerCase();
  return !filter || `${entry.kind} ${entry.channel} ${entry.text}`.toLowerCase().includes(filter);
}

function tailItem(entry) {
  const li = document.createElement("li");
  li.dataset.kind = entry.kind;
  const cells = [
    [
      "time",
      entry.time.toLocaleTimeString([], { hour12: false }) +
        "." +
        String(entry.time.getMilliseconds()).padStart(3, "0"),
    ],
    ["kind", entry.kind],
    ["text", entry.channel ? `${entry.channel}  ${entry.text}` : entry.text],
  ];
  for (const [name, value] of cells) {
    const span = document.createElement("span");
    span.className = name;
    span.textContent = value;
    li.append(span);
  }
  return li;
}

function renderTail() {
  $("tail").replaceChildren(...events.filter(matches).map(tailItem));
}

$("pause").addEventListener("change", renderTail);
$("filter").addEventListener("input", renderTail);
$("clear").addEventListener("click", () => {
  events.length = 0;
  renderTail();
});

// ---- node statistics -----------------------------------------------------------------------

const samples = [];
let previous = null;

const charts = {
  connections: lineChart($("chart-connections"), [
    { key: "connections", color: "--series-1" },
    { key: "channels", color: "--series-2" },
  ]),
  messages: lineChart($("chart-messages"), [
    { key: "delivered", color: "--series-1" },
    { key: "received", color: "--series-2" },
  ]),
};

async function pollStats() {
  try {
    const response = await fetch("/api/stats", { headers: authHeader(), cache: "no-store" });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(httpProblem(response.status, body));
    addSample(body);
    $("stats-error").textContent = "";
  } catch (err) {
    $("stats-error").textContent = `Statistics unavailable: ${err.message}`;
  } finally {
    setTimeout(pollStats, Number($("interval").value));
  }
}

function addSample(stats) {
  // Rates come from the node's own uptime, so a slow poll does not fake a dip; a
  // restarted node (new id, or uptime going back) starts the rates over.
  const same = previous && previous.node === stats.node && stats.uptime > previous.uptime;
  const dt = same ? stats.uptime - previous.uptime : 0;
  const sample = {
    t: Date.now(),
    connections: stats.connections,
    channels: stats.channels,
    received: same ? (stats.messages_received - previous.messages_received) / dt : null,
    delivered: same ? (stats.messages_delivered - previous.messages_delivered) / dt : null,
  };
  previous = stats;
  samples.push(sample);
  if (samples.length > SAMPLES_MAX) samples.shift();
  $("node").textContent = `node ${stats.node} · ${stats.engine} engine`;
  $("stat-connections").textContent = stats.connections;
  $("stat-channels").textContent = stats.channels;
  $("stat-received").textContent = rate(sample.received);
  $("stat-delivered").textContent = rate(sample.delivered);
  $("stat-uptime").textContent = duration(stats.uptime);
  charts.connections.update(
    samples,
    `Connections: ${stats.connections} now; channels: ${stats.channels}`,
  );
  charts.messages.update(
    samples,
    `Messages per second: ${rate(sample.delivered)} delivered, ${rate(sample.received)} received`,
  );
}

function rate(value) {
  if (value == null) return "–";
  return value < 10 ? value.toFixed(1) : String(Math.round(value));
}

function duration(seconds) {
  const s = Math.floor(seconds);
  const pad = (n) => String(n).padStart(2, "0");
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} m ${pad(s % 60)} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${pad(Math.floor(s / 60) % 60)} m`;
  return `${Math.floor(s / 86400)} d ${pad(Math.floor(s / 3600) % 24)} h`;
}

/** A line chart on a canvas: newest sample at the right, scaled to the largest value. */
function lineChart(canvas, series) {
  let data = [];
  const draw = () => {
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (!width || !height) return;
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(width * dpr)) canvas.width = Math.round(width * dpr);
    if (canvas.height !== Math.round(height * dpr)) canvas.height = Math.round(height * dpr);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const style = getComputedStyle(canvas);
    const color = (name) => style.getPropertyValue(name).trim();
    const pad = { left: 42, right: 10, top: 10, bottom: 20 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const values = data.flatMap((s) => series.map((line) => s[line.key])).filter(Number.isFinite);
    const { top, divisions } = niceScale(Math.max(1, ...values));

    ctx.font = "11px system-ui, sans-serif";
    ctx.lineWidth = 1;
    ctx.strokeStyle = color("--grid");
    ctx.fillStyle = color("--muted");
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let i = 0; i <= divisions; i++) {
      const y = Math.round(pad.top + (plotH * i) / divisions) + 0.5;
      ctx.beginPath();
      ctx.moveTo(pad.left, y);
      ctx.lineTo(width - pad.right, y);
      ctx.stroke();
      ctx.fillText(axisLabel(top * (1 - i / divisions)), pad.left - 6, y);
    }
    // The samples span the width (the label at the left says how long they cover).
    const step = plotW / Math.max(data.length - 1, 1);
    const x = (i) => pad.left + i * step;
    const y = (v) => pad.top + plotH * (1 - v / top);
    ctx.textBaseline = "alphabetic";
    if (data.length > 1) {
      ctx.fillText("now", width - pad.right, height - 5);
      ctx.textAlign = "left";
      ctx.fillText(`−${Math.round((data.at(-1).t - data[0].t) / 1000)} s`, x(0), height - 5);
    }
    ctx.lineJoin = "round";
    // The first series is the main one: drawn last and on top; the others are drawn
    // wider, so where the lines meet they still show as an outline.
    for (const line of [...series].reverse()) {
      ctx.lineWidth = line === series[0] ? 2 : 5;
      ctx.strokeStyle = ctx.fillStyle = color(line.color);
      ctx.beginPath();
      let drawing = false;
      let last = null;
      data.forEach((s, i) => {
        const v = s[line.key];
        if (!Number.isFinite(v)) return (drawing = false);
        if (drawing) ctx.lineTo(x(i), y(v));
        else ctx.moveTo(x(i), y(v));
        drawing = true;
        last = [x(i), y(v)];
      });
      ctx.stroke();
      if (last) {
        ctx.beginPath();
        ctx.arc(last[0], last[1], 3, 0, 2 * Math.PI);
        ctx.fill();
      }
    }
    canvas.dataset.samples = String(data.length);
  };
  new ResizeObserver(draw).observe(canvas);
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", draw);
  return {
    update(next, label) {
      data = next;
      canvas.setAttribute("aria-label", label);
      draw();
    },
  };
}

/** The axis top for `value` (1, 2 or 5 times a power of ten) and a grid that divides it
 * into round steps. */
function niceScale(value) {
  const power = 10 ** Math.floor(Math.log10(value));
  for (const [m, divisions] of [
    [1, 2],
    [2, 4],
    [5, 5],
    [10, 5],
  ]) {
    if (m * power >= value) return { top: m * power, divisions };
  }
}

function axisLabel(value) {
  return value >= 1000 ? `${+(value / 1000).toFixed(1)}k` : `${+value.toFixed(2)}`;
}

pollStats();
