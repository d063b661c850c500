// The findings list: one compact row per finding (time, GPU, class, culprit, GPU time lost),
// grouped by cause (kind and the code or process to blame), filterable by text and kind. The
// finding being looked at opens under its row: summary, evidence in words, top frames, and
// "Flame graph" / "Compare with baseline".
import { classColor } from "./colors.js";
import { $, classLabel, el, fmtDur, fmtNum, fmtPct, fmtTime, setChildren } from "./dom.js";
import { evidenceRows, who } from "./evidence.js";

const KIND_LABELS = {
  cpu_gpu_gap: "CPU–GPU gap",
  util_throughput_mismatch: "Busy without throughput",
  saturation: "Saturation",
  regression: "Regression",
  straggler: "Straggler",
  noisy_neighbor: "Noisy neighbour",
};

export function kindLabel(kind) {
  return KIND_LABELS[kind] || String(kind).replace(/_/g, " ");
}

/** The first other GPU process a finding names, or null. */
function neighbour(ev) {
  const list = (ev.evidence || {}).foreign_processes;
  return Array.isArray(list) && list.length ? list[0] : null;
}

/**
 * What a finding blames: {main, sub} for its row. The culprit code (first top frame) with
 * the process and thread; a neighbour process; else the culprit thread; else nothing.
 */
export function culpritOf(ev) {
  const e = ev.evidence || {};
  const top = (ev.top_frames || [])[0];
  const other = neighbour(ev);
  if (other && (!top || ev.kind !== "cpu_gpu_gap")) {
    return { main: `pid ${other.pid} ${other.cmdline ? String(other.cmdline).split(" ")[0].split("/").pop() : ""}`.trim(),
      sub: "other process on the GPU" };
  }
  const c = e.culprit;
  if (top) {
    const place = c ? who(c) : top.role ? who(top) : "";
    return { main: String(top.frame), sub: place };
  }
  if (c) return { main: c.thread ? `thread ${c.thread}` : `pid ${c.pid}`, sub: who(c) };
  return { main: "", sub: "" };
}

/** The group a finding belongs to: its kind and what it blames. */
export function causeKey(ev) {
  const c = culpritOf(ev);
  return `${ev.kind}\u0000${c.main || ev.class || ""}`;
}

function lostOf(ev) {
  const v = (ev.evidence || {}).lost_gpu_s;
  return Number.isFinite(v) ? v : null;
}

function searchText(ev) {
  const c = culpritOf(ev);
  return [kindLabel(ev.kind), ev.kind, classLabel(ev.class), c.main, c.sub, ev.summary,
    ev.gpu !== null && ev.gpu !== undefined ? `gpu ${ev.gpu}` : "",
    ...(ev.top_frames || []).map((f) => `${f.frame} ${f.file || ""}`)].join(" ").toLowerCase();
}

/** Findings matching the filter text (every word somewhere) and kind. */
export function filterFindings(events, text, kind) {
  const words = String(text || "").toLowerCase().split(/\s+/).filter(Boolean);
  return events.filter((ev) => (!kind || ev.kind === kind) && words.every((w) => searchText(ev).includes(w)));
}

/** Findings grouped by cause: [{key, kind, cause, events (newest first), lost, last}], worst first. */
export function groupFindings(events) {
  const groups = new Map();
  for (const ev of events) {
    const key = causeKey(ev);
    let g = groups.get(key);
    if (!g) {
      g = { key, kind: ev.kind, cause: culpritOf(ev).main || classLabel(ev.class || "unknown"), events: [], lost: 0, last: 0 };
      groups.set(key, g);
    }
    g.events.push(ev);
    g.lost += lostOf(ev) || 0;
    g.last = Math.max(g.last, ev.end);
  }
  const out = [...groups.values()];
  for (const g of out) g.events.sort((a, b) => b.start - a.start);
  return out.sort((a, b) => b.lost - a.lost || b.last - a.last);
}

export class FindingsPanel {
  constructor(handlers) {
    this.handlers = handlers;
    this.list = $("findings-list");
    this.collapsed = new Set();
    this.events = [];
    this.filter = { text: "", kind: "" };
    this.activeId = null;
    this.extentKnown = false;
    let timer = null;
    $("findings-filter").addEventListener("input", (e) => {
      clearTimeout(timer);
      timer = setTimeout(() => handlers.onFilter({ fq: e.target.value }), 150);
    });
    $("findings-kind").addEventListener("change", (e) => handlers.onFilter({ fkind: e.target.value || null }));
  }

  /** Show ``events``; ``filter`` {text, kind}; re-renders only when something changed. */
  render(events, activeId, extentKnown, filter = this.filter) {
    const signature = JSON.stringify([events.map((e) => [e.id, e.updated, e.end]), filter, activeId]);
    if (signature === this.signature && this.list.childElementCount) return;
    this.signature = signature;
    Object.assign(this, { events, activeId, extentKnown, filter });
    const input = $("findings-filter");
    if (document.activeElement !== input && input.value !== filter.text) input.value = filter.text;
    this.fillKinds(events, filter.kind);
    const shown = filterFindings(events, filter.text, filter.kind);
    setChildren($("findings-count"), events.length ? (shown.length === events.length ? String(events.length) : `${shown.length} of ${events.length}`) : "");
    const scroll = this.list.scrollTop;
    if (!events.length) {
      setChildren(this.list, el("p", { class: "empty-note" }, extentKnown
        ? "No findings in this range: no CPU–GPU gaps, mismatches, saturation or regressions were detected."
        : "No findings yet. The analysis runs every few seconds; findings appear here as they are made."));
      return;
    }
    if (!shown.length) {
      setChildren(this.list, el("p", { class: "empty-note" }, "No finding matches the filter."));
      return;
    }
    setChildren(this.list, ...groupFindings(shown).map((g) => this.group(g)));
    this.list.scrollTop = scroll;
    this.markActive(activeId);
  }

