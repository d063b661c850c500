// Boot and wiring: the state (in the URL) drives the timeline, the findings and the tabs
// (flame graph, sandwich, diff, health); each reloads only when a key it depends on changes.
// A live view refreshes itself (live.js).
import { ApiError, getJson, Latest } from "./api.js";
import { allRange, bindHeader, renderHeader, renderNotes, renderSelection } from "./controls.js";
import { $, el, setChildren, setUtc } from "./dom.js";
import { DiffPanel } from "./diff.js";
import { FindingsPanel } from "./findings.js";
import { HealthPanel } from "./health.js";
import { LiveRefresh } from "./live.js";
import { FlamePanel } from "./profile.js";
import { SandwichPanel } from "./sandwich.js";
import { parse, profileRange, setDataExtent, Store, TABS, viewRange } from "./state.js";
import { renderSummary } from "./summary.js";
import { Timeline } from "./timeline.js";
import { Tooltip } from "./tooltip.js";

const RANGE_KEYS = ["from", "to", "live"];
const ANALYSIS_KEYS = ["sel", "base", "from", "to", "live", "pid", "tid", "role", "waits", "weight", "gpu", "tab", "fn"];

const store = new Store(parse(location.search));
const tooltip = new Tooltip($("tooltip"));
const timelineRequest = new Latest();
let extent = null;
let gpuStatus = null;
let readOnly = false;
let data = null;
let events = [];
let timelineTimer = null;
let timelineLoads = 0;
let booted = false;   // until boot() has settled the initial state, it loads everything itself
const loadedKeys = { flame: null, sandwich: null, diff: null, health: null };

const timeline = new Timeline($("timeline"), tooltip, {
  onSelect: (range) => store.set({ sel: range, event: null, focus: null }, "push"),
  onView: (range, final) => {
    if (final) store.set({ from: range[0], to: range[1], live: null });
  },
  onEvent: (ev) => openEvent(ev, "flame"),
});
const findings = new FindingsPanel({
  onShow: (ev) => openEvent(ev, "flame"),
  onCompare: (ev) => openEvent(ev, "diff"),
  onFilter: (patch) => store.set(patch),
});
const health = new HealthPanel({ open: () => store.set({ tab: "health" }, "push") });
const flame = new FlamePanel(store, tooltip, { samplingProblem: () => health.samplingProblem() });
const sandwich = new SandwichPanel(store, tooltip);
const diff = new DiffPanel(store, tooltip, () => extent);
const live = new LiveRefresh(store, {
  refresh: refreshLive,
  dragging: () => timeline.isDragging(),
  resume: (preset) => store.set({ live: preset, from: null, to: null, sel: null, event: null, focus: null }, "push"),
});

function banner(message) {
  const node = $("banner");
  node.hidden = !message;
  setChildren(node, message || "");
}

/** A message that stays until dismissed (a stale link), unlike the banner of the last load. */
function notice(message) {
  const node = $("notice");
  node.hidden = !message;
  setChildren(node, message || "", message ? el("button", { type: "button", class: "btn ghost small", onclick: () => notice(null) }, "dismiss") : null);
}

/** A baseline for ``range``: the one set, unless it overlaps; else the same length just before. */
function baselineFor(range, base) {
  if (base && (base[1] <= range[0] || base[0] >= range[1])) return base;
  const d = range[1] - range[0];
  return [range[0] - d, range[0]];
}

/**
 * Look at a finding: select its range and show its flame graph ("flame") or its diff
 * ("diff"), filtered to its culprit's process and thread when it names one. A stall's
 * culprit waits, so a stall keeps the waits in view.
 */
function openEvent(ev, tab, history = "push") {
  const s = store.get();
  const [from, to] = viewRange(s);
  const culprit = (ev.evidence && ev.evidence.culprit) || null;
  const patch = { event: ev.id, sel: [ev.start, ev.end], focus: null, tab,
    pid: culprit && Number.isInteger(culprit.pid) ? culprit.pid : null,
    tid: culprit && Number.isInteger(culprit.tid) && culprit.tid ? culprit.tid : null,
    role: null, waits: ev.class === "stall" ? "show" : "hide" };
  if (ev.gpu !== null && ev.gpu !== undefined) patch.gpu = ev.gpu;
  if (tab === "diff") patch.base = baselineFor([ev.start, ev.end], s.base);
  const lo = Math.min(ev.start, patch.base ? patch.base[0] : ev.start);
  if (lo < from || ev.end > to || (s.from === null && !s.live)) {
    // widen a view that is near the finding; jump to one that is far from it
    const pad = Math.max(30, ev.end - ev.start);
    const span = to - from;
    const near = s.from !== null && ev.end > from - span && lo < to + span;
    Object.assign(patch, { from: near ? Math.min(from, lo - pad) : lo - pad,
      to: near ? Math.max(to, ev.end + pad) : ev.end + pad, live: null });
  }
  store.set(patch, history);
}

