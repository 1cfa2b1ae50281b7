// Pretty-printed JSON that remembers the line of every path ("steps[0].depends_on[1]"), so the API's
// violations (422 WORKFLOW_INVALID: {path, code, message}) can be shown and reached at their place.

export function stringifyWithLines(value) {
  const lines = {};
  let line = 1;
  const out = [];
  const emit = (s) => { out.push(s); line += (s.match(/\n/g) || []).length; };
  const walk = (v, path, indent) => {
    lines[path] = line;
    const pad = "  ".repeat(indent + 1), end = "  ".repeat(indent);
    if (Array.isArray(v)) {
      if (!v.length) return emit("[]");
      emit("[\n");
      v.forEach((item, i) => { emit(pad); walk(item, `${path}[${i}]`, indent + 1); emit(i < v.length - 1 ? ",\n" : "\n"); });
      return emit(`${end}]`);
    }
    if (v && typeof v === "object") {
      const keys = Object.keys(v);
      if (!keys.length) return emit("{}");
      emit("{\n");
      keys.forEach((k, i) => {
        emit(`${pad}${JSON.stringify(k)}: `);
        lines[path ? `${path}.${k}` : k] = line;
        walk(v[k], path ? `${path}.${k}` : k, indent + 1);
        emit(i < keys.length - 1 ? ",\n" : "\n");
      });
      return emit(`${end}}`);
    }
    return emit(JSON.stringify(v));
  };
  walk(value, "", 0);
  return { text: out.join(""), lines };
}

/** The line of a path, or of its longest existing prefix (a missing field points at its parent). */
export function lineOf(lines, path) {
  let p = path || "";
  while (p) {
    if (lines[p] !== undefined) return lines[p];
    p = p.replace(/(\[\d+\]|\.[^.[\]]+|^[^.[\]]+)$/, "");
  }
  return 1;
}

/** Put the caret at the start of a line of a textarea and scroll to it. */
export function goToLine(area, n) {
  const text = area.value;
  let pos = 0;
  for (let i = 1; i < n; i += 1) { const next = text.indexOf("\n", pos); if (next < 0) break; pos = next + 1; }
  const stop = text.indexOf("\n", pos);
  area.focus();
  area.setSelectionRange(pos, stop < 0 ? text.length : stop);
  const lineHeight = area.scrollHeight / Math.max(1, text.split("\n").length);
  area.scrollTop = Math.max(0, (n - 3) * lineHeight);
}
