// The parjobs dashboard: the job list, live over Server-Sent Events (GET /api/events).
//
// Rendering is incremental: every job has one table row, created once; an event only marks
// its job dirty, and once per animation frame the dirty rows are redrawn, each cell written
// only when its text changed. The list is read from the API a page at a time.

import { api } from "./api.js";
import { Detail, progressLine } from "./detail.js";
import * as fmt from "./format.js";
import { buildSpecFields } from "./form.js";
import { ACTIVE, RESTING, act, can, confirmAction, el, jobName, notify } from "./ui.js";

const PAGE = 100;
const SAMPLES = 600; // per job: a minute of progress events at 10/s
const VIEWS = {
  all: [
    { title: "Active", statuses: ACTIVE },
    { title: "Paused, finished and failed", statuses: RESTING },
  ],
  active: [{ title: "Active", statuses: ACTIVE }],
  paused: [{ title: "Paused", statuses: ["paused", "interrupted"] }],
  done: [{ title: "Completed", statuses: ["completed", "completed_with_errors"] }],
  failed: [{ title: "Failed and cancelled", statuses: ["failed", "cancelled", "timed_out", "skipped"] }],
};
const TYPE_ORDER = ["copy", "move", "hash", "duplicates", "thumbnails", "delete"];

const table = document.getElementById("jobs");
const template = document.getElementById("row-template");

const state = {
  view: "all",
  type: "",
  jobs: new Map(), // id -> job (the API's shape; progress replaced by live snapshots)
  rows: new Map(), // id -> Row
  sections: [],
  samples: new Map(), // id -> [{t, b, i}]: rates for the throughput chart
  dirty: new Set(),
  frame: 0,
  generation: 0, // bumped by every reload: answers to an older one are dropped
  source: null,
  loading: false,
};

// -- sections: "Active" first, then the rest, each its own <tbody> ----------------------

class Section {
  constructor(spec) {
    this.statuses = new Set(spec.statuses);
    this.nextOffset = null;
    this.oldest = Infinity; // created of the oldest job read through pages
    this.loading = false;
    this.body = el("tbody", { class: "section" });
    this.count = el("span", { class: "count" });
    this.head = el("tr", { class: "section-head" },
      el("th", { colSpan: 8, scope: "colgroup" }, spec.title, " ", this.count));
    this.moreButton = el("button", { type: "button", class: "more" }, "Load more");
    this.moreButton.addEventListener("click", () => loadMore(this));
    this.moreRow = el("tr", { class: "more-row", hidden: true },
      el("td", { colSpan: 8 }, this.moreButton));
    this.body.append(this.head, this.moreRow);
    this.rows = 0;
  }

  accepts(job) {
    return this.statuses.has(job.status) && (!state.type || job.type === state.type);
  }

  /** Whether `job` belongs on screen: not older than the pages read so far. */
  shows(job) {
    return this.nextOffset == null || job.created >= this.oldest;
  }

  query(offset) {
    return {
      status: [...this.statuses].join(","),
      type: state.type,
      order: "-created",
      limit: PAGE,
      offset,
    };
  }

  insert(row, job) {
    let before = this.moreRow;
    for (let tr = this.head.nextElementSibling; tr && tr !== this.moreRow; tr = tr.nextElementSibling) {
      const other = state.jobs.get(tr.dataset.id);
      if (tr !== row.tr && other && other.created < job.created) {
        before = tr;
        break;
      }
    }
    if (row.tr.nextElementSibling !== before || row.section !== this) this.body.insertBefore(row.tr, before);
  }

  refreshHead() {
    this.rows = this.body.rows.length - 2;
    this.count.textContent = this.nextOffset == null ? `(${this.rows})` : `(${this.rows} shown)`;
    this.moreRow.hidden = this.nextOffset == null;
  }
}

// -- rows ---------------------------------------------------------------------------------

