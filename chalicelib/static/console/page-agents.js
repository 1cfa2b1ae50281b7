// Agents: list, create (config form from the type's JSON Schema, with its example input), edit,
// activate/deactivate, delete; an external agent's one-time API key and its rotation; live status.
import { api } from "./api.js";
import { watch } from "./live.js";
import { schemaForm } from "./schema-form.js";
import { busy, clear, copyButton, field, fmtTime, h, jsonView, link, messageArea, select, statusBadge, table } from "./ui.js";

let typesCache = null;
export async function agentTypes() {
  typesCache ||= api("GET", "/agent-types").then((r) => r.items).catch((err) => { typesCache = null; throw err; });
  return typesCache;
}

function keyOnce(key) {
  return h("div", { class: "secret", role: "status" },
    h("p", {}, h("strong", {}, "API key (shown once): "), "copy it now; the console cannot show it again."),
    h("code", { class: "key" }, key), " ", copyButton(key, "Copy key"));
}

function createForm(types, onCreated) {
  const msgs = messageArea();
  const name = h("input", { id: "agent-name", name: "name", required: true, maxlength: 100 });
  const type = select(types.map((t) => [t.type, t.type]), "validation", { id: "agent-type", name: "type" });
  const mode = select([["managed", "managed (runs on the platform)"], ["external", "external (your worker, API key)"]], "managed", { id: "agent-mode" });
  const conc = h("input", { id: "agent-concurrency", type: "number", min: 1, max: 1000, value: 10 });
  const caps = h("input", { id: "agent-capabilities", placeholder: "comma separated" });
  const cfgHost = h("fieldset", { class: "config" });
  const about = h("div", { class: "type-about" });
  let form = null;
  const showType = () => {
    const t = types.find((x) => x.type === type.value);
    form = schemaForm(t.config_schema, t.default_config || {});
    clear(cfgHost, h("legend", {}, `${t.type} config`), form.el);
    clear(about, h("p", {}, t.description || ""),
      h("details", {}, h("summary", {}, "Example input for this type"), jsonView(t.example_input, { depth: 2, label: "example" })));
  };
  type.addEventListener("change", showType);
  showType();
  const btn = h("button", { type: "submit" }, "Create agent");
  const el = h("form", { class: "card", "aria-labelledby": "new-agent-h" },
    h("h2", { id: "new-agent-h" }, "New agent"), msgs.el,
    h("div", { class: "row" }, field("Name", name), field("Type", type), field("Mode", mode), field("Max concurrency", conc)),
    about, field("Capabilities", caps), cfgHost, btn);
  el.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(btn, "Creating…", msgs, async () => {
      const body = { name: name.value, type: type.value, mode: mode.value, max_concurrency: Number(conc.value), config: form.value(),
        capabilities: caps.value.split(",").map((c) => c.trim()).filter(Boolean) };
      const agent = await api("POST", "/agents", { body });
      msgs.ok(`Created ${agent.name}.`);
      if (agent.api_key) msgs.el.append(keyOnce(agent.api_key));
      name.value = "";
      onCreated(agent);
    });
  });
  return el;
}

function actions(agent, msgs, reload) {
  const toggle = h("button", { type: "button", class: "small" }, agent.status === "active" ? "Deactivate" : "Activate");
  toggle.addEventListener("click", () => busy(toggle, "Saving…", msgs, async () => {
    await api("PUT", `/agents/${agent.id}`, { body: { status: agent.status === "active" ? "inactive" : "active" } });
    await reload();
  }));
  const del = h("button", { type: "button", class: "small danger" }, "Delete");
  del.addEventListener("click", () => {
    if (!confirm(`Delete agent ${agent.name}? Its tasks are kept.`)) return;
    busy(del, "Deleting…", msgs, async () => { await api("DELETE", `/agents/${agent.id}`); await reload(); });
  });
  return h("span", { class: "actions" }, toggle, " ", del);
}

