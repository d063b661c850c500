// The page's whole state lives in the URL's query string, so any view is a link a webhook or
// a colleague can open. Times are Unix seconds.
//
//   from, to     the timeline's range (absent when `live` is set)
//   live         5m | 1h | 24h: a range ending now, moved forward by auto-refresh
//   refresh      auto-refresh period in seconds (absent: DEFAULT_REFRESH_S; 0: off)
//   sel          selected range "FROM-TO": what the flame graph shows and the diff compares
//   base         baseline range "FROM-TO" for the diff
//   gpu          GPU index for GPU-idle weighting (absent: mean over all GPUs)
//   tab          flame | sandwich | diff | health
//   q            search text of the flame graph and the diff
//   pid, tid, role, weight (samples|gpu_idle), orient (icicle|flame)
//   waits        hide (absent) | show | only: the pure waits of the flame graph and diff
//                (idle samples and wait leaves, storage/waits.py); old links' active=1|0
//                read as hide|only
//   focus        JSON array of frame names from the root: the zoomed-in frame
//   fn           JSON [function, file]: the sandwich view's function
//   fq, fkind    the findings list's filter text and kind
//   event        id of the finding being looked at
//   tz           utc (absent: the browser's local time)

export const LIVE_SPANS = { "5m": 300, "1h": 3600, "24h": 86400 };
export const DEFAULT_REFRESH_S = 10;
export const TABS = ["flame", "sandwich", "diff", "health"];

const DEFAULTS = {
  from: null, to: null, live: null, refresh: DEFAULT_REFRESH_S, sel: null, base: null, gpu: null, tab: "flame", q: "",
  pid: null, tid: null, role: null, waits: "hide", weight: "samples", orient: "icicle", focus: null, fn: null,
  fq: "", fkind: null, event: null, tz: "local",
};

function num(v) {
  if (v === null || v === "") return null;
  const n = Number(v);
  return Number.isFinite(n) ? n : null;
}

function int(v) {
  const n = num(v);
  return n !== null && Number.isInteger(n) ? n : null;
}

function range(v) {
  const m = /^(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)$/.exec(v || "");
  if (!m) return null;
  const a = Number(m[1]);
  const b = Number(m[2]);
  return b > a ? [a, b] : null;
}

function oneOf(v, options, fallback) {
  return options.includes(v) ? v : fallback;
}

function fnKey(v) {
  if (!v) return null;
  try {
    const key = JSON.parse(v);
    return Array.isArray(key) && key.length === 2 && key.every((x) => typeof x === "string") ? key : null;
  } catch {
    return null;
  }
}

function focusPath(v) {
  if (!v) return null;
  try {
    const path = JSON.parse(v);
    return Array.isArray(path) && path.every((x) => typeof x === "string") ? path : null;
  } catch {
    return null;
  }
}

/** State from a query string; anything malformed falls back to its default. */
export function parse(search) {
  const q = new URLSearchParams(search);
  const s = { ...DEFAULTS };
  s.from = num(q.get("from"));
  s.to = num(q.get("to"));
  if (s.from === null || s.to === null || s.to <= s.from) s.from = s.to = null;
  s.live = oneOf(q.get("live"), Object.keys(LIVE_SPANS), null);
  s.refresh = q.has("refresh") ? Math.max(0, int(q.get("refresh")) || 0) : DEFAULT_REFRESH_S;
  s.sel = range(q.get("sel"));
  s.base = range(q.get("base"));
  s.gpu = int(q.get("gpu"));
  s.tab = oneOf(q.get("tab"), TABS, "flame");
  s.q = (q.get("q") || "").slice(0, 200);
  s.pid = int(q.get("pid"));
  s.tid = int(q.get("tid"));
  s.role = q.get("role") || null;
  const legacy = { 1: "hide", 0: "only" }[q.get("active")] || "hide";
  s.waits = oneOf(q.get("waits"), ["hide", "show", "only"], legacy);
  s.weight = oneOf(q.get("weight"), ["samples", "gpu_idle"], "samples");
  s.orient = oneOf(q.get("orient"), ["icicle", "flame"], "icicle");
  s.focus = focusPath(q.get("focus"));
  s.fn = fnKey(q.get("fn"));
  s.fq = (q.get("fq") || "").slice(0, 200);
  s.fkind = q.get("fkind") || null;
  s.event = q.get("event") || null;
  s.tz = oneOf(q.get("tz"), ["utc", "local"], "local");
  return s;
}

