// The answer to "is this GPU doing useful work, and if not since when": one line per GPU with
// its latest class and how long it has held, and the time per class in the range.
import { CLASS_ORDER, classColor } from "./colors.js";
import { classLabel, el, fmtDur, fmtTime, setChildren } from "./dom.js";

/** Seconds per class of ``runs`` clipped to [from, to]. */
export function classSeconds(runs, from, to) {
  const out = {};
  for (const [a, b, klass] of runs) {
    const s = Math.min(b, to) - Math.max(a, from);
    if (s > 0) out[klass] = (out[klass] || 0) + s;
  }
  return out;
}

/** The last run of a GPU in the range and the stretch of that class it ends (merged over gaps < 1 s). */
function latest(runs, to) {
  const inRange = runs.filter(([a]) => a < to);
  if (!inRange.length) return null;
  const last = inRange[inRange.length - 1];
  let since = last[0];
  for (let k = inRange.length - 2; k >= 0; k--) {
    const [a, b, klass] = inRange[k];
    if (klass !== last[2] || since - b > 1) break;
    since = a;
  }
  return { klass: last[2], since, until: Math.min(last[1], to) };
}

function chip(klass) {
  const c = el("span", { class: "chip" });
  c.style.background = classColor(klass);
  return c;
}

/** Fill ``statusNode`` (per-GPU latest class) and ``legendNode`` (seconds per class). */
export function renderSummary(statusNode, legendNode, data, from, to) {
  const cards = [];
  const totals = {};
  for (const g of data.gpus) {
    // the server's exact seconds per class when they cover this range (runs shorter than a
    // point come pooled, so summing runs is only as exact as one point)
    const exact = g.class_seconds && data.from === from && data.to === to;
    const secs = exact ? g.class_seconds : classSeconds(g.runs, from, to);
    for (const [k, s] of Object.entries(secs)) totals[k] = (totals[k] || 0) + s;
    const last = latest(g.runs, to);
    cards.push(el("div", { class: `gpu-card${last ? ` cls-${last.klass}` : ""}`, dataset: { gpu: String(g.gpu), class: last ? last.klass : "" } },
      el("span", { class: "gpu-card-name" }, `GPU ${g.gpu}`),
      last ? [chip(last.klass), el("strong", {}, classLabel(last.klass)),
        el("span", { class: "muted" }, ` for ${fmtDur(last.until - last.since)} · since ${fmtTime(last.since)}`)]
        : el("span", { class: "muted" }, "no analysis in this range")));
  }
  setChildren(statusNode, ...cards);
  const present = CLASS_ORDER.filter((k) => totals[k] > 0);
  for (const k of Object.keys(totals)) if (!present.includes(k)) present.push(k);
  setChildren(legendNode, ...present.map((k) => el("span", { class: "legend-item", dataset: { class: k } },
    chip(k), el("span", {}, classLabel(k)), el("span", { class: "muted" }, fmtDur(totals[k])))));
}