function makeRow(job) {
  const tr = template.content.firstElementChild.cloneNode(true);
  const q = (s) => tr.querySelector(s);
  tr.dataset.id = job.id;
  const row = {
    tr,
    section: null,
    cache: {},
    badge: q(".badge"),
    paths: q(".paths"),
    current: q(".current"),
    bar: q(".bar"),
    nums: q(".nums"),
    speed: q(".speed"),
    eta: q(".eta"),
    errors: q(".errors"),
    prio: q(".prio-input"),
    pause: q('[data-act="pause"]'),
    resume: q('[data-act="resume"]'),
    cancel: q('[data-act="cancel"]'),
  };
  const name = jobName(job);
  const title = q(".title");
  title.href = `#/job/${job.id}`;
  q(".type").textContent = job.type;
  q(".id").textContent = job.id.slice(0, 8);
  row.bar.setAttribute("aria-label", `Progress of ${name}`);
  row.prio.setAttribute("aria-label", `Priority of ${name}`);
  for (const verb of ["pause", "resume", "cancel"]) {
    row[verb].setAttribute("aria-label", `${verb[0].toUpperCase()}${verb.slice(1)} ${name}`);
  }
  return row;
}

function set(row, key, value, apply) {
  if (row.cache[key] !== value) {
    row.cache[key] = value;
    apply(value);
  }
}

function basename(path) {
  const parts = String(path).split("/").filter(Boolean);
  return parts.length ? parts[parts.length - 1] : String(path);
}

function render(row, job) {
  const p = job.progress || {};
  const running = job.status === "running" || job.status === "pausing" || job.status === "cancelling";
  set(row, "status", job.status, (s) => {
    row.badge.textContent = fmt.statusText(s);
    row.badge.className = `badge s-${s}`;
    row.tr.dataset.status = s;
  });
  const [from, to] = fmt.endpoints(job).map((v) => (Array.isArray(v) ? v.map(fmt.printable) : v && fmt.printable(v)));
  set(row, "paths", `${from.join("\n")}\u0000${to}`, () => {
    let text = from.length ? fmt.shortPath(from[0]) : "";
    if (from.length > 1) text += ` +${from.length - 1} more`;
    if (to != null) text += ` → ${fmt.shortPath(to)}`;
    row.paths.textContent = text;
    row.paths.title = [...from, ...(to != null ? [`→ ${to}`] : [])].join("\n");
  });
  let current = "";
  let isError = false;
  if (running && (p.current || []).length) current = `▸ ${p.current.map((c) => fmt.printable(basename(c))).join(", ")}`;
  else if (job.error) [current, isError] = [fmt.printable(job.error, true), true];
  else if (running || job.status === "queued") current = fmt.printable(p.message || "", true);
  else if (!job.started) current = job.status === "paused" ? "stored paused: resume starts it" : "never started";
  else if (job.status === "paused" || job.status === "interrupted") {
    current = `${fmt.statusText(job.status)} ${fmt.ago(job.updated)} · ran ${fmt.duration(job.run_time)}`;
  } else if (job.finished) current = `ended ${fmt.ago(job.finished)} · ran ${fmt.duration(job.run_time)}`;
  set(row, "current", current, (text) => {
    row.current.textContent = text;
    row.current.title = running ? (p.current || []).map((c) => fmt.printable(c)).join("\n") : text;
  });
  set(row, "currentError", isError, (b) => row.current.classList.toggle("error-text", b));

  const frac = p.fraction ?? (job.status === "completed" ? 1 : null);
  set(row, "frac", frac, (f) => {
    row.bar.style.setProperty("--p", f ?? 0);
    if (f == null) row.bar.removeAttribute("aria-valuenow");
    else row.bar.setAttribute("aria-valuenow", (f * 100).toFixed(1));
  });
  set(row, "indeterminate", frac == null && running, (b) => row.bar.classList.toggle("indeterminate", b));
  set(row, "nums", progressLine(p, frac), (text) => (row.nums.textContent = text));
  const speed = running
    ? [fmt.rate(p.rate_bytes, "bytes"), fmt.rate(p.rate_items, "items")].filter(Boolean).join("\n")
    : "";
  set(row, "speed", speed, (text) => (row.speed.textContent = text));
  const eta = running ? etaText(p) : "";
  set(row, "eta", eta, (text) => (row.eta.textContent = text));
  const failed = p.items_failed || 0;
  set(row, "errors", failed, (n) => {
    row.errors.textContent = fmt.count(n);
    row.errors.classList.toggle("has-errors", n > 0);
  });
  if (document.activeElement !== row.prio) {
    set(row, "prio", job.priority, (n) => (row.prio.value = String(n)));
  }
  set(row, "prioEditable", can.prioritize(job), (b) => {
    row.prio.disabled = !b;
    row.prio.title = b ? "higher starts first" : "only a queued or paused job's priority can change";
  });
  set(row, "can", `${can.pause(job)}${can.resume(job)}${can.cancel(job)}`, () => {
    row.pause.hidden = !can.pause(job);
    row.resume.hidden = !can.resume(job);
    row.cancel.hidden = !can.cancel(job);
  });
}

