// The "new job" form, built from a job type's JSON Schema (GET /api/job-types), so the form
// follows the registered types and their fields as they change.

/** "on_conflict" -> "On conflict". */
function human(name) {
  const words = name.replaceAll("_", " ").trim();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/** The schema of a field without its "or null" alternative, and whether null was allowed. */
function unwrap(schema) {
  if (Array.isArray(schema.anyOf)) {
    const other = schema.anyOf.filter((s) => s.type !== "null");
    if (other.length === 1 && other.length < schema.anyOf.length) {
      return [{ ...other[0], default: schema.default }, true];
    }
  }
  return [schema, false];
}

function kindOf(schema) {
  if (Array.isArray(schema.enum)) return "enum";
  if (schema.type === "array" && schema.items && schema.items.type === "string") return "lines";
  if (["boolean", "integer", "number", "string"].includes(schema.type)) return schema.type;
  return "json";
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k in node && k !== "list") node[k] = v;
    else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

/**
 * Fill `container` with one labelled control per property of `schema` (a job type's spec).
 * Returns `read()`, which gives the spec object or throws an Error naming the bad field.
 */
export function buildSpecFields(container, schema, typeName) {
  container.replaceChildren();
  const required = new Set(schema.required || []);
  const readers = [];
  for (const [name, raw] of Object.entries(schema.properties || {})) {
    const [field, nullable] = unwrap(raw);
    const kind = kindOf(field);
    const id = `spec-${typeName}-${name}`;
    const must = required.has(name);
    const label = el("label", { htmlFor: id }, human(name));
    if (must) label.append(el("span", { class: "req", "aria-hidden": "true" }, " *"));
    const hasDefault = "default" in field && field.default !== null;
    let control;
    let hint = "";
    if (kind === "lines") {
      control = el("textarea", { id, rows: 3, spellcheck: false });
      hint = "one path per line (absolute paths)";
      if (hasDefault) control.value = field.default.join("\n");
    } else if (kind === "enum") {
      control = el("select", { id });
      for (const value of field.enum) control.append(el("option", { value }, String(value)));
      if (hasDefault) control.value = field.default;
    } else if (kind === "boolean") {
      control = el("input", { id, type: "checkbox" });
      control.checked = Boolean(field.default);
    } else if (kind === "integer" || kind === "number") {
      control = el("input", { id, type: "number", step: kind === "integer" ? "1" : "any" });
      if (hasDefault) control.value = String(field.default);
    } else if (kind === "string") {
      control = el("input", { id, type: "text", spellcheck: false, autocomplete: "off" });
      if (hasDefault) control.value = field.default;
      if (nullable) hint = "optional";
    } else {
      control = el("textarea", { id, rows: 2, spellcheck: false });
      hint = "JSON";
      if ("default" in field) control.value = JSON.stringify(field.default);
    }
    if (must && kind !== "boolean") control.required = true;
    control.name = name;
    const row = el("div", { class: `field field-${kind}` });
    if (kind === "boolean") row.append(control, label);
    else row.append(label, control);
    if (hint) {
      const hintId = `${id}-hint`;
      row.append(el("small", { id: hintId, class: "hint" }, hint));
      control.setAttribute("aria-describedby", hintId);
    }
    container.append(row);
    readers.push(() => readField(name, kind, control, field, must));
  }
  return {
    read() {
      const spec = {};
      for (const read of readers) {
        const entry = read();
        if (entry) spec[entry[0]] = entry[1];
      }
      return spec;
    },
  };
}

function readField(name, kind, control, field, must) {
  const fail = (message) => {
    control.focus();
    throw new Error(`${human(name)}: ${message}`);
  };
  const text = kind === "boolean" ? "" : control.value.trim();
  let value;
  if (kind === "boolean") value = control.checked;
  else if (kind === "lines") {
    value = control.value.split("\n").map((s) => s.trim()).filter(Boolean);
    if (!value.length) {
      if (must) fail("give at least one path");
      return null;
    }
  } else if (text === "") {
    if (must) fail("required");
    return null; // the type's default (or null) applies
  } else if (kind === "integer" || kind === "number") {
    value = Number(text);
    if (!Number.isFinite(value) || (kind === "integer" && !Number.isInteger(value))) {
      fail(`expected ${kind === "integer" ? "a whole number" : "a number"}`);
    }
  } else if (kind === "json") {
    try {
      value = JSON.parse(text);
    } catch {
      fail("not valid JSON");
    }
  } else value = kind === "enum" ? field.enum.find((v) => String(v) === control.value) : text;
  if (!must && "default" in field && JSON.stringify(value) === JSON.stringify(field.default)) {
    return null; // unchanged: leave it to the type's default
  }
  return [name, value];
}
