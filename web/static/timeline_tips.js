// Tooltip content of the timeline: the class and activity of a GPU, the engine's flow, or
// a finding, at the time under the pointer. Text only (el() with strings).
import { classColor, SIGNAL_COLORS } from "./colors.js";
import { classLabel, el, fmtDur, fmtLatency, fmtNum, fmtTime } from "./dom.js";

export const ACTIVITY = [["sm_util", "SM", null], ["tensor_util", "tensor", null], ["dram_bw_util", "DRAM", null],
  ["util_gpu", "NVML util", [4, 3]]];
// The engine's FLOPs and bytes over the GPU's peaks (0-1), from the analysis windows.
export const ROOF = [["mfu", "MFU (engine)"], ["mbu", "MBU (engine)"]];

/** Tooltip content for time ``t`` over ``track`` of timeline ``tl``. */
export function describeAt(tl, t, track, x, y) {
  if (!track) return [];
  const head = el("div", { class: "tt-title" }, fmtTime(t, true));
  if (track.kind === "events") {
    const hit = tl.eventAt(x, y);
    if (!hit) return [head];
    const ev = hit.event;
    return [el("div", { class: "tt-title" }, ev.kind.replace(/_/g, " ")),
      el("div", { class: "tt-muted" }, `${fmtTime(ev.start, true)} · ${fmtDur(ev.end - ev.start)}${ev.gpu !== null ? ` · GPU ${ev.gpu}` : ""}`),
      el("div", { class: "tt-text" }, ev.summary || ""), el("div", { class: "tt-muted" }, "click to open")];
  }
  if (track.gpu !== undefined) {
    const g = tl.gpuData(track.gpu);
    const run = g.runs.find(([a, b]) => t >= a && t < b);
    const rows = [row("class", run ? classLabel(run[2]) : "no analysis", run ? classColor(run[2]) : null,
      run ? `for ${fmtDur(run[1] - run[0])}` : null)];
    for (const [s, label] of ACTIVITY) {
      if (g.activity[s]) rows.push(row(label, pct(valueAt(g.activity[s], t, tl.data.gpu_step)), SIGNAL_COLORS[s]));
    }
    for (const [s, label] of ROOF) {
      if (g.roof && g.roof[s]) {
        const v = valueAt(g.roof[s], t, tl.data.roof_step);
        rows.push(row(label, pct(v === null ? null : v * 100), SIGNAL_COLORS[s]));
      }
    }
    return [el("div", { class: "tt-title" }, `GPU ${g.gpu} · ${fmtTime(t, true)}`), ...rows];
  }
  if (["engine", "tokens", "requests", "ttft"].includes(track.kind)) {
    const eng = tl.data.engine;
    const step = tl.data.engine_step;
    const rows = [];
    if (eng.generation_tokens_per_s) rows.push(row("tokens/s", fmtNum(valueAt(eng.generation_tokens_per_s, t, step)), SIGNAL_COLORS.generation_tokens_per_s));
    if (eng.requests_running) rows.push(row("running", fmtNum(valueAt(eng.requests_running, t, step)), SIGNAL_COLORS.requests_running));
    if (eng.requests_waiting) rows.push(row("waiting", fmtNum(valueAt(eng.requests_waiting, t, step)), SIGNAL_COLORS.requests_waiting));
    if (eng.ttft_seconds_p95) rows.push(row("TTFT p95", fmtLatency(valueAt(eng.ttft_seconds_p95, t, step)), SIGNAL_COLORS.ttft_seconds_p95));
    return [head, ...rows];
  }
  return [head];
}

function pct(v) {
  return v === null ? "–" : `${v.toFixed(1)}%`;
}

function row(label, value, color, note = null) {
  const chip = el("span", { class: "chip" });
  if (color) chip.style.background = color;
  return el("div", { class: "tt-row" }, chip, el("span", { class: "tt-label" }, label),
    el("span", { class: "tt-value" }, value), note ? el("span", { class: "tt-muted" }, note) : null);
}

/** The value of the bin holding ``t`` (points are bin starts ``step`` apart), or null. */
function valueAt(points, t, step) {
  let lo = 0;
  let hi = points.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (points[mid][0] <= t) {
      found = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  if (found < 0 || t - points[found][0] > step * 1.5) return null;
  return points[found][1];
}
