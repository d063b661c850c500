// Boot and wiring: the state (in the URL) drives the timeline, the findings and the
// flame graph / diff tabs; each reloads only when a key it depends on changes.
import { ApiError, getJson, Latest } from "./api.js";
import { allRange, bindHeader, renderHeader, renderNotes, renderSelection } from "./controls.js";
import { $, el, setChildren, setUtc } from "./dom.js";
import { DiffPanel } from "./diff.js";
import { FindingsPanel } from "./findings.js";
import { FlamePanel } from "./profile.js";
import { parse, profileRange, setDataExtent, Store, viewRange } from "./state.js";
import { renderSummary } from "./summary.js";
import { Timeline } from "./timeline.js";
import { Tooltip } from "./tooltip.js";

const RANGE_KEYS = ["from", "to", "live"];
const ANALYSIS_KEYS = ["sel", "base", "from", "to", "live", "pid", "tid", "role", "active", "weight", "gpu", "tab"];

const store = new Store(parse(location.search));
const tooltip = new Tooltip($("tooltip"));
const timelineRequest = new Latest();
let extent = null;
let gpuStatus = null;
let data = null;
let events = [];
let timelineTimer = null;
let refreshTimer = null;
let booted = false;   // until boot() has settled the initial state, it loads everything itself
const loadedKeys = { flame: null, diff: null };

const timeline = new Timeline($("timeline"), tooltip, {
  onSelect: (range) => store.set({ sel: range, event: null, focus: null }, "push"),
  onView: (range, final) => {
    if (final) store.set({ from: range[0], to: range[1], live: null });
  },
  onEvent: (ev) => openEvent(ev, "flame"),
});
const findings = new FindingsPanel({ onShow: (ev) => openEvent(ev, "flame"), onCompare: (ev) => openEvent(ev, "diff") });
const flame = new FlamePanel(store, tooltip);
const diff = new DiffPanel(store, tooltip);

function banner(message) {
  const node = $("banner");
  node.hidden = !message;
  setChildren(node, message || "");
}

/** A baseline for ``range``: the one set, unless it overlaps; else the same length just before. */
function baselineFor(range, base) {
  if (base && (base[1] <= range[0] || base[0] >= range[1])) return base;
  const d = range[1] - range[0];
  return [range[0] - d, range[0]];
}

/** Look at a finding: select its range and show its flame graph ("flame") or its diff ("diff"). */
function openEvent(ev, tab, history = "push") {
  const s = store.get();
  const [from, to] = viewRange(s);
  const patch = { event: ev.id, sel: [ev.start, ev.end], focus: null, tab };
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
    findings.render(events, store.get().event, Boolean(extent && extent.from !== null));
    renderAllNotes(tl, store.get());
    renderSelection(store.get(), data, clearBase);
    renderHeader(store.get(), extent);
    $("timeline").dataset.state = "ready";
  } catch (err) {
    if (err.name === "AbortError") return;
    $("timeline").dataset.state = "error";
    banner(err instanceof ApiError ? `Could not load the timeline: ${err.message}` : String(err));
  }
}

function renderAllNotes(tl, s) {
  const notes = renderNotes(tl, gpuStatus, s).map(([level, text, action]) => el("p", { class: `note ${level}` }, text,
    action === "all" ? el("button", { type: "button", class: "btn small", onclick: () => store.set({ ...allRange(extent) }, "push") },
      "Show all stored data") : null));
  setChildren($("timeline-notes"), ...notes);
}

function analysisKey(s, tab) {
  const range = profileRange(s).map((t) => Math.round(t * 1000) / 1000);
  return JSON.stringify([range, s.pid, s.tid, s.role, s.active, s.weight, s.gpu, tab === "diff" ? s.base : null]);
}

function loadAnalysis(force = false) {
  const s = store.get();
  const key = analysisKey(s, s.tab);
  if (!force && loadedKeys[s.tab] === key) return;
  loadedKeys[s.tab] = key;
  if (s.tab === "diff") diff.load();
  else flame.load();
}

function showTab(tab) {
  $("flame-view").hidden = tab !== "flame";
  $("diff-view").hidden = tab !== "diff";
  for (const b of document.querySelectorAll(".tabs [role=tab]")) b.setAttribute("aria-selected", String(b.dataset.tab === tab));
}

function clearBase() {
  store.set({ base: null }, "push");
}

function setupRefresh(s) {
  clearInterval(refreshTimer);
  refreshTimer = null;
  if (!s.refresh) return;
  refreshTimer = setInterval(() => {
    const now = store.get();
    if (now.live) timeline.setView(...viewRange(now));
    loadTimeline();
    if (now.live && !now.sel) loadAnalysis(true);
  }, s.refresh * 1000);
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
  window.addEventListener("popstate", () => store.set(parse(location.search), "none"));
}

store.subscribe((changed, s) => {
  if (!booted) return;
  if (changed.has("tz")) {
    setUtc(s.tz === "utc");
    if (data) {
      timeline.render();
      findings.signature = null;
      findings.render(events, s.event, true);
      renderSummary($("gpu-status"), $("legend"), data, ...viewRange(s));
    }
    loadedKeys.flame = loadedKeys.diff = null;
  }
  if (RANGE_KEYS.some((k) => changed.has(k))) {
    timeline.setView(...viewRange(s));
    scheduleTimeline();
  }
  if (changed.has("refresh") || changed.has("live")) setupRefresh(s);
  timeline.setMarks({ sel: s.sel, base: s.base, eventId: s.event });
  if (changed.has("event")) {
    findings.markActive(s.event);
    timeline.render();
  }
  if (changed.has("tab")) showTab(s.tab);
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
    const [range, health, config, gpus] = await Promise.all([getJson("/api/range"), getJson("/api/health"),
      getJson("/api/config").catch(() => null), getJson("/api/gpus").catch(() => null)]);
    extent = range;
    setDataExtent(extent);
    gpuStatus = gpus;
    if (config && config.host) setChildren($("host"), config.host);
    if (s.event && !s.sel) {
      try {
        openEvent(await getJson(`/api/events/${encodeURIComponent(s.event)}`), s.tab, "replace");
      } catch (err) {
        banner(`The finding ${s.event} is not stored (any more): ${err.message}`);
      }
    }
    s = store.get();
    if (!s.live && s.from === null) {
      const stored = health.storage && health.storage.read_only;
      const patch = stored && extent.from !== null ? allRange(extent) : { live: "1h" };
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
  setupRefresh(s);
  flame.update(new Set(["orient", "q"]), s);
  await loadTimeline();
  loadAnalysis(true);
}

boot();
