// Drawing of the timeline's tracks on a 2D context (CSS pixels). Pure functions: they get a
// scale ({x(t), from, to, left, right}) and a box ({y, h}) and draw; no state, no DOM.
import { classColor, eventColor } from "./colors.js";
import { fmtDate, fmtTime } from "./dom.js";

export const LABEL_FONT = "12px system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif";
export const SMALL_FONT = "11px system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif";
const INK = "#1F2328";
const MUTED = "#6B7280";
const GRID = "#EEF0F3";

/** Analysis runs as a coloured band: [[start, end, class], ...]. */
export function drawClassBand(ctx, sc, box, runs) {
  ctx.fillStyle = "#F6F7F9";
  ctx.fillRect(sc.left, box.y, sc.right - sc.left, box.h);
  for (const [start, end, klass] of runs) {
    if (end <= sc.from || start >= sc.to) continue;
    const x0 = Math.max(sc.left, sc.x(start));
    const x1 = Math.min(sc.right, sc.x(end));
    ctx.fillStyle = classColor(klass);
    ctx.fillRect(x0, box.y, Math.max(1, x1 - x0), box.h);
  }
}

/** Horizontal guide lines and the y-axis label for a value track. */
export function drawFrame(ctx, sc, box, maxLabel) {
  ctx.strokeStyle = GRID;
  ctx.lineWidth = 1;
  ctx.beginPath();
  for (const f of [0, 0.5, 1]) {
    const y = Math.round(box.y + box.h * f) + 0.5;
    ctx.moveTo(sc.left, y);
    ctx.lineTo(sc.right, y);
  }
  ctx.stroke();
  if (maxLabel) {
    ctx.font = SMALL_FONT;
    ctx.fillStyle = MUTED;
    ctx.textAlign = "right";
    ctx.textBaseline = "top";
    ctx.fillText(maxLabel, sc.left - 6, box.y);
    ctx.textBaseline = "bottom";
    ctx.fillText("0", sc.left - 6, box.y + box.h);
    ctx.textAlign = "left";
  }
}

/**
 * A series [[t, v], ...] as a line (or a filled area with ``fill``), scaled to [0, max].
 * The line breaks where a value is missing or samples are further apart than ``gap`` s.
 */
export function drawSeries(ctx, sc, box, points, { color, max, gap, fill = false, dash = null, width = 1.5 }) {
  if (!points || !points.length || !(max > 0)) return;
  const y = (v) => box.y + box.h - Math.min(1, Math.max(0, v / max)) * box.h;
  const segments = [];
  let seg = [];
  let prevT = null;
  for (const [t, v] of points) {
    if (v === null || v === undefined || (prevT !== null && t - prevT > gap)) {
      if (seg.length) segments.push(seg);
      seg = [];
    }
    if (v !== null && v !== undefined) seg.push([sc.x(t), y(v)]);
    prevT = t;
  }
  if (seg.length) segments.push(seg);
  ctx.save();
  ctx.beginPath();
  ctx.rect(sc.left, box.y - 1, sc.right - sc.left, box.h + 2);
  ctx.clip();
  for (const s of segments) {
    if (fill) {
      ctx.beginPath();
      ctx.moveTo(s[0][0], box.y + box.h);
      for (const [px, py] of s) ctx.lineTo(px, py);
      ctx.lineTo(s[s.length - 1][0], box.y + box.h);
      ctx.closePath();
      ctx.globalAlpha = 0.18;
      ctx.fillStyle = color;
      ctx.fill();
      ctx.globalAlpha = 1;
    }
    ctx.beginPath();
    ctx.setLineDash(dash || []);
    ctx.strokeStyle = color;
    ctx.lineWidth = width;
    ctx.lineJoin = "round";
    if (s.length === 1) {
      ctx.moveTo(s[0][0] - 1, s[0][1]);
      ctx.lineTo(s[0][0] + 1, s[0][1]);
    } else {
      ctx.moveTo(s[0][0], s[0][1]);
      for (let k = 1; k < s.length; k++) ctx.lineTo(s[k][0], s[k][1]);
    }
    ctx.stroke();
  }
  ctx.restore();
}

/** A round upper bound for a track's scale: 1, 2, 2.5, 5 x 10^k. */
export function niceMax(values) {
  let max = 0;
  for (const v of values) if (v > max) max = v;
  if (!(max > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(max));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= max) return m * p;
  return 10 * p;
}