export async function agentsPage() {
  const types = await agentTypes();
  const msgs = messageArea();
  const list = h("div", {});
  const pager = h("div", { class: "pager" });
  const cursors = [null];
  let page = 0;
  const load = async () => {
    const res = await api("GET", "/agents", { query: { cursor: cursors[page], limit: 25 } });
    clear(list, table(res.items, [
      ["Name", (a) => link(`#/agents/${a.id}`, a.name)],
      ["Type", (a) => a.type], ["Mode", (a) => a.mode], ["Status", (a) => statusBadge(a.status)],
      ["Quality", (a) => a.quality.mean.toFixed(2)], ["Last heartbeat", (a) => fmtTime(a.last_heartbeat)],
      ["", (a) => actions(a, msgs, load)],
    ], { empty: "No agents yet: create one below.", caption: "Your agents" }));
    cursors[page + 1] = res.next_cursor;
    const prev = h("button", { type: "button", class: "small", disabled: page === 0 ? true : null, onclick: () => { page -= 1; load(); } }, "Previous");
    const next = h("button", { type: "button", class: "small", disabled: res.next_cursor ? null : true, onclick: () => { page += 1; load(); } }, "Next");
    clear(pager, prev, ` page ${page + 1} `, next);
  };
  await load();
  return h("div", {}, h("h1", {}, "Agents"), msgs.el, list, pager, createForm(types, load));
}

export async function agentPage(ctx) {
  const types = await agentTypes();
  const agent = await api("GET", `/agents/${ctx.params.id}`);
  const t = types.find((x) => x.type === agent.type);
  const msgs = messageArea();
  const name = h("input", { id: "edit-name", value: agent.name, required: true });
  const conc = h("input", { id: "edit-concurrency", type: "number", min: 1, max: 1000, value: agent.max_concurrency });
  const form = schemaForm(t.config_schema, agent.config);
  const save = h("button", { type: "submit" }, "Save");
  const edit = h("form", { class: "card", "aria-labelledby": "edit-h" }, h("h2", { id: "edit-h" }, "Edit"),
    h("div", { class: "row" }, field("Name", name), field("Max concurrency", conc)),
    h("fieldset", {}, h("legend", {}, "Config"), form.el), save);
  edit.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(save, "Saving…", msgs, async () => {
      await api("PUT", `/agents/${agent.id}`, { body: { name: name.value, max_concurrency: Number(conc.value), config: form.value() } });
      msgs.ok("Saved.");
    });
  });
  const statusHost = h("section", { class: "card", "aria-labelledby": "st-h" });
  const loadStatus = async () => {
    const st = await api("GET", `/agents/${agent.id}/status`);
    clear(statusHost, h("h2", { id: "st-h" }, "Status"),
      h("p", {}, statusBadge(st.status), ` · ${st.mode} · last heartbeat ${fmtTime(st.last_heartbeat)} · in flight ${st.in_flight.length}/${st.max_concurrency}`),
      h("ul", { class: "counts" }, Object.entries(st.task_counts).map(([k, v]) => h("li", {}, statusBadge(k), ` ${v}`))),
      table(st.in_flight, [["Task", (x) => link(`#/tasks/${x.task_id}`, String(x.task_id).slice(0, 8))], ["Since", (x) => fmtTime(x.started_at)]], { empty: "Nothing in flight." }));
  };
  await loadStatus();
  ctx.onLeave(watch({ types: ["task.status_changed"] }, loadStatus, { pollMs: 3000 }));
  const extra = [];
  if (agent.mode === "external") {
    const rot = h("button", { type: "button" }, "Rotate API key");
    rot.addEventListener("click", () => {
      if (!confirm("Rotate the key? The current key stops working at once.")) return;
      busy(rot, "Rotating…", msgs, async () => { const k = await api("POST", `/agents/${agent.id}/api-key`); msgs.ok("New key issued."); msgs.el.append(keyOnce(k.api_key)); });
    });
    extra.push(h("section", { class: "card" }, h("h2", {}, "API key"), h("p", {}, "Your worker authenticates with X-Agent-Key. Keys are shown once."), rot));
  }
  return h("div", {}, h("p", {}, link("#/agents", "← Agents")),
    h("h1", {}, agent.name, " ", statusBadge(agent.status)),
    h("p", {}, `${agent.type} · ${agent.mode} · created ${fmtTime(agent.created_at)} · `, link(`#/tasks?agent_id=${agent.id}`, "its tasks"), " · ",
      link(`#/tasks?new=${agent.id}`, "send it a task")),
    msgs.el, h("div", { class: "actions" }, actions(agent, msgs, async () => { location.hash = "#/agents"; })),
    statusHost, edit, ...extra);
}
