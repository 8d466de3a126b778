// The job panel: spec, timings, attempts, a live throughput chart, per-item errors (paged),
// and the same actions as the row. Opened by the URL hash (#/job/ID), so it can be linked.

import { api } from "./api.js";
import { WINDOW, drawChart } from "./chart.js";
import * as fmt from "./format.js";
import { act, can, el, jobName, notify } from "./ui.js";

const ERRORS_PAGE = 50;

export class Detail {
  /**
   * @param {object} hooks getJob(id) -> job or undefined; samples(id) -> [{t, b, i}];
   *   adopt(job) stores a job fetched here so live events keep it current.
   */
  constructor(hooks) {
    this.hooks = hooks;
    this.root = document.getElementById("detail");
    this.body = document.getElementById("detail-body");
    this.heading = document.getElementById("detail-title");
    this.id = null;
    this.errorsOffset = 0;
    this.errorsTimer = 0;
    this.opener = null;
    document.getElementById("detail-close").addEventListener("click", () => this.leave());
    this.root.addEventListener("keydown", (e) => {
      if (e.key === "Escape") this.leave();
    });
  }

  get isOpen() {
    return this.id !== null;
  }

  leave() {
    history.pushState(null, "", location.pathname + location.search);
    this.close();
  }

  close() {
    if (this.id === null) return;
    this.id = null;
    this.root.hidden = true;
    document.body.classList.remove("with-detail");
    if (this.opener && this.opener.isConnected) this.opener.focus();
  }

  async open(id) {
    if (this.id === id) return;
    this.opener = document.activeElement;
    let job = this.hooks.getJob(id);
    if (!job) {
      try {
        job = await api.job(id);
      } catch (err) {
        notify(`job ${id}: ${err.message}`, "error");
        return;
      }
      this.hooks.adopt(job);
    }
    this.id = job.id;
    this.build(job);
    this.root.hidden = false;
    document.body.classList.add("with-detail");
    this.heading.focus();
    this.loadErrors(0);
  }

  build(job) {
    const v = (this.view = {});
    this.heading.replaceChildren(
      (v.badge = el("span", { class: "badge" })),
      " ",
      el("span", {}, job.type),
      " ",
      el("code", { class: "id" }, job.id),
    );
    v.actions = el("div", { class: "detail-actions" });
    for (const verb of ["pause", "resume", "cancel"]) {
      const b = el("button", { type: "button", class: verb === "cancel" ? "danger-text" : "" },
        verb[0].toUpperCase() + verb.slice(1));
      b.addEventListener("click", () => this.run(verb));
      v[verb] = b;
      v.actions.append(b);
    }
    v.prio = el("input", { type: "number", step: 1, id: "detail-priority", class: "prio-input" });
    v.prio.addEventListener("change", () => this.run("priority", Number(v.prio.value)));
    v.actions.append(el("label", { htmlFor: "detail-priority", class: "inline" }, "Priority"), v.prio);
    v.remove = el("button", { type: "button", class: "danger-text push" }, "Remove");
    v.remove.addEventListener("click", () => this.run("remove"));
    v.actions.append(v.remove);

    v.bar = el("div", { class: "bar big", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
      "aria-label": `Progress of ${jobName(job)}` }, el("div", { class: "fill" }));
    v.nums = el("p", { class: "nums" });
    v.message = el("p", { class: "message" });
    v.canvas = el("canvas", { class: "chart", role: "img", height: 140 });
    v.chartCaption = el("p", { class: "hint" });
    v.current = el("ul", { class: "inflight" });
    v.timings = el("dl", { class: "facts" });
    v.spec = el("dl", { class: "facts spec" });
    v.result = el("pre", { class: "result" });
    v.errorsCount = el("span", { class: "muted" });
    v.errorsTable = el("tbody");
    v.errorsPager = el("div", { class: "pager" });
    v.newer = el("button", { type: "button" }, "← Previous");
    v.older = el("button", { type: "button" }, "Next →");
    v.pageText = el("span", { class: "muted", "aria-live": "polite" });
    v.newer.addEventListener("click", () => this.loadErrors(Math.max(0, this.errorsOffset - ERRORS_PAGE)));
    v.older.addEventListener("click", () => this.loadErrors(this.errorsOffset + ERRORS_PAGE));
    v.errorsPager.append(v.newer, v.pageText, v.older);

    this.body.replaceChildren(
      v.actions,
      el("section", { class: "block" }, v.bar, v.nums, v.message),
      el("section", { class: "block" }, el("h3", {}, "Throughput"), v.canvas, v.chartCaption),
      (v.currentBlock = el("section", { class: "block" }, el("h3", {}, "In flight"), v.current)),
      el("section", { class: "block" }, el("h3", {}, "Timings"), v.timings),
      el("section", { class: "block" }, el("h3", {}, "Spec"), v.spec),
      (v.resultBlock = el("section", { class: "block" }, el("h3", {}, "Result"), v.result)),
      el(
        "section",
        { class: "block" },
        el("h3", {}, "Errors ", v.errorsCount),
        el(
          "table",
          { class: "errors-table" },
          el("thead", {}, el("tr", {},
            el("th", { scope: "col" }, "Item"), el("th", { scope: "col" }, "Error"))),
          v.errorsTable,
        ),
        v.errorsPager,
      ),
    );
    fillFacts(
      v.spec,
      Object.entries(job.spec || {}).map(([k, val]) => [
        k,
        Array.isArray(val)
          ? val.map((item) => fmt.printable(item)).join("\n")
          : fmt.printable(typeof val === "object" && val !== null ? JSON.stringify(val) : String(val)),
      ]),
    );
    this.update(job);
  }

