// The findings list: every event in the range with its evidence and the code to blame.
// A card opens the event (its range selected, its flame graph shown); "Compare" opens
// "this period versus the baseline" in one click.
import { classColor } from "./colors.js";
import { $, classLabel, el, fmtDur, fmtNum, fmtPct, fmtTime, setChildren } from "./dom.js";

const KIND_LABELS = {
  cpu_gpu_gap: "CPU–GPU gap",
  util_throughput_mismatch: "Busy without throughput",
  saturation: "Saturation",
  regression: "Regression",
};

export function kindLabel(kind) {
  return KIND_LABELS[kind] || String(kind).replace(/_/g, " ");
}

const EVIDENCE_SKIP = new Set(["duration_s"]);
const MAX_EVIDENCE = 8;

function words(key) {
  return String(key).replace(/_/g, " ").replace(/\bpct\b/, "%").replace(/\bs\b$/, "(s)");
}

/** One evidence value as short text: numbers compact, flat objects as "k v, k v". */
function evidenceText(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") return fmtNum(value);
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (Array.isArray(value)) return value.slice(0, 6).map(evidenceText).join(", ");
  if (typeof value === "object") {
    return Object.entries(value).slice(0, 6).map(([k, v]) => `${k.replace(/_/g, " ")} ${evidenceText(v)}`).join(", ");
  }
  return String(value).slice(0, 200);
}

export class FindingsPanel {
  constructor(handlers) {
    this.handlers = handlers;
    this.list = $("findings-list");
  }

  render(events, activeId, extentKnown) {
    // auto-refresh re-renders every few seconds: keep the reader's place when nothing changed
    const signature = JSON.stringify(events.map((e) => [e.id, e.updated, e.end]));
    if (signature === this.signature && this.list.childElementCount) {
      this.markActive(activeId);
      return;
    }
    this.signature = signature;
    const scroll = this.list.scrollTop;
    setChildren($("findings-count"), events.length ? String(events.length) : "");
    if (!events.length) {
      setChildren(this.list, el("p", { class: "empty-note" }, extentKnown
        ? "No findings in this range: no CPU–GPU gaps, mismatches, saturation or regressions were detected."
        : "No findings yet."));
      return;
    }
    setChildren(this.list, ...events.map((ev) => this.card(ev, ev.id === activeId)));
    this.list.scrollTop = scroll;
    if (activeId) this.markActive(activeId);
  }

  markActive(activeId) {
    for (const card of this.list.querySelectorAll(".finding")) {
      const active = card.dataset.id === activeId;
      card.classList.toggle("active", active);
      if (active) card.scrollIntoView({ block: "nearest" });
    }
  }

  card(ev, active) {
    const open = () => this.handlers.onShow(ev);
    const classChip = ev.class ? el("span", { class: "class-tag" }, el("span", { class: "chip" }), classLabel(ev.class)) : null;
    if (classChip) classChip.firstChild.style.background = classColor(ev.class);
    const evidence = Object.entries(ev.evidence || {}).filter(([k]) => !EVIDENCE_SKIP.has(k)).slice(0, MAX_EVIDENCE);
    const frames = (ev.top_frames || []).slice(0, 5);
    const card = el("article", { class: `finding sev-${ev.severity || "info"}${active ? " active" : ""}`, tabindex: "0",
      dataset: { id: ev.id, kind: ev.kind }, onclick: open,
      onkeydown: (e) => { if (e.key === "Enter") open(); } },
    el("header", { class: "finding-head" },
      el("span", { class: "kind" }, kindLabel(ev.kind)),
      ev.gpu !== null && ev.gpu !== undefined ? el("span", { class: "badge" }, `GPU ${ev.gpu}`) : null,
      classChip,
      ev.open ? el("span", { class: "badge live" }, "ongoing") : null),
    el("div", { class: "when" }, `${fmtTime(ev.start, true)} · ${fmtDur(ev.end - ev.start)}`),
    ev.summary ? el("p", { class: "summary" }, ev.summary) : null,
    evidence.length ? el("dl", { class: "evidence" }, ...evidence.flatMap(([k, v]) => [el("dt", {}, words(k)), el("dd", {}, evidenceText(v))])) : null,
    frames.length ? el("ol", { class: "frames" }, ...frames.map((f) => el("li", {},
      el("span", { class: "fn-name" }, String(f.frame)),
      el("span", { class: "share" }, fmtPct(f.share, 0)),
      el("span", { class: "fn-file" }, [f.file ? `${f.file}${f.line ? `:${f.line}` : ""}` : null,
        f.role ? `${f.role}${f.pid ? ` ${f.pid}` : ""}` : null].filter(Boolean).join(" · "))))) : null,
    el("div", { class: "actions" },
      el("button", { type: "button", class: "btn small", onclick: (e) => { e.stopPropagation(); open(); } }, "Flame graph"),
      el("button", { type: "button", class: "btn small", onclick: (e) => { e.stopPropagation(); this.handlers.onCompare(ev); } },
        "Compare with baseline")));
    return card;
  }
}
