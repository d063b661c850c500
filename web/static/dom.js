// DOM and formatting helpers. Every string from the agent (frame names, file paths, summaries)
// is untrusted: it only ever reaches the page through textContent, never innerHTML.

/** Create an element; children are nodes or strings (strings become text nodes). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace all children of ``node``. */
export function setChildren(node, ...children) {
  node.replaceChildren();
  append(node, children);
}

export const $ = (id) => document.getElementById(id);

let utc = false;
export function setUtc(value) { utc = value; }
export function isUtc() { return utc; }

const pad = (n) => String(n).padStart(2, "0");

function parts(t) {
  const d = new Date(t * 1000);
  return utc
    ? { Y: d.getUTCFullYear(), M: d.getUTCMonth() + 1, D: d.getUTCDate(), h: d.getUTCHours(), m: d.getUTCMinutes(), s: d.getUTCSeconds() }
    : { Y: d.getFullYear(), M: d.getMonth() + 1, D: d.getDate(), h: d.getHours(), m: d.getMinutes(), s: d.getSeconds() };
}

/** "14:05:09", or "2026-11-24 14:05:09" with ``withDate``. */
export function fmtTime(t, withDate = false) {
  const p = parts(t);
  const time = `${pad(p.h)}:${pad(p.m)}:${pad(p.s)}`;
  return withDate ? `${p.Y}-${pad(p.M)}-${pad(p.D)} ${time}` : time;
}

export function fmtDate(t) {
  const p = parts(t);
  return `${p.Y}-${pad(p.M)}-${pad(p.D)}`;
}

/** Value for an <input type="datetime-local"> in the displayed time zone. */
export function toInputValue(t) {
  const p = parts(t);
  return `${p.Y}-${pad(p.M)}-${pad(p.D)}T${pad(p.h)}:${pad(p.m)}:${pad(p.s)}`;
}

/** Unix seconds from an <input type="datetime-local"> value in the displayed time zone. */
export function fromInputValue(value) {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2}))?/.exec(value || "");
  if (!m) return null;
  const [Y, M, D, h, mi, s] = m.slice(1).map((x) => Number(x || 0));
  const ms = utc ? Date.UTC(Y, M - 1, D, h, mi, s) : new Date(Y, M - 1, D, h, mi, s).getTime();
  return ms / 1000;
}

export function tzLabel() {
  if (utc) return "UTC";
  const off = -new Date().getTimezoneOffset();
  const sign = off >= 0 ? "+" : "-";
  return `UTC${sign}${pad(Math.floor(Math.abs(off) / 60))}:${pad(Math.abs(off) % 60)}`;
}

/** "850 ms", "12 s", "3 min 5 s", "2 h 10 min", "3 d 4 h". */
export function fmtDur(s) {
  if (!Number.isFinite(s)) return "–";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${+s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min${Math.round(s % 60) ? ` ${Math.round(s % 60)} s` : ""}`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h${m % 60 ? ` ${m % 60} min` : ""}`;
  return `${Math.floor(h / 24)} d${h % 24 ? ` ${h % 24} h` : ""}`;
}

export function fmtPct(fraction, digits = 1) {
  if (!Number.isFinite(fraction)) return "–";
  const v = fraction * 100;
  if (v !== 0 && Math.abs(v) < 0.1) return `${v < 0 ? "-" : ""}<0.1%`;
  return `${v.toFixed(digits)}%`;
}

export function fmtSignedPct(fraction) {
  if (!Number.isFinite(fraction)) return "–";
  const sign = fraction > 0 ? "+" : fraction < 0 ? "−" : "±";
  return `${sign}${fmtPct(Math.abs(fraction))}`;
}

/** Compact number: 1234 -> "1,234", 25000 -> "25k", 0.0049 -> "0.0049". */
export function fmtNum(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a >= 1e6) return `${+(v / 1e6).toFixed(1)}M`;
  if (a >= 1e4) return `${+(v / 1e3).toFixed(1)}k`;
  if (a >= 100) return Math.round(v).toLocaleString("en-US");
  if (a >= 1) return `${+v.toFixed(1)}`;
  if (a === 0) return "0";
  return `${+v.toPrecision(2)}`;
}

/** Seconds as a latency: "4.9 ms", "1.35 s". */
export function fmtLatency(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return "–";
  return s < 1 ? `${+(s * 1000).toPrecision(3)} ms` : `${+s.toPrecision(3)} s`;
}

export function classLabel(klass) {
  return String(klass || "unknown").replace(/_/g, " ");
}

const MAX_CANVAS_SIDE = 32_000;
const MAX_CANVAS_AREA = 2 ** 28;

/** A canvas sized to its CSS box at the device pixel ratio; returns the 2D context in CSS px. */
export function fitCanvas(canvas, cssWidth, cssHeight) {
  // Chromium draws nothing on a canvas over 32,767 px a side or 2^28 px in all (a flame graph
  // of 1,000-frame stacks is 18,000 CSS px tall): past that, fewer device pixels per CSS pixel.
  const scale = Math.min(window.devicePixelRatio || 1, MAX_CANVAS_SIDE / cssWidth, MAX_CANVAS_SIDE / cssHeight,
    Math.sqrt(MAX_CANVAS_AREA / (cssWidth * cssHeight)));
  const w = Math.max(1, Math.floor(cssWidth * scale));
  const h = Math.max(1, Math.floor(cssHeight * scale));
  if (canvas.width !== w) canvas.width = w;
  if (canvas.height !== h) canvas.height = h;
  canvas.style.width = `${cssWidth}px`;
  canvas.style.height = `${cssHeight}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(w / cssWidth, 0, 0, h / cssHeight, 0, 0);
  return ctx;
}