  async run(verb, value) {
    const job = this.hooks.getJob(this.id);
    if (!job) return;
    const answer = await act(job, verb, value);
    if (answer) this.hooks.adopt(answer);
    if (verb === "remove") this.leave();
  }

  /** Show `job` (called once per animation frame at most, when it changed). */
  update(job) {
    if (!this.view || job.id !== this.id) return;
    const v = this.view;
    const p = job.progress || {};
    v.badge.textContent = fmt.statusText(job.status);
    v.badge.className = `badge s-${job.status}`;
    v.pause.hidden = !can.pause(job);
    v.resume.hidden = !can.resume(job);
    v.cancel.hidden = !can.cancel(job);
    v.remove.hidden = !can.remove(job);
    if (document.activeElement !== v.prio) v.prio.value = String(job.priority);
    v.prio.disabled = !can.prioritize(job);
    v.prio.title = v.prio.disabled ? "only a queued or paused job's priority can change" : "";

    const frac = p.fraction ?? (job.status === "completed" ? 1 : null);
    v.bar.style.setProperty("--p", frac ?? 0);
    v.bar.classList.toggle("indeterminate", frac == null && job.status === "running");
    if (frac == null) v.bar.removeAttribute("aria-valuenow");
    else v.bar.setAttribute("aria-valuenow", (frac * 100).toFixed(1));
    v.nums.textContent = progressLine(p, frac);
    const active = ["queued", "running", "pausing", "cancelling"].includes(job.status);
    v.message.textContent = fmt.printable(job.error || (active && p.message) || "", true);
    this.root.dataset.status = job.status;
    v.message.classList.toggle("error-text", Boolean(job.error));

    const running = job.status === "running" || job.status === "pausing";
    v.currentBlock.hidden = !running || !(p.current || []).length;
    v.current.replaceChildren(
      ...(p.current || []).map((path) => fmt.printable(path)).map((path) => el("li", { title: path }, path)),
    );

    fillFacts(v.timings, [
      ["Created", `${fmt.when(job.created)} (${fmt.ago(job.created)})`],
      ["Started", fmt.when(job.started)],
      ["Finished", fmt.when(job.finished)],
      ["Waited in queue", fmt.duration(job.queue_time)],
      ["Ran for", fmt.duration(running ? Math.max(job.run_time || 0, p.elapsed || 0) : job.run_time)],
      ["Attempts", String(job.attempts)],
      // While it runs, the live snapshot is newer than the figures of the last checkpoint.
      // Those count skipped items, and their bytes, as done too (a resume starts from them).
      ["Items", `${fmt.count(running ? p.items_done || 0 : job.done_items - job.skipped_items)} done, ` +
        `${fmt.count(running ? p.items_skipped || 0 : job.skipped_items)} skipped, ` +
        `${fmt.count(p.items_failed || 0)} failed`],
      ["Bytes", fmt.bytes(running ? p.bytes_done || 0
        : job.done_bytes - Math.min(p.bytes_skipped || 0, job.done_bytes))],
      ["Queue", job.queue],
      ["Owner", job.owner || "–"],
      ["After", job.after.length ? job.after.map((a) => a.slice(0, 12)).join(", ") : "–"],
      ["Type version", String(job.version)],
    ]);
    v.resultBlock.hidden = job.result == null;
    v.result.textContent = job.result == null ? "" : fmt.printable(JSON.stringify(job.result, null, 2), true);
    v.errorsCount.textContent = `(${fmt.count(p.items_failed || 0)})`;
    this.drawChart(job);
  }

