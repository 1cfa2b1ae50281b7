// Admin pages (hidden from non-admins in the navigation; the API refuses them anyway with 403):
// users (role, deactivate), the audit log with filters, DLQs with a sample and redrive, cache clear.
import { api, currentUser } from "./api.js";
import { busy, clear, field, fmtTime, h, jsonView, messageArea, select, shortId, statusBadge, table } from "./ui.js";

function pager(load) {
  const el = h("div", { class: "pager" });
  const cursors = [null];
  let page = 0;
  return {
    el, cursor: () => cursors[page], reset() { cursors.length = 1; page = 0; },
    update(next) {
      cursors[page + 1] = next;
      clear(el, h("button", { type: "button", class: "small", disabled: page === 0 ? true : null, onclick: () => { page -= 1; load(); } }, "Previous"),
        ` page ${page + 1} `, h("button", { type: "button", class: "small", disabled: next ? null : true, onclick: () => { page += 1; load(); } }, "Next"));
    },
  };
}

export async function adminUsersPage() {
  const msgs = messageArea();
  const list = h("div", {});
  const p = pager(() => load());
  const load = async () => {
    const res = await api("GET", "/users", { query: { limit: 50, cursor: p.cursor() } });
    clear(list, table(res.items, [
      ["User", (u) => u.username], ["Email", (u) => u.email], ["Created", (u) => fmtTime(u.created_at)],
      ["Role", (u) => {
        const s = select([["user", "user"], ["admin", "admin"]], u.role, { "aria-label": `Role of ${u.username}`, disabled: u.id === currentUser().id ? true : null });
        s.addEventListener("change", () => busy(s, "…", msgs, async () => { await api("PUT", `/users/${u.id}`, { body: { role: s.value } }); msgs.ok(`${u.username} is now ${s.value}.`); }));
        return s;
      }],
      ["Active", (u) => {
        const b = h("button", { type: "button", class: `small${u.is_active ? " danger" : ""}`, disabled: u.id === currentUser().id ? true : null }, u.is_active ? "Deactivate" : "Activate");
        b.addEventListener("click", () => busy(b, "Saving…", msgs, async () => { await api("PUT", `/users/${u.id}`, { body: { is_active: !u.is_active } }); await load(); }));
        return h("span", {}, statusBadge(u.is_active ? "active" : "inactive"), " ", b);
      }],
    ], { caption: "Users" }));
    p.update(res.next_cursor);
  };
  await load();
  return h("div", {}, h("h1", {}, "Users"), msgs.el, list, p.el);
}

export async function adminAuditPage() {
  const msgs = messageArea();
  const f = {
    user_id: h("input", { id: "au-user", placeholder: "uuid" }), event_type: h("input", { id: "au-event" }),
    resource_type: h("input", { id: "au-rtype" }), resource_id: h("input", { id: "au-rid" }),
    after: h("input", { id: "au-after", type: "datetime-local" }), before: h("input", { id: "au-before", type: "datetime-local" }),
  };
  const list = h("div", {});
  const p = pager(() => load());
  const load = async () => {
    const query = { limit: 50, cursor: p.cursor() };
    for (const [k, el] of Object.entries(f)) if (el.value) query[k] = el.type === "datetime-local" ? new Date(el.value).toISOString() : el.value.trim();
    let res;
    try { res = await api("GET", "/audit-logs", { query }); } catch (err) { msgs.error(err); return; }
    msgs.clear();
    clear(list, table(res.items, [
      ["When", (r) => fmtTime(r.timestamp)], ["Event", (r) => r.event_type], ["Action", (r) => r.action],
      ["Resource", (r) => (r.resource_type ? `${r.resource_type} ${shortId(r.resource_id)}` : "")], ["User", (r) => shortId(r.user_id)],
      ["IP", (r) => r.client_ip || ""], ["Details", (r) => (Object.keys(r.details || {}).length ? jsonView(r.details, { depth: 0, label: "details" }) : "")],
    ], { caption: "Audit log, newest first", empty: "No rows match." }));
    p.update(res.next_cursor);
  };
  const form = h("form", { class: "filters", "aria-label": "Audit filters" },
    field("User id", f.user_id), field("Event type", f.event_type), field("Resource type", f.resource_type), field("Resource id", f.resource_id),
    field("After", f.after), field("Before", f.before), h("button", { type: "submit", class: "small" }, "Apply"));
  form.addEventListener("submit", (e) => { e.preventDefault(); p.reset(); load(); });
  await load();
  return h("div", {}, h("h1", {}, "Audit log"), form, msgs.el, list, p.el);
}

export async function adminDlqPage() {
  const msgs = messageArea();
  const host = h("div", {});
  const load = async () => {
    const res = await api("GET", "/admin/dlq", { query: { sample: 5 } });
    clear(host, res.queues.map((q) => {
      const limit = h("input", { id: `redrive-${q.queue}`, type: "number", min: 1, max: 10000, value: 100 });
      const btn = h("button", { type: "button", disabled: q.depth ? null : true }, `Redrive ${q.queue}`);
      btn.addEventListener("click", () => busy(btn, "Redriving…", msgs, async () => {
        const r = await api("POST", `/admin/dlq/${encodeURIComponent(q.queue)}/redrive`, { body: { limit: Number(limit.value) } });
        msgs.ok(`${q.queue}: ${r.moved ?? `about ${r.approximate ?? "?"}`} message(s) moved back (${r.method}).`);
        await load();
      }));
      return h("section", { class: "card", "aria-label": `DLQ of ${q.queue}` },
        h("h2", {}, q.queue, " ", h("small", {}, `${q.depth ?? "?"} message(s)`)),
        q.error ? h("p", { class: "error" }, q.error) : null,
        table(q.messages, [["Message", (m) => shortId(m.message_id)], ["Task", (m) => (m.task_id ? h("a", { href: `#/tasks/${m.task_id}` }, shortId(m.task_id)) : "—")],
          ["Task status", (m) => (m.task_status ? statusBadge(m.task_status) : "—")], ["Error", (m) => (m.last_error ? `${m.last_error.code}: ${m.last_error.message}` : "")],
          ["Receives", (m) => m.receive_count], ["Sent", (m) => fmtTime(m.sent_at)], ["Body", (m) => h("code", {}, m.body_preview)]], { empty: "Empty." }),
        h("div", { class: "row" }, field("Messages to move", limit), btn));
    }));
  };
  await load();
  return h("div", {}, h("h1", {}, "Dead-letter queues"), msgs.el, host);
}

export async function adminCachePage() {
  const msgs = messageArea();
  const ns = h("input", { id: "cache-ns", placeholder: "empty: every namespace" });
  const btn = h("button", { type: "submit", class: "danger" }, "Clear cache");
  const form = h("form", { class: "card", "aria-labelledby": "cache-h" }, h("h2", { id: "cache-h" }, "Clear the cache"),
    h("p", {}, "Cached agents, task results and sessions are rebuilt from the database on the next read."),
    field("Namespaces (comma separated)", ns), btn);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (!confirm("Clear the cache?")) return;
    busy(btn, "Clearing…", msgs, async () => {
      const names = ns.value.split(",").map((s) => s.trim()).filter(Boolean);
      const r = await api("POST", "/admin/cache/clear", { body: names.length ? { namespaces: names } : {} });
      msgs.ok(`Cleared: ${r.cleared.join(", ") || "nothing"}.`);
    });
  });
  return h("div", {}, h("h1", {}, "Cache"), msgs.el, form);
}