const fixed = (t) => String(+t.toFixed(3));
const rangeText = (r) => `${fixed(r[0])}-${fixed(r[1])}`;

/** Query string for a state (defaults left out). */
export function serialize(s) {
  const q = new URLSearchParams();
  if (s.live) q.set("live", s.live);
  else if (s.from !== null && s.to !== null) {
    q.set("from", fixed(s.from));
    q.set("to", fixed(s.to));
  }
  if (s.refresh !== DEFAULT_REFRESH_S) q.set("refresh", String(s.refresh || 0));
  if (s.sel) q.set("sel", rangeText(s.sel));
  if (s.base) q.set("base", rangeText(s.base));
  if (s.gpu !== null) q.set("gpu", String(s.gpu));
  if (s.tab !== "flame") q.set("tab", s.tab);
  if (s.q) q.set("q", s.q);
  if (s.pid !== null) q.set("pid", String(s.pid));
  if (s.tid !== null) q.set("tid", String(s.tid));
  if (s.role) q.set("role", s.role);
  if (s.waits !== "hide") q.set("waits", s.waits);
  if (s.weight !== "samples") q.set("weight", s.weight);
  if (s.orient !== "icicle") q.set("orient", s.orient);
  if (s.focus && s.focus.length) q.set("focus", JSON.stringify(s.focus));
  if (s.fn) q.set("fn", JSON.stringify(s.fn));
  if (s.fq) q.set("fq", s.fq);
  if (s.fkind) q.set("fkind", s.fkind);
  if (s.event) q.set("event", s.event);
  if (s.tz === "utc") q.set("tz", "utc");
  return q.toString();
}

function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** The state, its subscribers and its mirror in the address bar. */
export class Store {
  constructor(initial) {
    this.s = initial;
    this.listeners = [];
  }

  get() {
    return this.s;
  }

  subscribe(fn) {
    this.listeners.push(fn);
  }

  /** Apply ``patch``; ``history`` "push" adds a back-button step, "replace" does not, "none" leaves the URL. */
  set(patch, history = "replace") {
    const changed = new Set();
    const next = { ...this.s };
    for (const [key, value] of Object.entries(patch)) {
      if (!same(next[key], value)) {
        next[key] = value;
        changed.add(key);
      }
    }
    if (!changed.size) return changed;
    this.s = next;
    if (history !== "none") {
      const url = `${location.pathname}?${serialize(next)}`;
      if (history === "push") window.history.pushState(null, "", url);
      else window.history.replaceState(null, "", url);
    }
    for (const fn of this.listeners) fn(changed, next);
    return changed;
  }
}

// The stored data's extent ({from, to} of /api/range), which live views fit (see liveRange).
let dataExtent = null;

/** Remember the stored data's extent (null, or {from: null} when nothing is stored). */
export function setDataExtent(extent) {
  dataExtent = extent && extent.from !== null && extent.from !== undefined ? extent : null;
}

// A live view fitted to young data is never shorter than this (seconds).
export const MIN_FIT_S = 60;

/**
 * A live range of ``span`` seconds ending ``now``; when the stored data starts inside it (an
 * agent started minutes ago), it starts with the data instead (a little before it, at least
 * MIN_FIT_S long), so two minutes of data fill the timeline, not its right edge.
 */
export function liveRange(span, now, extent = dataExtent) {
  const from = now - span;
  if (!extent || extent.from <= from || extent.from >= now) return [from, now];
  const pad = Math.max(2, (now - extent.from) * 0.03);
  return [Math.max(from, Math.min(extent.from - pad, now - MIN_FIT_S)), now];
}

/** The timeline's [from, to] now: live ranges end at ``now`` (and fit young data). */
export function viewRange(s, now = Date.now() / 1000) {
  if (s.live) return liveRange(LIVE_SPANS[s.live], now);
  if (s.from !== null && s.to !== null) return [s.from, s.to];
  return [now - 3600, now];
}

/** The range the flame graph shows: the selection, or the whole view. */
export function profileRange(s, now) {
  return s.sel || viewRange(s, now);
}