  drawChart(job) {
    const v = this.view;
    if (!v || job.id !== this.id) return;
    const raw = this.hooks.samples(job.id);
    const useBytes = raw.some((s) => s.b > 0);
    const unit = useBytes ? "bytes" : "items";
    const samples = raw.map((s) => ({ t: s.t, v: useBytes ? s.b : s.i }));
    const now = performance.now() / 1000;
    drawChart(v.canvas, samples, now, unit);
    const last = samples.length ? samples[samples.length - 1].v : 0;
    const peak = Math.max(0, ...samples.filter((s) => s.t >= now - WINDOW).map((s) => s.v));
    const text = samples.length
      ? `now ${fmt.rate(last, unit) || "idle"}, peak ${fmt.rate(peak, unit) || "–"} in the last minute`
      : "no live samples yet: the chart fills while the job runs";
    v.canvas.setAttribute("aria-label", `Throughput chart: ${text}`);
    v.chartCaption.textContent = text;
  }

  /** A failed item was reported live: refresh the page of errors soon (batched). */
  onItemError(jobId) {
    if (jobId !== this.id || this.errorsTimer) return;
    this.errorsTimer = setTimeout(() => {
      this.errorsTimer = 0;
      this.loadErrors(this.errorsOffset);
    }, 500);
  }

  async loadErrors(offset) {
    const id = this.id;
    if (!id) return;
    let page;
    try {
      page = await api.errors(id, { limit: ERRORS_PAGE, offset });
    } catch (err) {
      notify(`errors of ${id.slice(0, 8)}: ${err.message}`, "error");
      return;
    }
    if (id !== this.id) return;
    const v = this.view;
    this.errorsOffset = offset;
    v.errorsCount.textContent = `(${fmt.count(page.total)})`;
    v.errorsTable.replaceChildren(
      ...page.errors.map((e) =>
        el("tr", {},
          el("td", { class: "path", title: fmt.printable(e.label || "") }, e.label ? fmt.printable(e.label) : `#${e.index}`),
          el("td", {}, el("strong", {}, fmt.printable(e.error)), " ", fmt.printable(e.message || "", true))),
      ),
    );
    if (!page.errors.length) {
      v.errorsTable.append(el("tr", {}, el("td", { colSpan: 2, class: "muted" }, "No failed items.")));
    }
    const end = offset + page.errors.length;
    v.pageText.textContent = page.total ? `${offset + 1}–${end} of ${fmt.count(page.total)}` : "";
    v.newer.disabled = offset === 0;
    v.older.disabled = page.next_offset == null;
    v.errorsPager.hidden = page.total <= ERRORS_PAGE;
  }
}

/** "45.2% · 1,204 / 5,000 items · 1.2 GiB / 3.0 GiB" */
export function progressLine(p, frac) {
  const parts = [];
  if (frac != null) parts.push(`${(Math.floor(frac * 1000) / 10).toFixed(1)}%`);
  const finished = (p.items_done || 0) + (p.items_skipped || 0) + (p.items_failed || 0);
  const total = p.items_total;
  if (total != null || finished) {
    const more = p.totals_final === false && total != null ? "+" : "";
    parts.push(`${fmt.count(finished)}${total != null ? ` / ${fmt.count(total)}${more}` : ""} items`);
  }
  const done = (p.bytes_done || 0) + (p.bytes_skipped || 0);
  if (p.bytes_total || done) {
    parts.push(`${fmt.bytes(done)}${p.bytes_total ? ` / ${fmt.bytes(p.bytes_total)}` : ""}`);
  }
  return parts.join(" · ");
}

function fillFacts(dl, pairs) {
  dl.replaceChildren(...pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}