/** The job's ETA; while its totals still grow, a lower bound from what is known so far. */
function etaText(p) {
  if (p.eta != null) return fmt.duration(p.eta);
  const byBytes = p.bytes_total && p.rate_bytes > 0;
  const left = byBytes
    ? (p.bytes_total - (p.bytes_done || 0) - (p.bytes_skipped || 0)) / p.rate_bytes
    : p.items_total && p.rate_items > 0
      ? (p.items_total - (p.items_done || 0) - (p.items_skipped || 0) - (p.items_failed || 0)) / p.rate_items
      : null;
  if (left == null || left < 0) return p.totals_final ? "–" : "counting";
  return p.totals_final ? fmt.duration(left) : `≥ ${fmt.duration(left)}`;
}

// -- the store of jobs and the batched redraw ---------------------------------------------

function markDirty(id) {
  state.dirty.add(id);
  if (!state.frame) state.frame = requestAnimationFrame(flush);
}

function upsert(job) {
  const old = state.jobs.get(job.id);
  if (old && old.updated > job.updated) return; // an older copy (a page read before an event)
  if (old && old.status === job.status && old.progress && job.progress &&
      (old.progress.elapsed || 0) > (job.progress.elapsed || 0)) {
    job.progress = old.progress; // the live snapshot is newer than the saved one
  }
  state.jobs.set(job.id, job);
  markDirty(job.id);
}

function removeJob(id) {
  state.jobs.delete(id);
  state.samples.delete(id);
  markDirty(id);
}

function place(id) {
  const job = state.jobs.get(id);
  let row = state.rows.get(id);
  const section = job && state.sections.find((s) => s.accepts(job));
  if (!section || !section.shows(job)) {
    if (row) {
      row.tr.remove();
      state.rows.delete(id);
    }
    return;
  }
  if (!row) {
    row = makeRow(job);
    state.rows.set(id, row);
  }
  if (row.section !== section) {
    section.insert(row, job);
    row.section = section;
  }
  render(row, job);
}

function flush() {
  state.frame = 0;
  const dirty = [...state.dirty];
  state.dirty.clear();
  for (const id of dirty) place(id);
  for (const s of state.sections) s.refreshHead();
  document.getElementById("empty").hidden = state.rows.size > 0 || state.loading;
  summarize();
  if (detail.isOpen && dirty.includes(detail.id)) {
    const job = state.jobs.get(detail.id);
    if (job) detail.update(job);
  }
}

function summarize() {
  const counts = {};
  let bytesPerSecond = 0;
  for (const job of state.jobs.values()) {
    counts[job.status] = (counts[job.status] || 0) + 1;
    if (job.status === "running") bytesPerSecond += (job.progress && job.progress.rate_bytes) || 0;
  }
  const parts = [];
  for (const s of ["running", "queued", "paused", "failed"]) {
    if (counts[s]) parts.push(`${counts[s]} ${s}`);
  }
  if (bytesPerSecond >= 1) parts.push(fmt.rate(bytesPerSecond, "bytes"));
  document.getElementById("summary").textContent = parts.join(" · ");
}

