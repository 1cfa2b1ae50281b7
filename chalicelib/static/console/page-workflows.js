// Workflows: list and create, the definition editor (422 violations listed at their paths, each jumping to
// its line), the definition as a graph, runs with their live step timeline, cancel and redrive, and the
// approvals inbox with approve/reject and the decision's payload form from the step's input_schema.
import { api } from "./api.js";
import { watch } from "./live.js";
import { dagChart } from "./charts.js";
import { goToLine, lineOf, stringifyWithLines } from "./json-lines.js";
import { schemaForm } from "./schema-form.js";
import { busy, clear, errorBox, field, fmtTime, h, jsonView, link, messageArea, parseJson, select, shortId, statusBadge, table } from "./ui.js";

const RUN_STATUSES = ["running", "waiting_approval", "succeeded", "failed", "cancelled", "timed_out"];
const RUN_DONE = new Set(["succeeded", "failed", "cancelled", "timed_out"]);
const EXAMPLE = {
  name: "review", description: "check, approve, check again",
  steps: [
    { step_id: "check", agent_type: "validation", input_data: { schema: { type: "object" }, payload: "$.input" } },
    { step_id: "gate", type: "approval", depends_on: ["check"], timeout_seconds: 3600,
      input_schema: { type: "object", required: ["reviewer"], properties: { reviewer: { type: "string" } } } },
    { step_id: "final", agent_type: "validation", depends_on: ["gate"], input_data: { schema: { type: "object" }, payload: { n: 1 } } },
  ],
};

/** The JSON editor with its graph preview and the API's violations at their paths. */
function editor(initial, submitLabel, submit) {
  const msgs = messageArea();
  const area = h("textarea", { id: "wf-definition", rows: 24, class: "code", spellcheck: "false" });
  area.value = stringifyWithLines(initial).text;
  const graph = h("div", {});
  const violations = h("div", { class: "violations", "aria-live": "polite" });
  const redraw = (marked = new Set()) => {
    try { clear(graph, dagChart(parseJson(area.value, "definition").steps || [], { marked })); } catch { /* keep the last good graph while typing */ }
  };
  area.addEventListener("input", () => redraw());
  redraw();
  const btn = h("button", { type: "submit" }, submitLabel);
  const form = h("form", { class: "card", "aria-labelledby": "wf-ed-h" }, h("h2", { id: "wf-ed-h" }, "Definition"), msgs.el, violations,
    h("div", { class: "editor" }, field("Workflow definition (JSON)", area, "name, description, input_schema, steps[]: agent_type|agent_id|engine|type: approval, depends_on, input_data, for_each"), graph), btn);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    clear(violations);
    busy(btn, "Saving…", msgs, async () => {
      const doc = parseJson(area.value, "The definition");
      try {
        await submit(doc);
      } catch (err) {
        const list = err.details?.violations || [];
        if (!list.length) throw err;
        const { text, lines } = stringifyWithLines(doc);
        area.value = text; // reformatted so that line numbers are exact
        const marked = new Set(list.map((v) => /^steps\[(\d+)\]/.exec(v.path)).filter(Boolean).map((m) => doc.steps?.[Number(m[1])]?.step_id));
        redraw(marked);
        clear(violations, errorBox({ code: err.code, message: err.message }),
          h("ol", { "aria-label": "Violations" }, list.map((v) => {
            const n = lineOf(lines, v.path);
            return h("li", { class: "at", "data-path": v.path },
              h("button", { type: "button", onclick: () => goToLine(area, n), "aria-label": `Go to line ${n}: ${v.path || "(whole definition)"}` }, `line ${n}`),
              h("code", {}, v.path || "(whole definition)"), ` ${v.code}: ${v.message}`);
          })));
      }
    });
  });
  return form;
}

export async function workflowsPage() {
  const res = await api("GET", "/workflows", { query: { limit: 100 } });
  const list = table(res.items, [
    ["Name", (w) => link(`#/workflows/${w.id}`, w.name)], ["Description", (w) => w.description || ""],
    ["Version", (w) => w.current_version], ["Updated", (w) => fmtTime(w.updated_at)],
  ], { empty: "No workflows yet: define one below.", caption: "Your workflows" });
  const create = editor(EXAMPLE, "Create workflow", async (doc) => {
    const wf = await api("POST", "/workflows", { body: doc });
    location.hash = `#/workflows/${wf.id}`;
  });
  return h("div", {}, h("h1", {}, "Workflows"), list, h("h2", {}, "New workflow"), create);
}

