// The API client: one session in memory (never in localStorage or cookies), refreshed before it expires.
// Every failure is an ApiError carrying the API's envelope {code, message, details}.

const BASE = document.getElementById("app")?.dataset.base || "";
const REFRESH_AHEAD = 0.75; // refresh when three quarters of the access token's lifetime have passed

let session = null; // {access, refresh, expiresAt, user: {id, role, username}}
let refreshing = null; // the single in-flight refresh, shared by every caller
let timer = null;
const listeners = new Set();

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || {};
  }
}

export function onSessionChange(fn) { listeners.add(fn); return () => listeners.delete(fn); }
export function currentUser() { return session ? session.user : null; }
export function isAdmin() { return session?.user.role === "admin"; }
export const base = BASE;

function claims(token) {
  const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
  return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
}

function adopt(pair, username) {
  const c = claims(pair.access_token);
  session = {
    access: pair.access_token, refresh: pair.refresh_token,
    expiresAt: Date.now() + pair.expires_in * 1000, lifetime: pair.expires_in * 1000,
    user: { id: c.sub, role: c.role, username: username ?? session?.user.username },
  };
  clearTimeout(timer);
  timer = setTimeout(() => { refresh().catch(() => {}); }, Math.max(1000, pair.expires_in * 1000 * REFRESH_AHEAD));
}

function end(reason) {
  clearTimeout(timer);
  const had = session !== null;
  session = null;
  if (had) listeners.forEach((fn) => fn(null, reason));
}

async function send(method, path, { body, query, token, headers } = {}) {
  const url = new URL(BASE + path, location.origin);
  for (const [k, v] of Object.entries(query || {})) if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  const h = { Accept: "application/json", ...(headers || {}) };
  if (body !== undefined) h["Content-Type"] = "application/json";
  if (token) h.Authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(url, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiError(0, "NETWORK_ERROR", `The API did not answer (${err.message}).`);
  }
  if (res.status === 204) return { res, data: null };
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!res.ok) {
    const e = data && data.error ? data.error : { code: `HTTP_${res.status}`, message: res.statusText || "request failed" };
    throw new ApiError(res.status, e.code, e.message, e.details);
  }
  return { res, data };
}

export async function refresh() {
  if (!session) throw new ApiError(401, "NOT_SIGNED_IN", "You are signed out.");
  if (!refreshing) {
    const presented = session.refresh;
    refreshing = send("POST", "/auth/refresh", { body: { refresh_token: presented } })
      .then(({ data }) => { adopt(data); })
      .catch((err) => {
        // Reuse detection or an expired/revoked session: the server ended it; so do we.
        if (err.status === 401 || err.status === 403) end(`${err.code}: ${err.message}`);
        throw err;
      })
      .finally(() => { refreshing = null; });
  }
  return refreshing;
}

// About to expire: within 5 s, or a quarter of a (short) lifetime.
const expiring = () => session.expiresAt - Date.now() < Math.min(5000, session.lifetime / 4);

/** An authenticated call: refreshes an expiring token first, and once more on a 401. */
export async function api(method, path, options = {}) {
  if (!session) throw new ApiError(401, "NOT_SIGNED_IN", "Sign in first.");
  if (expiring()) await refresh();
  try {
    return (await send(method, path, { ...options, token: session.access })).data;
  } catch (err) {
    if (err.status !== 401 || !session) throw err;
    await refresh();
    return (await send(method, path, { ...options, token: session.access })).data;
  }
}

/** Like api() but also returns the response (headers such as Location). */
export async function apiRaw(method, path, options = {}) {
  if (!session) throw new ApiError(401, "NOT_SIGNED_IN", "Sign in first.");
  if (expiring()) await refresh();
  return send(method, path, { ...options, token: session.access });
}

export async function signIn(username, password) {
  const { data } = await send("POST", "/auth/login", { body: { username, password } });
  adopt(data, username);
  listeners.forEach((fn) => fn(session.user));
}

export async function register(username, email, password) {
  await send("POST", "/auth/register", { body: { username, email, password } });
  await signIn(username, password);
}

export async function signOut(reason = "You signed out.") {
  if (session) {
    try {
      await send("POST", "/auth/logout", { body: { refresh_token: session.refresh }, token: session.access });
    } catch (err) {
      // The session is dropped here whatever the server says; an already-ended session is not an error.
      console.info("logout:", err.code);
    }
  }
  end(reason);
}

/** For the WebSocket handshake only (live.js): the current access token. */
export function accessToken() { return session ? session.access : null; }
