// Shared pieces of the dashboard: element helper, notices, the confirmation dialog, and the
// job actions with their rules (which button applies to which status).

import { api } from "./api.js";
import { printable } from "./format.js";

export const ACTIVE = ["queued", "running", "pausing", "cancelling"];
export const RESTING = [
  "paused",
  "interrupted",
  "completed",
  "completed_with_errors",
  "failed",
  "cancelled",
  "timed_out",
  "skipped",
];
const CANCELLABLE = new Set([
  "queued",
  "running",
  "pausing",
  "paused",
  "interrupted",
  "failed",
  "timed_out",
  "skipped",
]);
const PRIORITY_EDITABLE = new Set(["queued", "paused", "interrupted"]);

export const can = {
  pause: (job) => job.status === "running" || job.status === "queued",
  resume: (job) => Boolean(job.can_resume) && !ACTIVE.includes(job.status),
  cancel: (job) => CANCELLABLE.has(job.status),
  prioritize: (job) => PRIORITY_EDITABLE.has(job.status),
  remove: (job) => !ACTIVE.includes(job.status),
};

/** document.createElement with properties and children. */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v == null) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("data-") || k.startsWith("aria-") || k === "role") node.setAttribute(k, v);
    else node[k] = v;
  }
  node.append(...children.filter((c) => c != null));
  return node;
}

/** A short notice in the corner; errors are announced at once (role=alert). */
export function notify(message, kind = "info") {
  const box = document.getElementById("toasts");
  const text = printable(message, true); // (an API error names paths)
  const toast = el("div", { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status" }, text);
  box.append(toast);
  setTimeout(() => toast.remove(), kind === "error" ? 8000 : 4000);
}

/** Ask before something that cannot be undone; resolves true when confirmed. */
export function confirmAction(text, okLabel) {
  const dialog = document.getElementById("confirm-dialog");
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-yes").textContent = okLabel;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    document.getElementById("confirm-no").focus();
  });
}

/** "copy 3f2a9c1b" */
export function jobName(job) {
  return `${job.type} ${job.id.slice(0, 8)}`;
}

/**
 * Pause, resume, cancel (after a confirmation), remove (after one) or set the priority of a
 * job through the API. Returns the job as the server answered, or null (refused or declined).
 */
export async function act(job, verb, value) {
  const name = jobName(job);
  try {
    if (verb === "cancel") {
      if (!(await confirmAction(`Cancel ${name}? It stops and cannot be resumed.`, "Cancel job"))) return null;
      return await api.action(job.id, "cancel");
    }
    if (verb === "remove") {
      if (!(await confirmAction(`Remove ${name} from the list? Its record is deleted.`, "Remove"))) return null;
      await api.remove(job.id);
      return null;
    }
    if (verb === "priority") return await api.priority(job.id, value);
    return await api.action(job.id, verb);
  } catch (err) {
    notify(`${name}: ${err.message}`, "error");
    return null;
  }
}
