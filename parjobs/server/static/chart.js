// A small live throughput chart on a <canvas>: the last minute of a job's rate.

import { rate } from "./format.js";

/** Seconds of history shown. */
export const WINDOW = 60;

function niceCeil(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/**
 * Draw `samples` ({t: seconds, v: value}) of the last WINDOW seconds ending at `now` on
 * `canvas`, as `unit` ("bytes" or "items"). Colours come from the canvas's CSS variables.
 */
export function drawChart(canvas, samples, now, unit) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (!w || !h) return;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const css = getComputedStyle(canvas);
  const color = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const pad = { l: 4, r: 4, t: 18, b: 16 };
  const plotW = w - pad.l - pad.r;
  const plotH = h - pad.t - pad.b;
  const shown = samples.filter((s) => s.t >= now - WINDOW);
  const peak = niceCeil(Math.max(0, ...shown.map((s) => s.v)));
  const x = (t) => pad.l + ((t - (now - WINDOW)) / WINDOW) * plotW;
  const y = (v) => pad.t + plotH - (v / peak) * plotH;

  ctx.font = `11px ${css.fontFamily}`;
  ctx.lineWidth = 1;
  ctx.strokeStyle = color("--grid", "#ddd");
  ctx.fillStyle = color("--muted", "#666");
  for (const f of [0, 0.5, 1]) {
    const gy = Math.round(y(peak * f)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(pad.l, gy);
    ctx.lineTo(w - pad.r, gy);
    ctx.stroke();
  }
  ctx.textBaseline = "bottom";
  ctx.fillText(rate(peak, unit) || `0 ${unit}/s`, pad.l, pad.t - 3);
  ctx.textBaseline = "top";
  ctx.fillText(`−${WINDOW}s`, pad.l, h - pad.b + 3);
  ctx.textAlign = "right";
  ctx.fillText("now", w - pad.r, h - pad.b + 3);
  ctx.textAlign = "left";
  if (shown.length < 2) return;

  const accent = color("--accent", "#2f5bd3");
  ctx.beginPath();
  ctx.moveTo(x(shown[0].t), y(0));
  for (const s of shown) ctx.lineTo(x(s.t), y(s.v));
  ctx.lineTo(x(shown[shown.length - 1].t), y(0));
  ctx.closePath();
  ctx.globalAlpha = 0.15;
  ctx.fillStyle = accent;
  ctx.fill();
  ctx.globalAlpha = 1;
  ctx.beginPath();
  shown.forEach((s, i) => (i ? ctx.lineTo(x(s.t), y(s.v)) : ctx.moveTo(x(s.t), y(s.v))));
  ctx.strokeStyle = accent;
  ctx.lineWidth = 2;
  ctx.lineJoin = "round";
  ctx.stroke();
}
