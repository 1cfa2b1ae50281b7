// SVG charts drawn here (no library): horizontal bars for counts, lines for series. Every chart has a
// title and a text alternative (the numbers as a table for screen readers and copy/paste).
import { h } from "./ui.js";

const NS = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function dataTable(title, rows, headers) {
  return h("details", { class: "chart-data" }, h("summary", {}, `${title}: the numbers`),
    h("table", {}, h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, String(c))))))));
}

/** pairs: [[label, value]] */
export function barChart(title, pairs, { unit = "", empty = "No data in this range." } = {}) {
  const fig = h("figure", { class: "chart" }, h("figcaption", {}, title));
  if (!pairs.length) { fig.append(h("p", { class: "empty" }, empty)); return fig; }
  const max = Math.max(...pairs.map(([, v]) => v)) || 1; // seconds can be well under 1
  const rowH = 22, labelW = 100, width = 300;
  const svg = s("svg", { viewBox: `0 0 ${width} ${pairs.length * rowH + 4}`, role: "img", "aria-label": title, class: "bars" });
  pairs.forEach(([label, v], i) => {
    const y = i * rowH + 2, w = ((width - labelW - 60) * v) / max;
    svg.append(s("text", { x: labelW - 6, y: y + 15, "text-anchor": "end", class: "lbl" }, label),
      s("rect", { x: labelW, y: y + 3, width: Math.max(w, v > 0 ? 2 : 0), height: rowH - 8, rx: 2, class: `bar b-${label}` }),
      s("text", { x: labelW + w + 6, y: y + 15, class: "val" }, `${v}${unit}`));
  });
  fig.append(svg, dataTable(title, pairs, ["", "value"]));
  return fig;
}

/** points: [{x: label, ...series}], series: [[key, name]] */
export function lineChart(title, points, series) {
  const fig = h("figure", { class: "chart" }, h("figcaption", {}, title));
  if (!points.length) { fig.append(h("p", { class: "empty" }, "No data in this range.")); return fig; }
  const W = 420, H = 160, L = 34, B = 22, T = 8;
  const max = Math.max(1, ...points.flatMap((p) => series.map(([k]) => p[k] || 0)));
  const x = (i) => L + (points.length === 1 ? (W - L) / 2 : ((W - L - 8) * i) / (points.length - 1));
  const y = (v) => T + (H - T - B) * (1 - v / max);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title, class: "lines" });
  svg.append(s("line", { x1: L, y1: y(0), x2: W, y2: y(0), class: "axis" }), s("text", { x: L - 4, y: y(max) + 4, "text-anchor": "end", class: "lbl" }, max),
    s("text", { x: L - 4, y: y(0) + 4, "text-anchor": "end", class: "lbl" }, 0));
  series.forEach(([k], si) => {
    const d = points.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(p[k] || 0).toFixed(1)}`).join(" ");
    svg.append(s("path", { d, class: `line l${si}` }));
  });
  const step = Math.max(1, Math.ceil(points.length / 6));
  points.forEach((p, i) => { if (i % step === 0) svg.append(s("text", { x: x(i), y: H - 6, "text-anchor": "middle", class: "lbl" }, p.x)); });
  const legend = h("ul", { class: "legend" }, series.map(([, name], si) => h("li", { class: `l${si}` }, name)));
  fig.append(svg, legend, dataTable(title, points.map((p) => [p.x, ...series.map(([k]) => p[k] || 0)]), ["", ...series.map(([, n]) => n)]));
  return fig;
}

/** A workflow definition as a layered graph: one column per dependency depth, arrows for depends_on. */
export function dagChart(steps, { statuses = {}, marked = new Set() } = {}) {
  const depth = {};
  const byId = Object.fromEntries(steps.map((st) => [st.step_id, st]));
  const level = (id, seen = new Set()) => {
    if (depth[id] !== undefined) return depth[id];
    if (seen.has(id)) return 0;
    seen.add(id);
    const deps = (byId[id]?.depends_on || []).filter((d) => byId[d]);
    depth[id] = deps.length ? 1 + Math.max(...deps.map((d) => level(d, seen))) : 0;
    return depth[id];
  };
  steps.forEach((st) => level(st.step_id));
  const cols = {};
  steps.forEach((st) => { (cols[depth[st.step_id]] ||= []).push(st.step_id); });
  const nW = 160, nH = 40, gx = 50, gy = 16;
  const pos = {};
  Object.entries(cols).forEach(([c, ids]) => ids.forEach((id, r) => { pos[id] = { x: 8 + c * (nW + gx), y: 8 + r * (nH + gy) }; }));
  const W = 16 + Object.keys(cols).length * (nW + gx), Hh = 16 + Math.max(1, ...Object.values(cols).map((c) => c.length)) * (nH + gy);
  const svg = s("svg", { viewBox: `0 0 ${W} ${Hh}`, width: W, height: Hh, role: "img", class: "dag", "aria-label": `workflow graph: ${steps.map((st) => `${st.step_id}${st.depends_on?.length ? ` after ${st.depends_on.join(", ")}` : ""}`).join("; ")}` });
  svg.append(s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto" }, s("path", { d: "M0,0 L10,5 L0,10 z", class: "arrowhead" }))));
  steps.forEach((st) => (st.depends_on || []).forEach((d) => {
    if (!pos[d]) return;
    const a = pos[d], b = pos[st.step_id];
    svg.append(s("path", { d: `M${a.x + nW},${a.y + nH / 2} C${a.x + nW + gx / 2},${a.y + nH / 2} ${b.x - gx / 2},${b.y + nH / 2} ${b.x},${b.y + nH / 2}`, class: "edge", "marker-end": "url(#arrow)" }));
  }));
  steps.forEach((st) => {
    const p = pos[st.step_id];
    const kind = st.type === "approval" ? "approval" : st.engine ? "engine" : "task";
    const st8 = statuses[st.step_id];
    const g = s("g", { class: `node n-${kind}${st8 ? ` st-${st8}` : ""}${marked.has(st.step_id) ? " invalid" : ""}`, "data-step": st.step_id, "data-status": st8 });
    g.append(s("rect", { x: p.x, y: p.y, width: nW, height: nH, rx: 6 }),
      s("text", { x: p.x + 8, y: p.y + 17, class: "nid" }, st.step_id.slice(0, 18)),
      s("text", { x: p.x + 8, y: p.y + 32, class: "nkind" }, (kind === "approval" ? "approval" : (st.agent_type || st.engine || (st.agent_id ? "agent" : "task")) + (st.for_each ? " ×each" : "")) + (st8 ? ` · ${st8}` : "")));
    svg.append(g);
  });
  return h("figure", { class: "chart dag-wrap" }, h("figcaption", {}, "Definition"), svg);
}