function sample(id, p) {
  let list = state.samples.get(id);
  if (!list) state.samples.set(id, (list = []));
  list.push({ t: performance.now() / 1000, b: p.rate_bytes || 0, i: p.rate_items || 0 });
  if (list.length > SAMPLES) list.splice(0, list.length - SAMPLES);
}

// -- reading the list ---------------------------------------------------------------------

function absorb(section, page) {
  for (const job of page.jobs) {
    section.oldest = Math.min(section.oldest, job.created);
    upsert(job);
  }
  section.nextOffset = page.next_offset;
}

/** Read the first page of every section again; resolves to the event id to follow from. */
async function reload() {
  const generation = ++state.generation;
  state.loading = true;
  for (const row of state.rows.values()) row.tr.remove();
  state.rows.clear();
  state.jobs.clear();
  for (const s of state.sections) s.body.remove();
  state.sections = VIEWS[state.view].map((spec) => new Section(spec));
  table.append(...state.sections.map((s) => s.body));
  let pages;
  try {
    pages = await Promise.all(state.sections.map((s) => api.jobs(s.query(0))));
  } catch (err) {
    notify(`cannot read the jobs: ${err.message}`, "error");
    return null;
  } finally {
    if (generation === state.generation) state.loading = false;
  }
  if (generation !== state.generation) return null;
  state.sections.forEach((s, i) => absorb(s, pages[i]));
  markDirty("");
  return Math.min(...pages.map((p) => p.event_id));
}

async function loadMore(section) {
  if (section.loading || section.nextOffset == null) return;
  section.loading = true;
  section.moreButton.disabled = true;
  const generation = state.generation;
  try {
    const page = await api.jobs(section.query(section.nextOffset));
    if (generation === state.generation) absorb(section, page);
  } catch (err) {
    notify(`cannot read more jobs: ${err.message}`, "error");
  } finally {
    section.loading = false;
    section.moreButton.disabled = false;
  }
  // Rows already loaded that the new page makes visible (older than the last page).
  for (const [id, job] of state.jobs) if (!state.rows.has(id) && section.accepts(job)) markDirty(id);
}

// -- live events --------------------------------------------------------------------------

function setLive(stateName, text) {
  const live = document.getElementById("live");
  live.dataset.state = stateName;
  live.textContent = text;
}

function connect(eventId) {
  if (state.source) state.source.close();
  const source = new EventSource(`/api/events?last_event_id=${eventId}`);
  state.source = source;
  source.addEventListener("open", () => setLive("live", "live"));
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      setLive("offline", "offline");
      setTimeout(() => start(), 5000); // e.g. the server restarted: read everything again
    } else setLive("reconnecting", "reconnecting…");
  });
  source.addEventListener("status", (e) => upsert(JSON.parse(e.data)));
  source.addEventListener("progress", (e) => {
    const data = JSON.parse(e.data);
    const job = state.jobs.get(data.job_id);
    sample(data.job_id, data);
    if (!job) return;
    job.progress = data;
    markDirty(job.id);
  });
  source.addEventListener("item-error", (e) => detail.onItemError(JSON.parse(e.data).job_id));
  source.addEventListener("deleted", (e) => removeJob(JSON.parse(e.data).job_id));
  // The server could not keep up with this page, or forgot what it missed: read it all again.
  source.addEventListener("reset", () => reload());
  source.addEventListener("dropped", () => reload());
}

async function start() {
  const eventId = await reload();
  if (eventId != null) connect(eventId);
}

// -- the job list's controls --------------------------------------------------------------

table.addEventListener("click", async (e) => {
  const button = e.target.closest("button[data-act]");
  if (!button) return;
  const job = state.jobs.get(button.closest("tr").dataset.id);
  if (!job) return;
  button.disabled = true;
  try {
    const answer = await act(job, button.dataset.act);
    if (answer) upsert(answer);
  } finally {
    button.disabled = false;
  }
});

