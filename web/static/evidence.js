// A finding's evidence in words with units. EVIDENCE is the one map from the evidence keys the
// analysis writes to a label and a formatter; a key it does not know (the analysis adds keys
// as it grows) is still shown, its label made from the key and its unit guessed from the
// suffix (_s seconds, _pct percent, _share a fraction, _bytes, _per_s a rate).
import { classLabel, fmtDur, fmtNum, fmtTime } from "./dom.js";

const pct = (v) => (Number.isFinite(v) ? `${+v.toFixed(v < 10 ? 1 : 0)}%` : "–");
const share = (v) => (Number.isFinite(v) ? pct(v * 100) : "–");
const count = (v) => fmtNum(v);
const seconds = (v) => fmtDur(v);
const gpuSeconds = (v) => (Number.isFinite(v) ? `${fmtNum(v)} GPU-s` : "–");
const perS = (unit) => (v) => (Number.isFinite(v) ? `${fmtNum(v)} ${unit}/s` : "–");
const latency = (v) => (Number.isFinite(v) ? (v < 1 ? `${+(v * 1000).toPrecision(3)} ms` : `${+v.toPrecision(3)} s`) : "–");
const coreShare = (v) => (Number.isFinite(v) ? `${+v.toFixed(0)}% of a core` : "–");

export function bytes(v) {
  if (!Number.isFinite(v)) return "–";
  if (v >= 2 ** 30) return `${(v / 2 ** 30).toFixed(1)} GiB`;
  if (v >= 2 ** 20) return `${(v / 2 ** 20).toFixed(0)} MiB`;
  if (v >= 2 ** 10) return `${(v / 2 ** 10).toFixed(0)} KiB`;
  return `${fmtNum(v)} B`;
}

/** "api_server pid 644, thread MainThread (tid 651)" from any {pid, tid, role, thread}. */
export function who(x) {
  if (!x || typeof x !== "object") return "–";
  const parts = [x.role ? String(x.role).replace(/_/g, " ") : "process", x.pid !== undefined && x.pid !== null ? `pid ${x.pid}` : null]
    .filter(Boolean).join(" ");
  const thread = x.thread ? `, thread ${x.thread}${x.tid ? ` (tid ${x.tid})` : ""}` : x.tid ? `, tid ${x.tid}` : "";
  const gpu = x.gpu !== undefined && x.gpu !== null ? ` on GPU ${x.gpu}` : "";
  return `${parts}${thread}${gpu}`;
}

const culprit = (c) => (c ? `${who(c)}${Number.isFinite(c.cpu_pct) ? `, ${coreShare(c.cpu_pct)} on its own work` : ""}` : "none named");
const frames = (list) => (list || []).slice(0, 4).map((h) => `${h.frame}${Number.isFinite(h.share) ? ` ${share(h.share)}` : ""}`).join(", ") || "–";
const foreign = (list) => (list && list.length ? list.slice(0, 3).map((p) => [`pid ${p.pid}`, p.cmdline ? String(p.cmdline).slice(0, 60) : null,
  Number.isFinite(p.used_memory_bytes) ? bytes(p.used_memory_bytes) : null, Number.isFinite(p.sm_util) ? `${pct(p.sm_util)} SM` : null]
  .filter(Boolean).join(" ")).join("; ") : "none");
const perPid = (unit) => (m) => Object.entries(m || {}).map(([pid, v]) => `pid ${pid}: ${unit(v)}`).join(", ") || "–";
const perClass = (m) => Object.entries(m || {}).map(([k, v]) => `${classLabel(k)} ${seconds(v)}`).join(", ") || "–";
const beforeAfter = (m) => Object.entries(m || {}).map(([k, v]) => `${words(k)} ${fmtNum(v.before ?? v.baseline)} → ${fmtNum(v.after ?? v.now)}`).join(", ") || "–";
const rises = (m) => Object.entries(m || {}).map(([k, v]) => `${words(k).replace(/ util$/, "")} ${pct(v.baseline)} → ${pct(v.now)}`).join(", ") || "–";
const period = (r) => (r && Number.isFinite(r.from) ? `${fmtTime(r.from, true)} – ${fmtTime(r.to)}` : "–");
const changes = (list) => (list || []).slice(0, 4).map((c) => `${c.name} ${share(c.a_share)} → ${share(c.b_share)}`).join(", ") || "–";
const comparison = (c) => (c && c.now && c.baseline ? `tokens/s per request ${fmtNum(c.baseline.per_request)} → ${fmtNum(c.now.per_request)}`
  + ` (${pct((c.per_request_ratio - 1) * 100).replace(/^(?!-)/, "+")}) at the same load (${fmtNum(c.now.load)} vs ${fmtNum(c.baseline.load)} requests in flight),`
  + ` against ${fmtTime(c.baseline_start, true)} – ${fmtTime(c.baseline_end)}` : "no earlier episode at the same load");
const throttle = (t) => (t ? `${t.decided_by === "queueing" ? "where the requests queue" : "CPU alone (no queue figures)"}`
  + `${Number.isFinite(t.front_end_share) ? `: the front end holds ${share(t.front_end_share)} of the requests in flight` : ""}`
  + `${(t.order || []).length ? `; ${(t.order || []).map((p) => `${String(p.role).replace(/_/g, " ")} pid ${p.pid} ${coreShare(p.own_cpu_pct)}`).join(", then ")}` : ""}` : "–");
