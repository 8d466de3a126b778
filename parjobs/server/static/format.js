// Number, size, duration and path formatting for the dashboard (no dependencies).

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/** 1536 -> "1.5 KiB" (binary units, like ls -h). */
export function bytes(n) {
  if (n == null || !Number.isFinite(n)) return "–";
  let i = 0;
  while (Math.abs(n) >= 1024 && i < UNITS.length - 1) {
    n /= 1024;
    i += 1;
  }
  const digits = i === 0 || n >= 100 ? 0 : n >= 10 ? 1 : 2;
  return `${n.toFixed(digits)} ${UNITS[i]}`;
}

const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });

/** 12345 -> "12,345" in the reader's locale. */
export function count(n) {
  return n == null ? "–" : integer.format(n);
}

/** A rate per second, e.g. "1.2 MiB/s" or "340 items/s". */
export function rate(n, unit) {
  if (!n || n < 0.05) return "";
  if (unit === "bytes") return `${bytes(n)}/s`;
  return `${n >= 10 ? integer.format(n) : n.toFixed(1)} ${unit}/s`;
}

/** Seconds -> "2h 05m", "3m 20s", "12s", "0.4s". */
export function duration(s) {
  if (s == null || !Number.isFinite(s) || s < 0) return "–";
  if (s < 1) return `${s.toFixed(1)}s`;
  s = Math.round(s);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  if (h >= 24) return `${Math.floor(h / 24)}d ${h % 24}h`;
  if (h) return `${h}h ${String(m).padStart(2, "0")}m`;
  if (m) return `${m}m ${String(sec).padStart(2, "0")}s`;
  return `${sec}s`;
}

const clock = new Intl.DateTimeFormat(undefined, {
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
});

/** Epoch seconds -> a local date and time ("–" when unset). */
export function when(t) {
  return t == null ? "–" : clock.format(new Date(t * 1000));
}

/** Epoch seconds -> "just now", "5 min ago", "3 h ago", or the date. */
export function ago(t) {
  if (t == null) return "";
  const s = Date.now() / 1000 - t;
  if (s < 45) return "just now";
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return when(t);
}

// Control characters (C0, DEL, C1) and the bidirectional controls (U+061C, U+200E/F,
// U+202A-202E, U+2066-2069), as the CLI escapes them (parjobs.cli._format.printable): a
// browser orders text both ways, so a name "cv\u202egpj.exe" showed as "cvexe.jpg", and a
// newline in a name made two lines of a tooltip, a second path that was never one.
const CONTROLS = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
const NAMED = { "\t": "\\t", "\n": "\\n", "\r": "\\r" };

function escaped(c) {
  const code = c.charCodeAt(0);
  return NAMED[c] ?? (code < 0x80 ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`);
}

/**
 * A name or message as the dashboard shows it: each control character escaped
 * ("\u202e", "\x1b", "\n"), newlines kept when `keepNewlines` (an error of several
 * lines). Nodes are still built from text: this is about how the text reads, not markup.
 */
export function printable(text, keepNewlines = false) {
  const s = String(text);
  if (keepNewlines) return s.split("\n").map((line) => line.replace(CONTROLS, escaped)).join("\n");
  return s.replace(CONTROLS, escaped);
}

/** The last components of a path, so long paths stay readable in a narrow cell. */
export function shortPath(p, keep = 3) {
  const parts = String(p).split("/");
  if (String(p).length <= 40 || parts.length <= keep + 1) return String(p);
  return "…/" + parts.slice(-keep).join("/");
}

/** Where a job reads and writes, from its spec: [sources, destination or null]. */
export function endpoints(job) {
  const spec = job.spec || {};
  const list = (v) => (Array.isArray(v) ? v : v == null ? [] : [v]);
  const from = list(spec.sources ?? spec.paths ?? spec.source ?? spec.path ?? spec.src);
  let to = spec.destination ?? spec.out_dir ?? spec.output ?? spec.dest ?? null;
  if (job.type === "delete") to = spec.trash ? "trash" : "deleted";
  if (!from.length && to == null) {
    // A type of its own: its first few settings say what it is about.
    const shown = Object.entries(spec).slice(0, 3).map(([k, v]) => `${k}=${JSON.stringify(v)}`);
    return [shown.length ? [shown.join(" ")] : [], null];
  }
  return [from.map(String), to == null ? null : String(to)];
}

/** The status as words: "completed_with_errors" -> "completed with errors". */
export function statusText(s) {
  return String(s).replaceAll("_", " ");
}