export async function workflowPage(ctx) {
  const id = ctx.params.id;
  const wf = await api("GET", `/workflows/${id}`);
  const msgs = messageArea();
  const { name, description } = wf;
  const edit = editor({ name, description, ...wf.definition }, `Save as version ${wf.current_version + 1}`, async (doc) => {
    const saved = await api("PUT", `/workflows/${id}`, { body: doc });
    msgs.ok(`Saved version ${saved.version}.`);
  });
  const input = h("textarea", { id: "run-input", rows: 4, class: "code", spellcheck: "false" });
  input.value = "{}";
  const startBtn = h("button", { type: "submit" }, "Start run");
  const start = h("form", { class: "card", "aria-labelledby": "start-h" }, h("h2", { id: "start-h" }, "Start a run"),
    field("Run input (JSON)", input, wf.definition.input_schema ? "Checked against the workflow's input_schema." : "Any JSON object."), startBtn);
  start.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(startBtn, "Starting…", msgs, async () => {
      const run = await api("POST", `/workflows/${id}/runs`, { body: { input: parseJson(input.value, "Run input") } });
      location.hash = `#/runs/${run.id}`;
    });
  });
  const status = select([["", "any"], ...RUN_STATUSES.map((s) => [s, s])], "", { id: "runs-status" });
  const runs = h("div", {});
  const loadRuns = async () => {
    const res = await api("GET", `/workflows/${id}/runs`, { query: { status: status.value, limit: 20 } });
    clear(runs, table(res.items, [["Run", (r) => link(`#/runs/${r.id}`, shortId(r.id))], ["Status", (r) => statusBadge(r.status)],
      ["Version", (r) => r.version], ["Created", (r) => fmtTime(r.created_at)], ["Finished", (r) => fmtTime(r.finished_at)]], { empty: "No runs." }));
  };
  status.addEventListener("change", loadRuns);
  await loadRuns();
  ctx.onLeave(watch({ types: ["run.status_changed"] }, loadRuns, { pollMs: 3000 }));
  const del = h("button", { type: "button", class: "danger" }, "Delete workflow");
  del.addEventListener("click", () => {
    if (!confirm(`Delete ${wf.name}?`)) return;
    busy(del, "Deleting…", msgs, async () => { await api("DELETE", `/workflows/${id}`); location.hash = "#/workflows"; });
  });
  return h("div", {}, h("p", {}, link("#/workflows", "← Workflows")), h("h1", {}, wf.name, " ", h("small", {}, `v${wf.current_version}`)),
    h("p", {}, wf.description || ""), msgs.el, dagChart(wf.definition.steps || []), start,
    h("section", { class: "card", "aria-labelledby": "runs-h" }, h("h2", { id: "runs-h" }, "Runs"), field("Status", status), runs),
    edit, h("details", {}, h("summary", {}, "Compiled state machine (ASL)"), jsonView(wf.asl, { depth: 1, label: "ASL" })), del);
}

/** Approve/reject one waiting approval: comment, and the payload form from its input_schema. */
function decisionForm(run, step, schema, onDone) {
  const msgs = messageArea();
  const payload = schema ? schemaForm(schema, {}) : null;
  const comment = h("input", { id: `comment-${run.id}-${step.step_id}`, maxlength: 2000 });
  const approve = h("button", { type: "button" }, "Approve");
  const reject = h("button", { type: "button", class: "danger" }, "Reject");
  const decide = (ok, btn) => busy(btn, ok ? "Approving…" : "Rejecting…", msgs, async () => {
    const body = { approve: ok, comment: comment.value || null };
    if (payload && ok) body.payload = payload.value();
    await api("POST", `/runs/${run.id}/steps/${encodeURIComponent(step.step_id)}/decision`, { body });
    msgs.ok(ok ? "Approved." : "Rejected.");
    await onDone();
  });
  approve.addEventListener("click", () => decide(true, approve));
  reject.addEventListener("click", () => decide(false, reject));
  return h("div", { class: "card approval", role: "group", "aria-label": `Approval ${step.step_id} of run ${shortId(run.id)}` },
    h("p", {}, h("strong", {}, step.step_id), ` in run `, link(`#/runs/${run.id}`, shortId(run.id)), ` · waiting since ${fmtTime(step.started_at)}`),
    msgs.el, payload ? h("fieldset", {}, h("legend", {}, "Decision payload"), payload.el) : null,
    field("Comment", comment), h("div", { class: "actions" }, approve, " ", reject));
}

const definitions = new Map();
async function stepSchemas(workflowId) {
  if (!definitions.has(workflowId)) {
    definitions.set(workflowId, api("GET", `/workflows/${workflowId}`).then((w) => Object.fromEntries((w.definition.steps || []).map((s) => [s.step_id, s.input_schema]))));
  }
  return definitions.get(workflowId);
}

