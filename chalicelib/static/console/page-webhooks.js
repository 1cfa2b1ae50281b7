// Webhooks (docs/webhooks.md): subscriptions (create with the signing secret shown once, edit, delete), and a
// subscription's page: send a test event, rotate the secret (shown once), the delivery log with every attempt
// (cursor paging, live while a delivery is pending) and Redeliver.
import { api } from "./api.js";
import { watch } from "./live.js";
import { busy, clear, copyButton, field, fmtTime, h, jsonView, link, messageArea, select, shortId, statusBadge, table } from "./ui.js";

// The ledger's event types (chalicelib/events/ledger.py EVENT_TYPES; tests/integration/test_console_api.py
// fails when the two differ). "*" stands alone: every type.
export const EVENT_TYPES = ["task.status_changed", "run.status_changed", "run.step_changed", "run.approval_requested", "webhook.disabled"];
const ALL = "*";
const DELIVERY_STATUSES = ["pending", "succeeded", "failed", "abandoned"];
const PAGE_SIZE = 10;
const POLL_MS = 1500;

/** Event-type checkboxes: "*" (all) or any of EVENT_TYPES. */
function eventTypesField(prefix, current = []) {
  const boxes = [ALL, ...EVENT_TYPES].map((t) => h("input", { type: "checkbox", id: `${prefix}-${t === ALL ? "all" : t.replace(/\./g, "-")}`, value: t, checked: current.includes(t) }));
  const [all, ...types] = boxes;
  const sync = () => { for (const b of types) { b.disabled = all.checked; if (all.checked) b.checked = false; } };
  all.addEventListener("change", sync);
  sync();
  const el = h("fieldset", { class: "event-types" }, h("legend", {}, "Event types"),
    boxes.map((b) => h("span", { class: "check" }, b, h("label", { for: b.id }, b.value === ALL ? "All (*)" : b.value))),
    h("small", { class: "hint" }, "webhook.test is sent by “Send test event” whatever is ticked here."));
  return { el, value: () => (all.checked ? [ALL] : types.filter((b) => b.checked).map((b) => b.value)) };
}

function secretOnce(secret) {
  return h("div", { class: "secret", role: "status" },
    h("p", {}, h("strong", {}, "Signing secret (shown once): "), "copy it now; the console cannot show it again. Verify ",
      h("code", {}, "webhook-signature"), " with it (docs/webhooks.md)."),
    h("code", { class: "key" }, secret), " ", copyButton(secret, "Copy secret"));
}

function hookStatus(w) {
  return h("span", {}, statusBadge(w.status), w.disabled_reason ? h("span", { class: "reason" }, ` ${w.disabled_reason}`) : null);
}

function createForm(onCreated) {
  const msgs = messageArea();
  const url = h("input", { id: "hook-url", name: "url", type: "url", required: true, maxlength: 2048, placeholder: "https://example.com/hooks/ymera" });
  const description = h("input", { id: "hook-description", name: "description", maxlength: 500 });
  const types = eventTypesField("new-type", ["task.status_changed"]);
  const btn = h("button", { type: "submit" }, "Create webhook");
  const el = h("form", { class: "card", "aria-labelledby": "new-hook-h" },
    h("h2", { id: "new-hook-h" }, "New webhook"), msgs.el,
    h("div", { class: "row" }, field("URL", url, "https only, except on development stages (make run), which allow http and 127.0.0.1."),
      field("Description", description)),
    types.el, btn);
  el.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(btn, "Creating…", msgs, async () => {
      const hook = await api("POST", "/webhooks", { body: { url: url.value, event_types: types.value(), description: description.value || null } });
      msgs.ok(`Created the webhook to ${hook.url}.`);
      msgs.el.append(secretOnce(hook.secret));
      url.value = "";
      description.value = "";
      await onCreated(hook);
    });
  });
  return el;
}

export async function webhooksPage(ctx) {
  const msgs = messageArea();
  const list = h("div", { "aria-live": "polite" });
  const load = async () => {
    const res = await api("GET", "/webhooks");
    clear(list, table(res.items, [
      ["URL", (w) => link(`#/webhooks/${w.id}`, w.url)],
      ["Event types", (w) => w.event_types.join(", ")],
      ["Status", hookStatus],
      ["Failures in a row", (w) => String(w.failure_count)],
      ["Description", (w) => w.description || ""],
      ["", (w) => {
        const del = h("button", { type: "button", class: "small danger", "aria-label": `Delete the webhook to ${w.url}` }, "Delete");
        del.addEventListener("click", () => {
          if (!confirm(`Delete the webhook to ${w.url} and its delivery log?`)) return;
          busy(del, "Deleting…", msgs, async () => { await api("DELETE", `/webhooks/${w.id}`); msgs.ok("Deleted."); await load(); });
        });
        return del;
      }],
    ], { empty: "No webhooks yet: create one below.", caption: "Your webhooks" }));
  };
  await load();
  // A subscription the sender disables announces it on the ledger (webhook.disabled): show it without a reload.
  ctx.onLeave(watch({ types: ["webhook.disabled"] }, load, { pollMs: 10000 }));
  return h("div", {}, h("h1", {}, "Webhooks"),
    h("p", {}, "Your events, POSTed to your URL, signed (Standard Webhooks), retried when your receiver fails."),
    msgs.el, list, createForm(load));
}