const episode = (e) => (e && Number.isFinite(e.start) ? `${classLabel(e["class"])}, ${fmtTime(e.start, true)} – ${fmtTime(e.end)} (${seconds(e.end - e.start)})` : "–");
const ranks = (list) => (list || []).slice(0, 8).map((r) => `GPU ${r.gpu}${r.pid ? ` pid ${r.pid}` : ""}`).join(", ") || "–";

/** key -> [label, format(value)]. Order here is the order shown. */
export const EVIDENCE = {
  culprit: ["Culprit", culprit],
  lost_gpu_s: ["GPU time lost", gpuSeconds],
  duration_s: ["Lasted", seconds],
  gpu_idle_pct: ["GPU idle", pct],
  sm_util_mean: ["SM activity, mean", pct],
  util_gpu_mean: ["NVML utilization, mean", pct],
  requests_running_mean: ["Requests running, mean", count],
  requests_waiting_mean: ["Requests waiting, mean", count],
  generation_tokens_per_s_mean: ["Tokens generated, mean", perS("tokens")],
  own_cpu_pct_by_pid: ["CPU on own work", perPid(coreShare)],
  hot_paths: ["Time splits into", frames],
  class_seconds: ["Time per class", perClass],
  tokens_per_s: ["Tokens generated", perS("tokens")],
  baseline_tokens_per_s: ["Tokens generated before", perS("tokens")],
  sm_util: ["SM activity", pct],
  baseline_sm_util: ["SM activity before", pct],
  activity_rises: ["GPU activity rose", rises],
  comparison: ["Against the same load before", comparison],
  throttle: ["Throttle decided by", throttle],
  episode: ["Episode", episode],
  latency_s_per_token: ["Time per token per request", latency],
  baseline_latency_s_per_token: ["Time per token per request before", latency],
  foreign_processes: ["Other processes on the GPU", foreign],
  requests_waiting_last: ["Requests waiting at the end", count],
  waiting_growth_per_s: ["Queue growth", (v) => (Number.isFinite(v) ? `${fmtNum(v * 60)} requests/min` : "–")],
  cause: ["Cause", (v) => words(v)],
  slow_rank: ["Slow rank", who],
  engine_gpus: ["Engine GPUs", (v) => (v || []).join(", ")],
  other_ranks_wait_share: ["Other ranks waiting", share],
  other_ranks_collective_share: ["Other ranks in collectives", share],
  ranks: ["Ranks", ranks],
  baseline: ["Baseline period", period],
  period: ["Period", period],
  changes: ["Changed", beforeAfter],
  class_seconds_before: ["Time per class before", perClass],
  class_seconds_after: ["Time per class after", perClass],
  profile_changes: ["Profile changes", changes],
};

/** "gpu idle pct" -> "GPU idle" style words for a key nobody mapped. */
export function words(key) {
  return String(key).replace(/_(s|pct|share|bytes|per_s)$/, "").replace(/_/g, " ")
    .replace(/\bgpu\b/gi, "GPU").replace(/\bcpu\b/gi, "CPU").replace(/\bsm\b/gi, "SM").replace(/^\w/, (c) => c.toUpperCase());
}

/** The unit a key's suffix names, for a key nobody mapped. */
function guess(key) {
  if (/_pct$/.test(key)) return pct;
  if (/_share$/.test(key)) return share;
  if (/_bytes$/.test(key)) return bytes;
  if (/_per_s$/.test(key)) return perS("");
  if (/_s$/.test(key)) return seconds;
  return generic;
}

/** Any JSON value in words: objects as "key value, ...", arrays joined, nesting shortened. */
export function generic(value, depth = 0) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") return fmtNum(value);
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (typeof value === "string") return value.slice(0, 300);
  if (Array.isArray(value)) {
    if (!value.length) return "none";
    return value.slice(0, 6).map((v) => generic(v, depth + 1)).join(depth ? ", " : "; ") + (value.length > 6 ? ` (+${value.length - 6})` : "");
  }
  if (depth > 2) return "…";
  return Object.entries(value).slice(0, 8).map(([k, v]) => `${words(k).toLowerCase()} ${guess(k) === generic ? generic(v, depth + 1) : guess(k)(v)}`).join(", ");
}

// keys whose empty value still says something ("no other process on the GPU")
const SAY_EMPTY = new Set(["foreign_processes", "culprit", "comparison"]);

function empty(value) {
  return value === null || value === undefined || (typeof value === "object" && !Object.keys(value).length);
}

/** [[label, text, key], ...] for a finding's evidence: known keys first in EVIDENCE's order;
 * empty lists and maps are left out unless their emptiness is news. */
export function evidenceRows(evidence) {
  const ev = evidence || {};
  const rows = [];
  const shown = (key) => key in ev && !(empty(ev[key]) && !(SAY_EMPTY.has(key) && ev[key] !== undefined));
  for (const [key, [label, fmt]] of Object.entries(EVIDENCE)) {
    if (shown(key)) rows.push([label, fmt(ev[key]), key]);
  }
  for (const [key, value] of Object.entries(ev)) {
    if (!(key in EVIDENCE) && shown(key)) rows.push([words(key), guess(key)(value), key]);
  }
  return rows;
}
