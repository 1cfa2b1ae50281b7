// Live updates, one module: pages say what they watch and how to refresh; this decides when.
//
//   const stop = watch({ task_ids: [id] }, refresh)   // or { run_ids }, { types }, or {} for "anything of mine"
//
// Transport: the notification WebSocket when the API advertises one (GET /status -> websocket_url; issue 11),
// else polling. With the socket, refresh runs when a matching event arrives (plus a slow safety poll); without,
// every POLL_MS while the tab is visible. Pages never know which: swapping transports changes only this file.
import { accessToken, api, onSessionChange } from "./api.js";

const POLL_MS = 1500;
const SAFETY_POLL_MS = 15000;
const RECONNECT_MS = 5000;
const watchers = new Set();
let socket = null;
let socketState = "off"; // off | connecting | open
let lastEventId = 0;

export function transport() { return socketState === "open" ? "websocket" : "polling"; }

export function watch(topic, refresh, { pollMs = POLL_MS } = {}) {
  const w = { topic, refresh, pollMs, running: false, timer: null };
  const tick = async () => {
    if (w.running || document.hidden) return;
    w.running = true;
    try { await refresh(); } catch (err) { console.info("live refresh failed:", err.code || err.message); } finally { w.running = false; }
  };
  w.tick = tick;
  w.timer = setInterval(tick, socketState === "open" ? Math.max(pollMs, SAFETY_POLL_MS) : pollMs);
  watchers.add(w);
  return () => { clearInterval(w.timer); watchers.delete(w); };
}

function matches(topic, ev) {
  if (topic.task_ids && !(ev.resource?.type === "task" && topic.task_ids.includes(ev.resource.id))) return false;
  const run = ev.run_id ?? (ev.resource?.type === "run" ? ev.resource.id : null);
  if (topic.run_ids && !topic.run_ids.includes(run)) return false;
  if (topic.types && !topic.types.includes(ev.type)) return false;
  return true;
}

function retime(socketOpen) {
  for (const w of watchers) { clearInterval(w.timer); w.timer = setInterval(w.tick, socketOpen ? Math.max(w.pollMs, SAFETY_POLL_MS) : w.pollMs); }
}

/** Try the WebSocket once per sign-in; any failure leaves polling in charge. */
export async function connect(accessToken) {
  if (socketState !== "off" || !("WebSocket" in window)) return;
  let url;
  try { url = (await api("GET", "/status")).websocket_url; } catch { return; }
  if (!url) return;
  socketState = "connecting";
  const u = new URL(url);
  u.searchParams.set("token", accessToken());
  // First connect: live from now (the pages have just read their state). A reconnect resumes after the last
  // event seen, so nothing that happened while it was down is missed.
  if (lastEventId > 0) u.searchParams.set("last_event_id", String(lastEventId));
  socket = new WebSocket(u);
  // No server-side subscribe: one subscribe replaces the previous one on a connection, and pages hold several
  // watches with different filters. Every event of the user arrives; matches() filters here.
  socket.addEventListener("open", () => { socketState = "open"; retime(true); });
  socket.addEventListener("message", (m) => {
    let ev;
    try { ev = JSON.parse(m.data); } catch { return; }
    if (!ev || typeof ev.type !== "string" || ev.type.startsWith("ws.")) return; // replies and notices
    const id = Number(ev.event_id) || 0;
    if (id && id <= lastEventId) return; // at-least-once delivery: seen already
    lastEventId = Math.max(lastEventId, id);
    for (const w of watchers) if (matches(w.topic, ev)) w.tick();
  });
  socket.addEventListener("close", () => {
    socket = null;
    socketState = "off";
    retime(false);
    // Reconnect (with a fresh token, resuming after the last event seen) while signed in; poll meanwhile.
    if (accessToken()) setTimeout(() => { if (accessToken()) connect(accessToken); }, RECONNECT_MS);
  });
}

onSessionChange((user) => { if (!user && socket) socket.close(); if (!user) lastEventId = 0; });