function scheduleTimeline(delay = 120) {
  $("timeline").dataset.state = "loading";   // what is drawn is for another range until the load lands
  clearTimeout(timelineTimer);
  timelineTimer = setTimeout(loadTimeline, delay);
}

function findingsFilter(s) {
  return { text: s.fq, kind: s.fkind };
}

/** Load the timeline and the findings of the view; true when they came. */
async function loadTimeline() {
  const s = store.get();
  const [from, to] = viewRange(s);
  const signal = timelineRequest.next();
  const points = Math.max(100, Math.min(5000, Math.round($("timeline").clientWidth - 140)));
  $("timeline").dataset.state = "loading";
  try {
    const [tl, ev] = await Promise.all([
      getJson("/api/ui/timeline", { from, to, points }, signal),
      getJson("/api/events", { from, to, limit: 1000 }, signal),
    ]);
    data = tl;
    extent = tl.extent;
    setDataExtent(extent);
    events = ev.events;
    banner(null);
    // the view is the timeline's own (it may be mid-drag): only the data is replaced
    timeline.setData(tl, events);
    renderSummary($("gpu-status"), $("legend"), tl, from, to);
    flame.setGpus(tl.gpus);
    findings.render(events, store.get().event, Boolean(extent && extent.from !== null), findingsFilter(store.get()));
    renderAllNotes(tl, store.get());
    renderSelection(store.get(), data, clearBase);
    renderHeader(store.get(), extent);
    $("timeline").dataset.state = "ready";
    $("timeline").dataset.loads = String(++timelineLoads);
    live.loaded(true);
    return true;
  } catch (err) {
    if (err.name === "AbortError") return false;
    $("timeline").dataset.state = "error";
    banner(err instanceof ApiError ? `Could not load the timeline: ${err.message}` : String(err));
    live.loaded(false);
    return false;
  }
}

/** One tick of a live view: move the range to now and reload what it shows. */
async function refreshLive() {
  timeline.setView(...viewRange(store.get()));
  const ok = await loadTimeline();
  if (ok) {
    loadAnalysis(true);
    if (store.get().tab !== "health") health.load();
  }
}

function renderAllNotes(tl, s) {
  const notes = renderNotes(tl, gpuStatus, s, readOnly).map(([level, text, action]) => el("p", { class: `note ${level}` }, text,
    action === "all" ? el("button", { type: "button", class: "btn small", onclick: () => store.set({ ...allRange(extent) }, "push") },
      "Show all stored data") : null));
  setChildren($("timeline-notes"), ...notes);
}

function analysisKey(s, tab) {
  const range = profileRange(s).map((t) => Math.round(t * 1000) / 1000);
  return JSON.stringify([range, s.pid, s.tid, s.role, s.waits, s.weight, s.gpu, tab === "diff" ? s.base : null,
    tab === "sandwich" ? s.fn : null]);
}

function loadAnalysis(force = false) {
  const s = store.get();
  const key = analysisKey(s, s.tab);
  if (!force && loadedKeys[s.tab] === key) return;
  loadedKeys[s.tab] = key;
  if (s.tab === "diff") diff.load();
  else if (s.tab === "sandwich") sandwich.load();
  else if (s.tab === "health") health.load();
  else flame.load();
}

function showTab(tab) {
  for (const t of TABS) $(`${t}-view`).hidden = t !== tab;
  for (const b of document.querySelectorAll(".tabs [role=tab]")) b.setAttribute("aria-selected", String(b.dataset.tab === tab));
}

function clearBase() {
  store.set({ base: null }, "push");
}

function shift(fraction) {
  const [from, to] = viewRange(store.get());
  const d = (to - from) * fraction;
  store.set({ from: from + d, to: to + d, live: null });
}

function zoomBy(factor) {
  const [from, to] = viewRange(store.get());
  const mid = (from + to) / 2;
  const half = Math.max(2.5, ((to - from) * factor) / 2);
  store.set({ from: mid - half, to: mid + half, live: null });
}

