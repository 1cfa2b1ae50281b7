// Overview: the analytics engine's figures over a range as charts (tasks per status and agent type,
// throughput, latency percentiles, failures by code), recent failures, and for admins queue and DLQ depths.
import { api, isAdmin } from "./api.js";
import { watch } from "./live.js";
import { barChart, lineChart } from "./charts.js";
import { clear, errorBox, field, fmtTime, h, link, select, table } from "./ui.js";

const RANGES = { hour: [3600e3, "hour"], day: [86400e3, "hour"], week: [7 * 86400e3, "day"] };

function percentiles(title, p) {
  if (!p || !p.count) return barChart(title, [], { empty: "No completed tasks in this range." });
  const fig = barChart(`${title} — ${p.count} completed`, ["p50", "p90", "p99"].map((k) => [k, Number((p[k] ?? 0).toFixed(3))]), { unit: " s" });
  return fig;
}

export async function overviewPage(ctx) {
  const range = select([["hour", "Last hour"], ["day", "Last 24 hours"], ["week", "Last 7 days"]], ctx.query.get("range") || "day", { id: "ov-range" });
  const host = h("div", { "aria-live": "polite" });
  const queues = h("section", {});
  const load = async () => {
    const [span, bucket] = RANGES[range.value];
    const to = new Date(Date.now() + 60e3);
    const from = new Date(to - span);
    const [a, failed] = await Promise.all([
      api("POST", "/engines/analytics", { body: { from: from.toISOString(), to: to.toISOString(), bucket } }),
      api("GET", "/tasks", { query: { status: "failed", limit: 5 } }),
    ]);
    const t = a.tasks;
    const points = a.series.map((p) => ({ ...p, x: bucket === "hour" ? new Date(p.start).getUTCHours() + "h" : p.start.slice(5, 10) }));
    clear(host,
      h("p", {}, `${t.total} tasks, ${a.runs.total} workflow runs${a.scope === "all" ? " (every user: you are an admin)" : ""}.`),
      h("div", { class: "grid" },
        barChart("Tasks by status", Object.entries(t.by_status).filter(([, v]) => v > 0)),
        barChart("Tasks by agent type", Object.entries(t.by_agent_type)),
        lineChart(`Throughput per ${bucket}`, points, [["tasks", "created"], ["completed", "completed"], ["failed", "failed"], ["runs", "runs"]]),
        percentiles("Run time (started → completed)", t.latency_seconds.run),
        percentiles("End to end (created → completed)", t.latency_seconds.end_to_end),
        barChart("Failures by error code", Object.entries(t.failures.by_code), { empty: "No failures in this range." }),
        barChart("Workflow runs by status", Object.entries(a.runs.by_status).filter(([, v]) => v > 0))),
      h("h2", {}, "Recent failures"),
      table(failed.items, [["Task", (x) => link(`#/tasks/${x.id}`, x.title)], ["Code", (x) => h("code", {}, x.error?.code || "UNKNOWN")],
        ["Message", (x) => x.error?.message || ""], ["When", (x) => fmtTime(x.completed_at || x.updated_at)]], { empty: "No failed tasks." }));
    if (isAdmin()) {
      const st = await api("GET", "/status");
      clear(queues, h("h2", {}, "Queues (admin)"),
        table(st.queues, [["Agent type", (q) => q.agent_type], ["Waiting", (q) => q.messages ?? "?"], ["In flight", (q) => q.in_flight ?? "?"],
          ["DLQ", (q) => (q.dlq_messages ? h("strong", {}, String(q.dlq_messages)) : String(q.dlq_messages ?? "?"))], ["", (q) => (q.error ? errorBox({ code: "QUEUE", message: q.error }) : "")]],
        { empty: "No queues." }),
        barChart("DLQ depth per queue", st.queues.map((q) => [q.agent_type, q.dlq_messages || 0]).filter(([, v]) => v > 0), { empty: "Every dead-letter queue is empty." }),
        h("p", {}, link("#/admin/dlq", "Dead-letter queues: samples and redrive →")));
    }
  };
  range.addEventListener("change", () => load().catch((e) => clear(host, errorBox(e))));
  await load();
  ctx.onLeave(watch({ types: ["task.status_changed", "run.status_changed"] }, load, { pollMs: 10000 }));
  return h("div", {}, h("h1", {}, "Overview"), h("div", { class: "row" }, field("Range", range)), host, queues);
}