  fillKinds(events, kind) {
    const kinds = [...new Set(events.map((e) => e.kind))].sort();
    if (kind && !kinds.includes(kind)) kinds.push(kind);
    const select = $("findings-kind");
    setChildren(select, el("option", { value: "" }, "all kinds"), ...kinds.map((k) => el("option", { value: k }, kindLabel(k))));
    select.value = kind || "";
  }

  markActive(activeId) {
    if (activeId !== this.activeId) {
      this.activeId = activeId;
      this.signature = null;
      this.render(this.events, activeId, this.extentKnown, this.filter);
      return;
    }
    const row = activeId ? [...this.list.querySelectorAll(".finding")].find((r) => r.dataset.id === activeId) : null;
    if (row) row.scrollIntoView({ block: "nearest" });
  }

  group(g) {
    const collapsed = this.collapsed.has(g.key) && !g.events.some((e) => e.id === this.activeId);
    const toggle = () => {
      if (this.collapsed.has(g.key)) this.collapsed.delete(g.key);
      else this.collapsed.add(g.key);
      this.signature = null;
      this.render(this.events, this.activeId, this.extentKnown, this.filter);
    };
    return el("section", { class: "fgroup", dataset: { kind: g.kind, cause: g.cause } },
      el("button", { type: "button", class: "fgroup-head", "aria-expanded": String(!collapsed), onclick: toggle },
        el("span", { class: "caret" }, collapsed ? "▸" : "▾"),
        el("span", { class: "kind" }, kindLabel(g.kind)),
        el("span", { class: "fgroup-cause mono" }, g.cause),
        el("span", { class: "fgroup-meta" }, `${g.events.length} × `, g.lost ? `${fmtNum(g.lost)} GPU-s lost` : fmtDur(g.events.reduce((s, e) => s + e.end - e.start, 0)))),
      collapsed ? null : g.events.map((ev) => this.row(ev, ev.id === this.activeId)));
  }

  row(ev, active) {
    const open = () => this.handlers.onShow(ev);
    const c = culpritOf(ev);
    const lost = lostOf(ev);
    const chip = el("span", { class: "chip" });
    chip.style.background = ev.class ? classColor(ev.class) : "transparent";
    return el("article", { class: `finding sev-${ev.severity || "info"}${active ? " active" : ""}`, tabindex: "0",
      dataset: { id: ev.id, kind: ev.kind }, title: ev.summary || "",
      onclick: open, onkeydown: (e) => { if (e.key === "Enter" && e.target === e.currentTarget) open(); } },
    el("div", { class: "frow" },
      el("span", { class: "ftime" }, fmtTime(ev.start), ev.open ? el("span", { class: "badge live" }, "ongoing") : null),
      el("span", { class: "fgpu" }, ev.gpu !== null && ev.gpu !== undefined ? String(ev.gpu) : "–"),
      el("span", { class: "fclass" }, chip, ev.class ? classLabel(ev.class) : "–"),
      el("span", { class: "fculprit mono", title: c.sub || "" }, c.main || "–"),
      el("span", { class: "flost" }, lost !== null ? fmtNum(lost) : "–")),
    active ? this.detail(ev) : null);
  }

  detail(ev) {
    const frames = (ev.top_frames || []).slice(0, 5);
    const rows = evidenceRows(ev.evidence);
    return el("div", { class: "fdetail" },
      el("div", { class: "when" }, `${kindLabel(ev.kind)} · ${fmtTime(ev.start, true)} – ${fmtTime(ev.end)} · ${fmtDur(ev.end - ev.start)}`),
      ev.summary ? el("p", { class: "summary" }, ev.summary) : null,
      rows.length ? el("dl", { class: "evidence" }, ...rows.flatMap(([label, text, key]) => [
        el("dt", { dataset: { key } }, label), el("dd", {}, text)])) : null,
      frames.length ? el("ol", { class: "frames" }, ...frames.map((f) => el("li", {},
        el("span", { class: "fn-name" }, String(f.frame)),
        el("span", { class: "share" }, fmtPct(f.share, 0)),
        el("span", { class: "fn-file" }, [f.file ? `${f.file}${f.line ? `:${f.line}` : ""}` : null,
          f.role ? `${f.role}${f.pid ? ` ${f.pid}` : ""}${f.thread ? ` · ${f.thread}` : ""}` : null].filter(Boolean).join(" · "))))) : null,
      el("div", { class: "actions" },
        el("button", { type: "button", class: "btn small", onclick: (e) => { e.stopPropagation(); this.handlers.onShow(ev); } }, "Flame graph"),
        el("button", { type: "button", class: "btn small", onclick: (e) => { e.stopPropagation(); this.handlers.onCompare(ev); } },
          "Compare with baseline")));
  }
}
