// Tasks: the list with the API's filters and cursor paging, updating live; a new-task form; the task page
// (input, output as collapsible JSON and tables, error, timeline, cancel, rating), live until it ends.
import { api } from "./api.js";
import { watch } from "./live.js";
import { agentTypes } from "./page-agents.js";
import { busy, clear, errorBox, field, fmtTime, h, jsonView, link, messageArea, parseJson, select, shortId, statusBadge, table, tablesOf } from "./ui.js";

const STATUSES = ["pending", "queued", "processing", "completed", "failed", "cancelled", "timed_out"];
const PRIORITIES = ["low", "normal", "high", "critical"];
const TERMINAL = new Set(["completed", "failed", "cancelled", "timed_out"]);

async function allAgents() {
  const res = await api("GET", "/agents", { query: { limit: 200 } });
  return res.items;
}

function newTaskForm(agents, types, preselect) {
  const msgs = messageArea();
  if (!agents.length) return h("section", { class: "card" }, h("h2", {}, "New task"), h("p", { class: "empty" }, "Create an agent first: ", link("#/agents", "Agents"), "."));
  const agent = select(agents.map((a) => [a.id, `${a.name} (${a.type})`]), preselect || agents[0].id, { id: "task-agent" });
  const title = h("input", { id: "task-title", required: true, maxlength: 200 });
  const priority = select(PRIORITIES.map((p) => [p, p]), "normal", { id: "task-priority" });
  const input = h("textarea", { id: "task-input", rows: 8, class: "code", spellcheck: "false" });
  const fill = () => {
    const a = agents.find((x) => x.id === agent.value);
    const t = types.find((x) => x.type === a?.type);
    input.value = JSON.stringify(t?.example_input || {}, null, 2);
  };
  agent.addEventListener("change", fill);
  fill();
  const btn = h("button", { type: "submit" }, "Send task");
  const form = h("form", { class: "card", "aria-labelledby": "new-task-h" }, h("h2", { id: "new-task-h" }, "New task"), msgs.el,
    h("div", { class: "row" }, field("Agent", agent), field("Title", title), field("Priority", priority)),
    field("Input (JSON)", input, "Prefilled with the agent type's example input."), btn);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(btn, "Sending…", msgs, async () => {
      const task = await api("POST", "/tasks", { body: { agent_id: agent.value, title: title.value, priority: priority.value, input_data: parseJson(input.value, "Input") } });
      location.hash = `#/tasks/${task.id}`;
    });
  });
  return form;
}

export async function tasksPage(ctx) {
  const [agents, types] = await Promise.all([allAgents(), agentTypes()]);
  const names = Object.fromEntries(agents.map((a) => [a.id, a.name]));
  const q = ctx.query;
  const f = {
    status: select([["", "any"], ...STATUSES.map((s) => [s, s])], q.get("status") || "", { id: "flt-status" }),
    agent_id: select([["", "any"], ...agents.map((a) => [a.id, a.name])], q.get("agent_id") || "", { id: "flt-agent" }),
    priority: select([["", "any"], ...PRIORITIES.map((p) => [p, p])], q.get("priority") || "", { id: "flt-priority" }),
    created_after: h("input", { id: "flt-after", type: "datetime-local" }),
    created_before: h("input", { id: "flt-before", type: "datetime-local" }),
  };
  const msgs = messageArea();
  const list = h("div", { "aria-live": "polite" });
  const pager = h("div", { class: "pager" });
  let cursors = [null];
  let page = 0;
  const query = () => {
    const out = { limit: 20, cursor: cursors[page] };
    for (const [k, el] of Object.entries(f)) if (el.value) out[k] = el.type === "datetime-local" ? new Date(el.value).toISOString() : el.value;
    return out;
  };
  const load = async () => {
    let res;
    try { res = await api("GET", "/tasks", { query: query() }); } catch (err) { msgs.error(err); return; }
    msgs.clear();
    clear(list, table(res.items, [
      ["Title", (t) => link(`#/tasks/${t.id}`, t.title)], ["Status", (t) => statusBadge(t.status)],
      ["Agent", (t) => names[t.agent_id] || t.agent_type], ["Priority", (t) => t.priority],
      ["Created", (t) => fmtTime(t.created_at)], ["Attempts", (t) => t.attempts],
    ], { empty: "No tasks match.", caption: "Tasks, newest first" }));
    cursors[page + 1] = res.next_cursor;
    clear(pager,
      h("button", { type: "button", class: "small", disabled: page === 0 ? true : null, onclick: () => { page -= 1; load(); } }, "Previous"),
      ` page ${page + 1} `,
      h("button", { type: "button", class: "small", disabled: res.next_cursor ? null : true, onclick: () => { page += 1; load(); } }, "Next"));
  };
  const filters = h("form", { class: "filters", "aria-label": "Filters" },
    field("Status", f.status), field("Agent", f.agent_id), field("Priority", f.priority),
    field("Created after", f.created_after), field("Created before", f.created_before),
    h("button", { type: "submit", class: "small" }, "Apply"));
  filters.addEventListener("submit", (e) => { e.preventDefault(); cursors = [null]; page = 0; load(); });
  await load();
  ctx.onLeave(watch({ types: ["task.status_changed"] }, () => (page === 0 ? load() : null)));
  return h("div", {}, h("h1", {}, "Tasks"), filters, msgs.el, list, pager, newTaskForm(agents, types, q.get("new")));
}

