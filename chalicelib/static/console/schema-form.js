// A form generated from a JSON Schema (an agent type's config_schema, an approval's input_schema).
// Scalars, enums and nullable scalars get inputs; nested objects ($ref to $defs) get a fieldset; anything
// else (arrays, free objects) a JSON text area. A field left empty is omitted, so the server default applies.
import { field, h, nextId, parseJson } from "./ui.js";

function resolve(schema, root) {
  if (schema && schema.$ref && schema.$ref.startsWith("#/$defs/")) return root.$defs?.[schema.$ref.slice(8)] || {};
  if (schema && schema.allOf && schema.allOf.length === 1) return resolve(schema.allOf[0], root);
  return schema || {};
}

function scalarOf(schema, root) {
  const s = resolve(schema, root);
  if (s.anyOf) {
    const real = s.anyOf.map((x) => resolve(x, root)).filter((x) => x.type !== "null");
    if (real.length === 1) return { ...real[0], nullable: true, default: s.default, description: s.description, title: s.title };
  }
  return s;
}

/** Returns {el, value(), empty}. value() throws on invalid JSON in a text area. */
export function schemaForm(schema, initial = {}, root = schema, path = "") {
  const props = resolve(schema, root).properties || {};
  const required = new Set(resolve(schema, root).required || []);
  const readers = [];
  const el = h("div", { class: "schema-form" });
  for (const [name, raw] of Object.entries(props)) {
    const s = scalarOf(raw, root);
    const label = `${s.title || name}${required.has(name) ? " (required)" : ""}`;
    const hint = [s.description, s.default !== undefined && s.default !== null ? `default ${JSON.stringify(s.default)}` : null].filter(Boolean).join(" — ");
    const current = initial?.[name];
    const id = nextId(`cfg-${path}${name}`.replace(/[^a-zA-Z0-9-]/g, "-"));
    if (s.enum) {
      const sel = h("select", { id, name }, h("option", { value: "" }, "(default)"),
        s.enum.map((v) => h("option", { value: JSON.stringify(v), selected: JSON.stringify(v) === JSON.stringify(current) ? true : null }, String(v))));
      el.append(field(label, sel, hint));
      readers.push(() => (sel.value === "" ? undefined : [name, JSON.parse(sel.value)]));
    } else if (s.type === "boolean") {
      const sel = h("select", { id, name }, h("option", { value: "" }, "(default)"),
        h("option", { value: "true", selected: current === true ? true : null }, "true"),
        h("option", { value: "false", selected: current === false ? true : null }, "false"));
      el.append(field(label, sel, hint));
      readers.push(() => (sel.value === "" ? undefined : [name, sel.value === "true"]));
    } else if (s.type === "integer" || s.type === "number") {
      const input = h("input", { id, name, type: "number", step: s.type === "integer" ? "1" : "any",
        min: s.minimum ?? null, max: s.maximum ?? null, value: current ?? "" });
      el.append(field(label, input, hint));
      readers.push(() => (input.value === "" ? undefined : [name, Number(input.value)]));
    } else if (s.type === "string") {
      const input = h("input", { id, name, type: "text", value: current ?? "", maxlength: s.maxLength ?? null });
      el.append(field(label, input, hint));
      readers.push(() => (input.value === "" ? undefined : [name, input.value]));
    } else if (s.type === "object" && s.properties) {
      const sub = schemaForm(s, current || {}, root, `${path}${name}-`);
      el.append(h("fieldset", {}, h("legend", {}, label), hint ? h("small", { class: "hint" }, hint) : null, sub.el));
      readers.push(() => { const v = sub.value(); return Object.keys(v).length ? [name, v] : undefined; });
    } else {
      const area = h("textarea", { id, name, rows: 3, class: "code", spellcheck: "false" });
      area.value = current === undefined ? "" : JSON.stringify(current, null, 2);
      el.append(field(`${label} (JSON)`, area, hint));
      readers.push(() => (area.value.trim() === "" ? undefined : [name, parseJson(area.value, label)]));
    }
  }
  if (!Object.keys(props).length) el.append(h("p", { class: "hint" }, "This type has no settings."));
  return {
    el,
    empty: !Object.keys(props).length,
    value() { return Object.fromEntries(readers.map((r) => r()).filter(Boolean)); },
  };
}