function bindPage() {
  bindHeader(store, () => extent);
  $("pan-left").addEventListener("click", () => shift(-0.5));
  $("pan-right").addEventListener("click", () => shift(0.5));
  $("zoom-in").addEventListener("click", () => zoomBy(0.5));
  $("zoom-out").addEventListener("click", () => zoomBy(2));
  $("sel-zoom").addEventListener("click", () => {
    const { sel } = store.get();
    if (sel) store.set({ from: sel[0], to: sel[1], live: null }, "push");
  });
  $("sel-base").addEventListener("click", () => {
    const { sel } = store.get();
    if (sel) store.set({ base: sel, sel: null, event: null }, "push");
  });
  $("sel-compare").addEventListener("click", () => {
    const s = store.get();
    const range = profileRange(s);
    store.set({ tab: "diff", base: s.base || baselineFor(range, null), sel: s.sel || range }, "push");
  });
  $("sel-clear").addEventListener("click", () => store.set({ sel: null, base: null, event: null }, "push"));
  for (const b of document.querySelectorAll(".tabs [role=tab]")) {
    b.addEventListener("click", () => store.set({ tab: b.dataset.tab }, "push"));
  }
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && store.get().sel && document.activeElement.tagName !== "INPUT") {
      store.set({ sel: null, event: null }, "push");
    }
  });
  document.addEventListener("visibilitychange", () => live.render());
  window.addEventListener("popstate", () => store.set(parse(location.search), "none"));
}

store.subscribe((changed, s) => {
  if (!booted) return;
  if (changed.has("tz")) {
    setUtc(s.tz === "utc");
    if (data) {
      timeline.render();
      findings.signature = null;
      findings.render(events, s.event, true, findingsFilter(s));
      renderSummary($("gpu-status"), $("legend"), data, ...viewRange(s));
    }
    for (const k of Object.keys(loadedKeys)) loadedKeys[k] = null;
  }
  if (RANGE_KEYS.some((k) => changed.has(k))) {
    timeline.setView(...viewRange(s));
    scheduleTimeline();
  }
  live.update(s);
  timeline.setMarks({ sel: s.sel, base: s.base, eventId: s.event });
  if (changed.has("event")) {
    findings.markActive(s.event);
    timeline.render();
  }
  if (changed.has("fq") || changed.has("fkind")) findings.render(events, s.event, true, findingsFilter(s));
  if (changed.has("tab")) showTab(s.tab);
  if (changed.has("q")) diff.applySearch(s.q);
  renderSelection(s, data, clearBase);
  renderHeader(s, extent);
  flame.update(changed, s);
  if (ANALYSIS_KEYS.some((k) => changed.has(k)) || changed.has("tz")) loadAnalysis();
});

async function boot() {
  bindPage();
  let s = store.get();
  setUtc(s.tz === "utc");
  showTab(s.tab);
  try {
    const [range, h, config, gpus] = await Promise.all([getJson("/api/range"), health.load(),
      getJson("/api/config").catch(() => null), getJson("/api/gpus").catch(() => null)]);
    extent = range;
    setDataExtent(extent);
    gpuStatus = gpus;
    readOnly = Boolean(h.health && h.health.storage && h.health.storage.read_only);
    if (config && config.host) setChildren($("host"), config.host);
    if (s.event && !s.sel) {
      try {
        openEvent(await getJson(`/api/events/${encodeURIComponent(s.event)}`), s.tab, "replace");
      } catch (err) {
        notice(`The finding in this link (${s.event}) is not stored${err.status === 404 ? " any more: retention removed it, or it "
          + "came from another agent" : `: ${err.message}`}. Showing the default view instead.`);
        store.set({ event: null }, "replace");
      }
    }
    s = store.get();
    if (!s.live && s.from === null) {
      const patch = readOnly && extent.from !== null ? allRange(extent) : { live: "1h" };
      store.set(patch, "replace");
    }
  } catch (err) {
    banner(`The agent did not answer: ${err.message}`);
  }
  booted = true;
  s = store.get();
  timeline.setView(...viewRange(s));
  timeline.setMarks({ sel: s.sel, base: s.base, eventId: s.event });
  renderHeader(s, extent);
  renderSelection(s, data, clearBase);
  live.update(s);
  flame.update(new Set(["orient", "q"]), s);
  await loadTimeline();
  loadAnalysis(true);
}

boot();