table.addEventListener("change", async (e) => {
  if (!e.target.classList.contains("prio-input")) return;
  const job = state.jobs.get(e.target.closest("tr").dataset.id);
  const value = Number(e.target.value);
  if (!job || !Number.isInteger(value)) return;
  const answer = await act(job, "priority", value);
  if (answer) upsert(answer);
  else markDirty(job.id);
});

for (const button of document.querySelectorAll("[data-view]")) {
  button.addEventListener("click", () => {
    for (const b of document.querySelectorAll("[data-view]")) b.setAttribute("aria-pressed", String(b === button));
    state.view = button.dataset.view;
    reload();
  });
}

document.getElementById("type-filter").addEventListener("change", (e) => {
  state.type = e.target.value;
  reload();
});

// Relative times ("ended 5 min ago") age: redraw the resting rows now and then.
setInterval(() => {
  for (const [id, job] of state.jobs) if (!ACTIVE.includes(job.status) && state.rows.has(id)) markDirty(id);
}, 30000);

// -- the job panel ------------------------------------------------------------------------

const detail = new Detail({
  getJob: (id) => state.jobs.get(id),
  samples: (id) => state.samples.get(id) || [],
  adopt: (job) => upsert(job),
});

function route() {
  const match = location.hash.match(/^#\/job\/([\w-]+)$/);
  if (match) detail.open(match[1]);
  else detail.close();
}
window.addEventListener("hashchange", route);
window.addEventListener("popstate", route);

// -- the "new job" form, built from the registered types' JSON Schemas --------------------

async function setupForm() {
  let types;
  try {
    types = (await api.types()).types;
  } catch (err) {
    notify(`cannot read the job types: ${err.message}`, "error");
    return;
  }
  const rank = (t) => (TYPE_ORDER.includes(t.name) ? TYPE_ORDER.indexOf(t.name) : TYPE_ORDER.length);
  types.sort((a, b) => rank(a) - rank(b) || a.name.localeCompare(b.name));
  const byName = new Map(types.map((t) => [t.name, t]));
  const dialog = document.getElementById("new-dialog");
  const form = document.getElementById("new-form");
  const select = document.getElementById("new-type");
  const doc = document.getElementById("new-type-doc");
  const fields = document.getElementById("spec-fields");
  const error = document.getElementById("new-error");
  const filter = document.getElementById("type-filter");
  for (const t of types) {
    select.append(el("option", { value: t.name }, t.name));
    filter.append(el("option", { value: t.name }, t.name));
  }
  let reader = null;
  const choose = () => {
    const t = byName.get(select.value);
    doc.textContent = (t.schema.description || "").replaceAll("``", "");
    const legend = fields.querySelector("legend");
    reader = buildSpecFields(fields, t.schema, t.name);
    fields.prepend(legend);
    error.hidden = true;
  };
  select.addEventListener("change", choose);
  choose();
  const open = () => {
    error.hidden = true;
    dialog.showModal();
    select.focus();
  };
  document.getElementById("new-job").addEventListener("click", open);
  document.querySelector("[data-open-new]").addEventListener("click", open);
  document.getElementById("new-cancel").addEventListener("click", () => dialog.close());
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.hidden = true;
    const body = { type: select.value };
    try {
      body.spec = reader.read();
    } catch (err) {
      error.textContent = fmt.printable(err.message, true);
      error.hidden = false;
      return;
    }
    const priority = document.getElementById("new-priority").value.trim();
    if (priority) body.priority = Number(priority);
    if (document.getElementById("new-paused").checked) body.start = false;
    if (body.type === "delete") {
      const what = (body.spec.paths || []).map((p) => fmt.printable(p)).join(", ");
      if (!(await confirmAction(`Delete ${what}${body.spec.trash ? " (to the trash)" : " permanently"}?`, "Delete"))) return;
    }
    const submit = document.getElementById("new-submit");
    submit.disabled = true;
    try {
      const job = await api.submit(body);
      upsert(job);
      dialog.close();
      notify(`Started ${jobName(job)}`);
    } catch (err) {
      error.textContent = fmt.printable(err.message, true);
      error.hidden = false;
    } finally {
      submit.disabled = false;
    }
  });
}

setupForm();
start().then(route);