export async function runPage(ctx) {
  const id = ctx.params.id;
  const msgs = messageArea();
  const host = h("div", {});
  let stop = () => {};
  let last = null;
  const load = async () => {
    const run = await api("GET", `/runs/${id}`);
    const sig = JSON.stringify([run.status, run.updated_at, run.steps.map((s) => [s.status, s.approval?.waiting])]);
    if (sig === last) return;
    last = sig;
    const [wf, schemas] = await Promise.all([api("GET", `/workflows/${run.workflow_id}`), stepSchemas(run.workflow_id)]);
    const cancel = h("button", { type: "button", class: "danger" }, "Cancel run");
    cancel.addEventListener("click", () => busy(cancel, "Cancelling…", msgs, async () => { await api("POST", `/runs/${id}/cancel`); last = null; await load(); }));
    const redrive = h("button", { type: "button" }, "Redrive");
    redrive.addEventListener("click", () => busy(redrive, "Redriving…", msgs, async () => { await api("POST", `/runs/${id}/redrive`); last = null; await load(); }));
    const statuses = Object.fromEntries(run.steps.map((s) => [s.step_id, s.status]));
    clear(host,
      h("h1", {}, `Run ${shortId(run.id)} `, h("span", { id: "run-status" }, statusBadge(run.status))),
      h("p", {}, link(`#/workflows/${run.workflow_id}`, `${wf.name} v${run.version}`), ` · created ${fmtTime(run.created_at)} · finished ${fmtTime(run.finished_at)}`),
      h("div", { class: "actions" }, RUN_DONE.has(run.status) ? null : cancel, " ", ["failed", "timed_out", "cancelled"].includes(run.status) ? redrive : null),
      dagChart(wf.definition.steps || [], { statuses }),
      h("h2", {}, "Steps"),
      table(run.steps, [
        ["Step", (s) => s.step_id], ["Type", (s) => s.type], ["Status", (s) => statusBadge(s.status)], ["Attempts", (s) => s.attempts],
        ["Started", (s) => fmtTime(s.started_at)], ["Finished", (s) => fmtTime(s.finished_at)],
        ["Task", (s) => (s.task_id ? link(`#/tasks/${s.task_id}`, shortId(s.task_id)) : s.for_each ? `${s.for_each.items.length} items, ${s.for_each.items_failed} failed` : "—")],
        ["Decision", (s) => (s.approval?.decision ? `${s.approval.decision}${s.approval.comment ? `: ${s.approval.comment}` : ""}` : "")],
      ], { caption: "Step timeline" }),
      run.steps.filter((s) => s.approval?.waiting).map((s) => decisionForm(run, s, schemas[s.step_id], async () => { last = null; await load(); })),
      run.error ? h("section", {}, h("h2", {}, "Error"), errorBox(run.error)) : null,
      h("section", {}, h("h2", {}, "Input"), jsonView(run.input, { label: "input" })),
      run.output ? h("section", {}, h("h2", {}, "Output"), jsonView(run.output, { label: "output" })) : null,
      h("details", {}, h("summary", {}, "Executions"), jsonView(run.executions, { label: "executions" })));
    if (RUN_DONE.has(run.status)) stop();
  };
  await load();
  if (!RUN_DONE.has(JSON.parse(last)[0])) stop = watch({ run_ids: [id] }, load);
  ctx.onLeave(() => stop());
  return h("div", {}, h("p", {}, link("#/workflows", "← Workflows")), msgs.el, host);
}

/** Every approval waiting on you: runs in waiting_approval across your workflows. */
export async function approvalsPage(ctx) {
  const host = h("div", { "aria-live": "polite" });
  const load = async () => {
    const wfs = (await api("GET", "/workflows", { query: { limit: 200 } })).items;
    const waiting = (await Promise.all(wfs.map((w) => api("GET", `/workflows/${w.id}/runs`, { query: { status: "waiting_approval", limit: 50 } }).then((r) => r.items)))).flat();
    const runs = await Promise.all(waiting.map((r) => api("GET", `/runs/${r.id}`)));
    const items = [];
    for (const run of runs) {
      const schemas = await stepSchemas(run.workflow_id);
      for (const step of run.steps.filter((s) => s.approval?.waiting)) items.push(decisionForm(run, step, schemas[step.step_id], load));
    }
    const names = Object.fromEntries(wfs.map((w) => [w.id, w.name]));
    clear(host, items.length ? [h("p", {}, `${items.length} approval(s) waiting in ${runs.length} run(s) of ${[...new Set(runs.map((r) => names[r.workflow_id]))].join(", ")}.`), items]
      : h("p", { class: "empty" }, "Nothing is waiting for a decision."));
  };
  await load();
  ctx.onLeave(watch({ types: ["run.approval_requested", "run.status_changed"] }, () => (document.activeElement?.closest(".approval") ? null : load()), { pollMs: 4000 }));
  return h("div", {}, h("h1", {}, "Approvals"), host);
}