function timeline(task) {
  const rows = [["created", task.created_at], ["started", task.started_at], [task.status, task.completed_at]]
    .filter(([, at]) => at);
  return h("ol", { class: "timeline" }, rows.map(([what, at]) => h("li", {}, h("time", { datetime: at }, fmtTime(at)), " ", statusBadge(what))),
    TERMINAL.has(task.status) ? null : h("li", { class: "now" }, statusBadge(task.status), " now…"));
}

function ratingForm(task, msgs) {
  const rating = select([["5", "5 — excellent"], ["4", "4"], ["3", "3"], ["2", "2"], ["1", "1 — useless"]], "5", { id: "rate-value" });
  const comment = h("input", { id: "rate-comment", maxlength: 2000 });
  const btn = h("button", { type: "submit", class: "small" }, "Rate");
  const form = h("form", { class: "inline", "aria-label": "Rate this result" }, field("Rating", rating), field("Comment", comment), btn);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(btn, "Sending…", msgs, async () => { await api("POST", `/tasks/${task.id}/feedback`, { body: { rating: Number(rating.value), comment: comment.value || null } }); msgs.ok("Thanks: the rating counts towards the agent's quality."); });
  });
  return form;
}

export async function taskPage(ctx) {
  const id = ctx.params.id;
  const msgs = messageArea();
  const host = h("div", {});
  let last = null;
  const draw = (task) => {
    const out = task.result?.output_data;
    const cancel = h("button", { type: "button", class: "danger" }, "Cancel task");
    cancel.addEventListener("click", () => busy(cancel, "Cancelling…", msgs, async () => { draw(await api("POST", `/tasks/${id}/cancel`)); }));
    clear(host,
      h("h1", {}, task.title, " ", h("span", { id: "task-status" }, statusBadge(task.status))),
      h("p", {}, `${task.agent_type} · priority ${task.priority} · attempts ${task.attempts} · `, link(`#/agents/${task.agent_id}`, "agent"),
        task.run_id ? [" · ", link(`#/runs/${task.run_id}`, `run ${shortId(task.run_id)} step ${task.step_id}`)] : null),
      TERMINAL.has(task.status) ? null : cancel,
      h("section", { "aria-labelledby": "tl-h" }, h("h2", { id: "tl-h" }, "Timeline"), timeline(task)),
      task.error ? h("section", {}, h("h2", {}, "Error"), errorBox(task.error), jsonView(task.error, { label: "error" })) : null,
      h("section", {}, h("h2", {}, "Input"), jsonView(task.input_data, { label: "input" })),
      out ? h("section", {}, h("h2", {}, "Output"), ...tablesOf(out), jsonView(out, { depth: 1, label: "output" }),
        task.result.metrics && Object.keys(task.result.metrics).length ? h("details", {}, h("summary", {}, "Metrics"), jsonView(task.result.metrics, { label: "metrics" })) : null) : null,
      task.status === "completed" ? h("section", {}, h("h2", {}, "Rate the result"), ratingForm(task, msgs)) : null);
  };
  let stop = () => {};
  let lastStatus = null;
  const load = async () => {
    const task = await api("GET", `/tasks/${id}`);
    const sig = `${task.status}|${task.updated_at}|${!!task.result}`;
    if (sig !== last) { last = sig; draw(task); }
    lastStatus = task.status;
    if (TERMINAL.has(task.status)) stop();
  };
  await load();
  if (!TERMINAL.has(lastStatus)) stop = watch({ task_ids: [id] }, load);
  ctx.onLeave(() => stop());
  return h("div", {}, h("p", {}, link("#/tasks", "← Tasks")), msgs.el, host);
}