/** Findings as bars, one lane each where they overlap; returns [{event, x0, x1, y, h}]. */
export function drawEvents(ctx, sc, box, placed, selectedId) {
  const hits = [];
  for (const p of placed) {
    if (p.event.end < sc.from || p.event.start > sc.to) continue;
    const x0 = Math.max(sc.left, sc.x(p.event.start));
    const x1 = Math.min(sc.right, Math.max(x0 + 4, sc.x(p.event.end)));
    const y = box.y + 4 + p.lane * 12;
    ctx.fillStyle = eventColor(p.event.kind);
    ctx.fillRect(x0, y, x1 - x0, 8);
    if (p.event.id === selectedId) {
      ctx.strokeStyle = INK;
      ctx.lineWidth = 1.5;
      ctx.strokeRect(x0 - 1, y - 1, x1 - x0 + 2, 10);
    }
    hits.push({ event: p.event, x0, x1, y, h: 8 });
  }
  return hits;
}

/** Greedy lanes for overlapping events: [{event, lane}], and the number of lanes. */
export function placeEvents(events) {
  const sorted = [...events].sort((a, b) => a.start - b.start);
  const laneEnds = [];
  const placed = sorted.map((event) => {
    let lane = laneEnds.findIndex((end) => end <= event.start);
    if (lane < 0) {
      lane = laneEnds.length;
      laneEnds.push(0);
    }
    laneEnds[lane] = event.end;
    return { event, lane };
  });
  return { placed, lanes: Math.max(1, laneEnds.length) };
}

const TICK_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
  172800, 604800];

/** Tick times for the range: about one per ``spacing`` pixels, on round clock values. */
export function ticks(sc, spacing = 110) {
  const span = sc.to - sc.from;
  const want = Math.max(2, (sc.right - sc.left) / spacing);
  const step = TICK_STEPS.find((s) => span / s <= want) || TICK_STEPS[TICK_STEPS.length - 1];
  // Round to the displayed clock: local midnight is not a multiple of 86400 in Unix time.
  const offset = step >= 3600 ? -new Date(sc.from * 1000).getTimezoneOffset() * 60 : 0;
  const first = Math.ceil((sc.from + offset) / step) * step - offset;
  const out = [];
  for (let t = first; t <= sc.to; t += step) out.push(t);
  return { step, ticks: out };
}

/** Vertical grid lines over [top, bottom]. */
export function drawGrid(ctx, sc, top, bottom) {
  ctx.strokeStyle = GRID;
  ctx.lineWidth = 1;
  ctx.beginPath();
  for (const t of ticks(sc).ticks) {
    const x = Math.round(sc.x(t)) + 0.5;
    ctx.moveTo(x, top);
    ctx.lineTo(x, bottom);
  }
  ctx.stroke();
}

/** The time axis under the tracks. */
export function drawAxis(ctx, sc, y) {
  const { step, ticks: list } = ticks(sc);
  ctx.strokeStyle = "#C9CED6";
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(sc.left, y + 0.5);
  ctx.lineTo(sc.right, y + 0.5);
  ctx.stroke();
  ctx.font = SMALL_FONT;
  ctx.fillStyle = MUTED;
  ctx.textBaseline = "top";
  ctx.textAlign = "center";
  let lastDate = null;
  for (const t of list) {
    const x = sc.x(t);
    ctx.beginPath();
    ctx.moveTo(Math.round(x) + 0.5, y);
    ctx.lineTo(Math.round(x) + 0.5, y + 4);
    ctx.stroke();
    let text = fmtTime(t);
    if (step >= 60) text = text.slice(0, 5);
    const date = fmtDate(t);
    if (step >= 3600 && date !== lastDate) text = `${date.slice(5)} ${text}`;
    lastDate = date;
    // keep the first and last labels inside the canvas
    const half = ctx.measureText(text).width / 2;
    ctx.fillText(text, Math.max(half + 2, Math.min(sc.width - half - 2, x)), y + 6);
  }
  ctx.textAlign = "left";
}

/** A track's name in the gutter, with an optional second line. */
export function drawLabel(ctx, box, text, sub = null, x = 8) {
  ctx.font = LABEL_FONT;
  ctx.fillStyle = INK;
  ctx.textBaseline = "middle";
  ctx.textAlign = "left";
  const mid = box.y + box.h / 2;
  ctx.fillText(text, x, sub ? mid - 7 : mid, 96);
  if (sub) {
    ctx.font = SMALL_FONT;
    ctx.fillStyle = MUTED;
    ctx.fillText(sub, x, mid + 8, 96);
  }
}