function attemptsTable(d) {
  return table(d.attempt_log, [
    ["#", (a) => String(a.attempt)],
    ["Started", (a) => fmtTime(a.started_at)],
    ["Status code", (a) => (a.status_code === null ? "no answer" : String(a.status_code))],
    ["Latency", (a) => `${a.latency_ms} ms`],
    ["Error", (a) => a.error || ""],
    ["Answer", (a) => (a.response_excerpt ? h("code", { class: "excerpt" }, a.response_excerpt.slice(0, 120)) : "")],
    ["Next retry", (a) => (a.next_retry_at ? fmtTime(a.next_retry_at) : "—")],
  ], { empty: "No attempt yet.", caption: `Attempts of ${shortId(d.id)}` });
}

function deliveryLog(hook, ctx) {
  const msgs = messageArea();
  const status = select([["", "any"], ...DELIVERY_STATUSES.map((s) => [s, s])], "", { id: "dlv-status" });
  const list = h("div", {});
  const pager = h("div", { class: "pager" });
  let cursors = [null];
  let page = 0;
  let timer = null;
  let left = false;
  const schedule = (pending) => {
    clearTimeout(timer);
    timer = null;
    // Deliveries change without a ledger event (the sender records its attempts): poll while one is pending.
    if (!pending || left) return;
    timer = setTimeout(() => {
      timer = null;
      if (document.hidden) schedule(true);
      else load().catch((err) => { msgs.error(err); schedule(true); });
    }, POLL_MS);
  };
  ctx.onLeave(() => { left = true; clearTimeout(timer); });
  const redeliverButton = (d) => {
    const b = h("button", { type: "button", class: "small", "aria-label": `Redeliver ${d.event_type} ${shortId(d.id)}` }, "Redeliver");
    b.addEventListener("click", () => busy(b, "Sending…", msgs, async () => {
      const again = await api("POST", `/webhooks/${hook.id}/deliveries/${d.id}/redeliver`);
      const last = again.attempt_log[again.attempt_log.length - 1];
      msgs.ok(`Redelivered: attempt ${last?.attempt ?? "?"} answered ${last?.status_code ?? last?.error ?? "nothing"}.`);
      await load();
    }));
    return b;
  };
  const load = async () => {
    const res = await api("GET", `/webhooks/${hook.id}/deliveries`, { query: { cursor: cursors[page], limit: PAGE_SIZE, status: status.value } });
    clear(list, res.items.length ? h("table", { class: "deliveries" }, h("caption", {}, "Deliveries, newest first"),
      h("thead", {}, h("tr", {}, ["Delivery", "Status", "Attempts", ""].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, res.items.map((d) => h("tr", { "data-delivery": d.id, "data-status": d.status },
        h("td", {}, h("strong", {}, d.event_type), d.event_id === null ? "" : ` #${d.event_id}`, h("br"),
          h("small", {}, `${shortId(d.id)} · ${fmtTime(d.created_at)}`),
          h("details", {}, h("summary", {}, "Body"), jsonView(d.event, { depth: 1, label: "body" }))),
        h("td", {}, statusBadge(d.status), d.next_attempt_at && d.status === "pending" ? h("small", { class: "hint" }, h("br"), `next attempt ${fmtTime(d.next_attempt_at)}`) : null),
        h("td", {}, attemptsTable(d)),
        h("td", {}, redeliverButton(d))))))
      : h("p", { class: "empty" }, status.value ? `No ${status.value} deliveries.` : "No deliveries yet: send a test event."));
    cursors[page + 1] = res.next_cursor;
    const prev = h("button", { type: "button", class: "small", disabled: page === 0 ? true : null, onclick: () => { page -= 1; load().catch((err) => msgs.error(err)); } }, "Previous");
    const next = h("button", { type: "button", class: "small", disabled: res.next_cursor ? null : true, onclick: () => { page += 1; load().catch((err) => msgs.error(err)); } }, "Next");
    clear(pager, prev, ` page ${page + 1} `, next);
    schedule(res.items.some((d) => d.status === "pending"));
  };
  const apply = h("button", { type: "submit", class: "small" }, "Apply");
  const filters = h("form", { class: "inline", "aria-label": "Delivery filters" }, field("Delivery status", status), apply);
  filters.addEventListener("submit", (e) => { e.preventDefault(); cursors = [null]; page = 0; busy(apply, "Loading…", msgs, load); });
  const el = h("section", { class: "card", "aria-labelledby": "dlv-h" }, h("h2", { id: "dlv-h" }, "Delivery log"),
    h("p", { class: "hint" }, "Every attempt of every delivery (the last 30 days). Retries: 5xx, 429 and network errors, backing off for up to 24 h."),
    msgs.el, filters, list, pager);
  return { el, load };
}

export async function webhookPage(ctx) {
  let hook = await api("GET", `/webhooks/${ctx.params.id}`);
  const msgs = messageArea();
  const title = h("h1", {});
  const summary = h("p", {});
  const show = () => {
    clear(title, "Webhook ", statusBadge(hook.status));
    clear(summary, h("code", {}, hook.url), ` · ${hook.event_types.join(", ")} · failures in a row ${hook.failure_count}`,
      hook.disabled_reason ? ` · disabled: ${hook.disabled_reason}` : "",
      hook.previous_secret_expires_at ? ` · previous secret signs until ${fmtTime(hook.previous_secret_expires_at)}` : "",
      ` · created ${fmtTime(hook.created_at)}`);
  };
  show();
  const log = deliveryLog(hook, ctx);

  const test = h("button", { type: "button" }, "Send test event");
  test.addEventListener("click", () => busy(test, "Sending…", msgs, async () => {
    const d = await api("POST", `/webhooks/${hook.id}/test`);
    msgs.ok(`Test event sent: ${d.last_status_code ?? d.last_error ?? "no answer"}${d.status === "pending" ? " (a retry is scheduled)" : ""}.`);
    await log.load();
  }));
  const grace = h("input", { id: "rotate-grace", type: "number", min: 0, max: 604800, placeholder: "86400" });
  const rotate = h("button", { type: "button" }, "Rotate secret");
  rotate.addEventListener("click", () => {
    if (!confirm("Rotate the signing secret? The new one is shown once.")) return;
    busy(rotate, "Rotating…", msgs, async () => {
      const body = grace.value === "" ? undefined : { previous_secret_valid_seconds: Number(grace.value) };
      const r = await api("POST", `/webhooks/${hook.id}/rotate-secret`, { body });
      const { secret, ...rest } = r;
      hook = rest;
      show();
      msgs.ok("New secret issued.");
      msgs.el.append(secretOnce(secret));
    });
  });
  const del = h("button", { type: "button", class: "danger" }, "Delete webhook");
  del.addEventListener("click", () => {
    if (!confirm(`Delete the webhook to ${hook.url} and its delivery log?`)) return;
    busy(del, "Deleting…", msgs, async () => { await api("DELETE", `/webhooks/${hook.id}`); location.hash = "#/webhooks"; });
  });

  const url = h("input", { id: "edit-url", type: "url", required: true, maxlength: 2048, value: hook.url });
  const description = h("input", { id: "edit-description", maxlength: 500, value: hook.description || "" });
  const state = select([["active", "active"], ["disabled", "disabled"]], hook.status, { id: "edit-status" });
  const types = eventTypesField("edit-type", hook.event_types);
  const save = h("button", { type: "submit" }, "Save");
  const edit = h("form", { class: "card", "aria-labelledby": "edit-hook-h" }, h("h2", { id: "edit-hook-h" }, "Edit"),
    h("div", { class: "row" }, field("URL", url), field("Description", description),
      field("Status", state, "active re-enables a disabled webhook (its failure count starts again).")), types.el, save);
  edit.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(save, "Saving…", msgs, async () => {
      hook = await api("PUT", `/webhooks/${hook.id}`, { body: {
        url: url.value, description: description.value, event_types: types.value(),
        status: state.value === hook.status ? undefined : state.value } });
      show();
      msgs.ok("Saved.");
    });
  });

  await log.load();
  return h("div", {}, h("p", {}, link("#/webhooks", "← Webhooks")), title, summary, msgs.el,
    h("section", { class: "card", "aria-labelledby": "act-h" }, h("h2", { id: "act-h" }, "Actions"),
      h("div", { class: "row" }, test, field("Old secret keeps signing for (seconds)", grace, "Empty: 24 h. 0: stops at once (a leaked secret)."), rotate, del)),
    log.el, edit);
}
