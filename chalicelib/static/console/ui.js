// Small view helpers: elements without innerHTML (nothing the API returns is ever parsed as markup),
// error and progress display, JSON and table views. No style attributes: the CSP forbids them.

let uid = 0;
export const nextId = (prefix = "f") => `${prefix}-${++uid}`;

export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "value") el.value = v;
    else if (k === "checked") el.checked = !!v;
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) { el.replaceChildren(); append(el, children); return el; }

/** The API's error, with its code and message (and field errors when it has them). */
export function errorBox(err) {
  const details = err?.details || {};
  const items = [...(details.errors || []), ...(details.violations || [])];
  return h("div", { class: "error", role: "alert" },
    h("strong", {}, err?.code || "ERROR"), " ", err?.message || String(err),
    items.length ? h("ul", {}, items.slice(0, 20).map((e) =>
      h("li", {}, h("code", {}, e.path ?? (e.loc || []).join(".") ?? ""), " ", e.code ? `${e.code}: ` : "", e.message || e.msg || ""))) : null);
}

/** A region that shows an error or a success message; screen readers hear it. */
export function messageArea() {
  const el = h("div", { class: "messages", "aria-live": "polite" });
  return {
    el,
    error(err) { clear(el, errorBox(err)); },
    ok(text) { clear(el, h("div", { class: "ok", role: "status" }, text)); },
    clear() { clear(el); },
  };
}

/** Run an action with the button disabled and a progress label; errors go to `messages`. */
export async function busy(button, label, messages, fn) {
  const original = button.textContent;
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  button.textContent = label;
  try {
    messages?.clear();
    return await fn();
  } catch (err) {
    if (messages) messages.error(err); else throw err;
    return undefined;
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
    button.textContent = original;
  }
}

export function field(label, control, hint) {
  const id = control.id || nextId();
  control.id = id;
  const hintId = hint ? `${id}-hint` : null;
  if (hintId) control.setAttribute("aria-describedby", hintId);
  return h("div", { class: "field" }, h("label", { for: id }, label), control,
    hint ? h("small", { id: hintId, class: "hint" }, hint) : null);
}

export function select(options, value, props = {}) {
  return h("select", props, options.map(([v, text]) => h("option", { value: v, selected: v === value ? true : null }, text)));
}

export const fmtTime = (iso) => (iso ? new Date(iso).toLocaleString() : "—");
export const shortId = (id) => (id ? String(id).slice(0, 8) : "—");

export function statusBadge(status) {
  return h("span", { class: `badge s-${String(status).replace(/[^a-z_]/g, "")}`, "data-status": status }, status);
}

/** Collapsible JSON: objects and arrays are <details>, open to `depth`. */
export function jsonView(value, { depth = 1, label = "JSON" } = {}) {
  const wrap = h("div", { class: "json" },
    h("div", { class: "json-tools" },
      h("button", { type: "button", class: "small", onclick: () => navigator.clipboard?.writeText(JSON.stringify(value, null, 2)) }, `Copy ${label}`)),
    node(value, depth, null));
  return wrap;
}

function node(value, depth, key) {
  const keyEl = key === null ? null : h("span", { class: "json-key" }, `${key}: `);
  if (value && typeof value === "object") {
    const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
    const summary = Array.isArray(value) ? `[${entries.length}]` : `{${entries.length}}`;
    if (!entries.length) return h("div", { class: "json-leaf" }, keyEl, summary);
    return h("details", { open: depth > 0 ? true : null },
      h("summary", {}, keyEl, h("span", { class: "json-count" }, summary)),
      h("div", { class: "json-children" }, entries.map(([k, v]) => node(v, depth - 1, k))));
  }
  const cls = value === null ? "null" : typeof value;
  return h("div", { class: "json-leaf" }, keyEl, h("span", { class: `json-${cls}` }, JSON.stringify(value)));
}

/** Arrays of flat objects inside an output (validation errors, examination findings) as tables. */
export function tablesOf(output) {
  const out = [];
  for (const [name, value] of Object.entries(output || {})) {
    if (!Array.isArray(value) || !value.length || !value.every((r) => r && typeof r === "object" && !Array.isArray(r))) continue;
    const cols = [...new Set(value.flatMap((r) => Object.keys(r).filter((k) => r[k] === null || typeof r[k] !== "object")))];
    if (!cols.length) continue;
    out.push(h("figure", { class: "table-wrap" }, h("figcaption", {}, `${name} (${value.length})`),
      h("table", {}, h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, value.map((r) => h("tr", {}, cols.map((c) => h("td", {}, r[c] === undefined ? "" : String(r[c])))))))));
  }
  return out;
}

/** A table with an empty state. columns: [[header, row => cell]] */
export function table(rows, columns, { empty = "Nothing here yet.", caption } = {}) {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h("table", {}, caption ? h("caption", {}, caption) : null,
    h("thead", {}, h("tr", {}, columns.map(([title]) => h("th", { scope: "col" }, title)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, columns.map(([, cell]) => h("td", {}, cell(r)))))));
}

export function link(href, text, props = {}) { return h("a", { href, ...props }, text); }

export function parseJson(text, what) {
  try { return JSON.parse(text); } catch (err) {
    const e = new Error(`${what} is not valid JSON: ${err.message}`);
    e.code = "INVALID_JSON";
    throw e;
  }
}

export function copyButton(text, label = "Copy") {
  const b = h("button", { type: "button", class: "small" }, label);
  b.addEventListener("click", async () => {
    try { await navigator.clipboard.writeText(text); b.textContent = "Copied"; } catch { b.textContent = "Select and copy"; }
  });
  return b;
}
