// Live updates: MQTT over WebSockets (MQTT.js) to the broker the API names
// (docs/api/realtime.md). MQTT is only a wake-up: every event makes the views catch up
// through the API by sequence, so a lost or repeated event changes nothing.
//
// start() fetches broker credentials (POST /api/v1/realtime/credentials: username,
// password, client id, the WebSocket URL and the topics), connects, and subscribes to the
// user's own topics (pinhole/u/<me>/#). A dropped connection reconnects after 1, 2, 4 ...
// 30 s (with jitter); refused credentials (revoked, or the oldest of too many) are replaced
// by new ones. stop() (sign-out) disconnects at once. Events are dispatched on `events`:
//   "message", "reaction", "unsend", "read", "typing", "notification": the payload (detail);
//   "connected": after every (re)connection, when everything may have been missed.

import { api, session } from "./api.js";

const CREDENTIALS_KEY = "pinhole.mqtt";
const BACKOFF_FIRST_MS = 1000;
const BACKOFF_MAX_MS = 30_000;
const CONNECT_TIMEOUT_MS = 10_000;
// A typing event is published at most this often per thread while the user types.
const TYPING_EVERY_MS = 3000;
// CONNACK "not authorized" (MQTT 3.1.1 code 5) and "bad user name or password" (4).
const REFUSED_CODES = new Set([4, 5]);

export const events = new EventTarget();

// MQTT.js is most of the client's weight (about 340 KB minified): a chunk of its own, fetched
// once signed in, so the sign-in page and the first paint do not wait for it.
let mqttModule = null;
function loadMqtt() {
  mqttModule = mqttModule || import("mqtt").then((m) => m.default || m).catch((err) => {
    mqttModule = null;
    throw err;
  });
  return mqttModule;
}

let client = null;
let credentials = null;
let timer = null;
let attempt = 0;
let running = false;
// Bumped by stop(): a connect() still awaiting from before a sign-out gives up.
let epoch = 0;
const typingSent = new Map();

export const live = {
  get connected() {
    return Boolean(client?.connected);
  },
};

// Credentials belong to the session that asked for them: kept for this tab (a reload
// reuses them), dropped when the token changes.
function kept() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(CREDENTIALS_KEY) || "null");
    return saved && saved.token === session.token ? saved.credentials : null;
  } catch {
    return null;
  }
}

async function fresh() {
  const doc = await api("POST", "/realtime/credentials", { body: {} });
  sessionStorage.setItem(CREDENTIALS_KEY, JSON.stringify({ token: session.token, credentials: doc }));
  return doc;
}

function forgetCredentials() {
  credentials = null;
  sessionStorage.removeItem(CREDENTIALS_KEY);
}

function schedule() {
  if (!running || timer) return;
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** attempt);
  attempt += 1;
  timer = setTimeout(() => {
    timer = null;
    connect();
  }, base / 2 + Math.random() * (base / 2));
}

function dispatch(topic, payload) {
  let doc;
  try {
    doc = JSON.parse(new TextDecoder().decode(payload));
  } catch {
    return;
  }
  if (!doc || typeof doc.type !== "string") return;
  events.dispatchEvent(new CustomEvent(doc.type, { detail: doc }));
}

async function connect() {
  if (!running || client) return;
  const mine = epoch;
  let found;
  try {
    found = credentials || kept() || (await fresh());
  } catch (err) {
    // 404 realtime_off: this deployment has no broker; the screens show what the API has
    // each time they open. 401: signed out.
    if (mine === epoch && err.status !== 404 && err.status !== 401) schedule();
    return;
  }
  if (mine !== epoch || !running) return;
  credentials = found;
  if (!credentials.websocket_url) return;
  let mqtt;
  try {
    mqtt = await loadMqtt();
  } catch {
    if (mine === epoch) schedule();
    return;
  }
  if (mine !== epoch || !running || client) return;
  const c = mqtt.connect(credentials.websocket_url, {
    clientId: credentials.client_id,
    username: credentials.username,
    password: credentials.password,
    protocolVersion: 4,
    clean: true,
    reconnectPeriod: 0, // reconnection is ours (backoff, fresh credentials)
    connectTimeout: CONNECT_TIMEOUT_MS,
    // MQTT.js would run its keep-alive timer in a Web Worker made from a blob: URL, which
    // the page's policy (script-src 'self') refuses; the page's own timers do.
    timerVariant: "native",
  });
  client = c;
  c.on("connect", () => {
    c.subscribe(credentials.topics.subscribe, { qos: 1 }, (err, granted) => {
      if (err || !granted?.length || granted[0].qos === 128) {
        forgetCredentials(); // refused topics: these credentials are not (or no longer) ours
        c.end(true);
        return;
      }
      attempt = 0;
      events.dispatchEvent(new CustomEvent("connected"));
    });
  });
  c.on("message", dispatch);
  c.on("error", (err) => {
    if (REFUSED_CODES.has(err?.code)) forgetCredentials();
    c.end(true);
  });
  c.on("close", () => {
    if (client !== c) return;
    client = null;
    c.removeAllListeners();
    c.on("error", () => {});
    schedule();
  });
}

export function start() {
  if (running || !session.token) return;
  running = true;
  attempt = 0;
  connect();
}

export function stop() {
  running = false;
  epoch += 1;
  clearTimeout(timer);
  timer = null;
  forgetCredentials();
  typingSent.clear();
  const c = client;
  client = null;
  if (c) c.end(true);
}

// The user is typing in a thread: published straight to the broker (QoS 0, empty payload),
// at most every TYPING_EVERY_MS; without a connection, through the API.
export function typing(threadId) {
  const now = Date.now();
  if (now - (typingSent.get(threadId) || 0) < TYPING_EVERY_MS) return;
  typingSent.set(threadId, now);
  if (client?.connected && credentials) {
    client.publish(credentials.topics.typing.replace("{thread_id}", threadId), "", { qos: 0 });
  } else {
    api("POST", `/threads/${threadId}/typing`).catch(() => {});
  }
}
