// The diff tab: baseline versus comparison as one flame graph (width by the comparison,
// colour by the change in each frame's share of its profile, so ranges of different length
// compare fairly), the table of functions whose share changed most (of the zoomed frame when
// zoomed), a search that highlights frames and filters the table, and one-click baselines:
// just before, the same time yesterday, before the last engine restart.
import { getJson, Latest, saveBlob } from "./api.js";
import { beforeLastRestart, hasData, justBefore, sameTimeYesterday } from "./baselines.js";
import { diffColor } from "./colors.js";
import { $, el, fmtDur, fmtNum, fmtPct, fmtSignedPct, fmtTime, setChildren } from "./dom.js";
import { FlameGraph } from "./flame.js";
import { filterParams } from "./profile.js";
import { profileRange } from "./state.js";

const MIN_SCALE = 0.02;   // below a 2-point change in share nothing is drawn at full intensity
const TABLE_ROWS = 20;

/** The largest absolute change in share below the root (the colour scale's full intensity). */
export function diffScale(tree) {
  let max = 0;
  const stack = [...(tree.children || [])];
  while (stack.length) {
    const n = stack.pop();
    if (Math.abs(n.delta_share) > max) max = Math.abs(n.delta_share);
    for (const c of n.children || []) stack.push(c);
  }
  return Math.max(MIN_SCALE, max);
}

/** Self shares per function (name, file) under ``node`` (itself included), as changes
 * [{name, file, a_share, b_share, delta_share}], largest change first. */
export function subtreeChanges(node, limit = TABLE_ROWS) {
  const byFn = new Map();
  const stack = [node];
  while (stack.length) {
    const n = stack.pop();
    const kids = n.children || [];
    const key = `${n.name}\u0000${n.file || ""}`;
    const e = byFn.get(key) || { name: n.name, file: n.file || "", a_share: 0, b_share: 0 };
    e.a_share += Math.max(0, n.a_share - kids.reduce((s, c) => s + c.a_share, 0));
    e.b_share += Math.max(0, n.b_share - kids.reduce((s, c) => s + c.b_share, 0));
    byFn.set(key, e);
    for (const c of kids) stack.push(c);
  }
  return [...byFn.values()].map((e) => ({ ...e, delta_share: e.b_share - e.a_share }))
    .sort((x, y) => Math.abs(y.delta_share) - Math.abs(x.delta_share)).slice(0, limit);
}

const matches = (q) => (r) => !q || `${r.name}\u0000${r.file || ""}`.toLowerCase().includes(q.trim().toLowerCase());

export class DiffPanel {
  /** ``getExtent()``: the stored data's {from, to}, for which baselines hold data. */
  constructor(store, tooltip, getExtent) {
    this.store = store;
    this.getExtent = getExtent;
    this.view = $("diff-view");
    this.latest = new Latest();
    this.scale = 1;
    this.tree = null;
    this.processes = [];
    this.graph = new FlameGraph($("diff-canvas"), tooltip, {
      describe: (node) => this.describe(node),
      colorFor: (node) => diffColor(node.delta_share || 0, this.scale),
      keepColorOnMatch: true,
      onFocus: () => this.renderTable(),
    });
    $("diff-png").addEventListener("click", async () => saveBlob(await this.graph.toBlob(), "infersight-diff.png"));
    let timer = null;
    $("diff-search").addEventListener("input", (e) => {
      clearTimeout(timer);
      timer = setTimeout(() => this.store.set({ q: e.target.value }), 120);
    });
    for (const b of $("base-presets").querySelectorAll("button")) {
      b.addEventListener("click", () => {
        const base = this.presets && this.presets[b.dataset.base];
        if (base) this.store.set({ base }, "push");
      });
    }
  }

  async load() {
    const s = this.store.get();
    const comparison = profileRange(s);
    const base = s.base;
    this.renderHead(base, comparison);
    const signal = this.latest.next();
    this.view.dataset.state = "loading";
    try {
      // every load: a live agent learns of restarts as they happen
      this.processes = (await getJson("/api/processes", { all: 1 }, signal)).processes || [];
    } catch (err) {
      if (err.name === "AbortError") return;
      this.processes = [];
    }
    this.renderPresets(comparison, base);
    if (!base) {
      this.setStatus("no-baseline", "Pick a baseline to compare against: one of the buttons above, or select a healthy "
        + "stretch in the timeline and press “Use as baseline”, or press “Compare” on a finding.");
      return;
    }
    try {
      const tree = await getJson("/api/diff", { a_from: base[0], a_to: base[1], b_from: comparison[0], b_to: comparison[1],
        ...filterParams(s) }, signal);
      this.show(tree, s);
    } catch (err) {
      if (err.name === "AbortError") return;
      this.setStatus("error", `Could not load the diff: ${err.message}`);
    }
  }

  /** The time-shift baselines for ``comparison``; those with no data (or no restart) disabled. */
  renderPresets(comparison, base) {
    const extent = this.getExtent();
    const restart = beforeLastRestart(comparison, this.processes);
    this.presets = { before: justBefore(comparison), yesterday: sameTimeYesterday(comparison), restart };
    const why = {
      before: "no data stored just before this range",
      yesterday: "no data stored at this time yesterday",
      restart: restart ? "no data stored before the last restart" : "no engine restart before this range in the stored data",
    };
    for (const b of $("base-presets").querySelectorAll("button")) {
      const range = this.presets[b.dataset.base];
      const ok = Boolean(range) && hasData(range, extent);
      b.disabled = !ok;
      b.title = ok ? `${fmtTime(range[0], true)} – ${fmtTime(range[1], true)}` : why[b.dataset.base];
      const same = ok && base && Math.abs(base[0] - range[0]) < 0.5 && Math.abs(base[1] - range[1]) < 0.5;
      b.setAttribute("aria-pressed", String(Boolean(same)));
    }
  }

  renderHead(base, comparison) {
    const part = (label, r, cls) => el("span", { class: `range-tag ${cls}` }, el("span", { class: "range-tag-label" }, label),
      r ? `${fmtTime(r[0], true)} – ${fmtTime(r[1])} (${fmtDur(r[1] - r[0])})` : "not set");
    setChildren($("diff-head"), part("baseline", base, "is-base"), el("span", { class: "vs" }, "vs"),
      part("comparison", comparison, "is-comp"));
  }

  setStatus(state, message) {
    this.view.dataset.state = state;
    $("diff-empty").hidden = !message;
    setChildren($("diff-empty"), message || "");
    $("diff-body").hidden = Boolean(message);
  }

  show(tree, s) {
    this.tree = null;
    if (!(tree.a_total > 0) || !(tree.b_total > 0)) {
      const which = !(tree.a_total > 0) && !(tree.b_total > 0) ? "either range" : !(tree.a_total > 0) ? "the baseline" : "the comparison";
      this.setStatus("empty", `No samples in ${which}: there is nothing to compare.`);
      return;
    }
    this.tree = tree;
    this.setStatus("ready", null);
    this.scale = diffScale(tree);
    this.graph.setTree(tree);
    this.graph.setOrientation(s.orient);
    this.renderLegend(tree);
    this.applySearch(s.q);
  }

  /** Highlight frames matching ``q``, say their share before and after, filter the table. */
  applySearch(q) {
    const input = $("diff-search");
    if (input.value !== q && document.activeElement !== input) input.value = q;
    const out = $("diff-search-result");
    if (!this.tree) return setChildren(out);
    const r = this.graph.setSearch(q);
    this.renderTable();
    if (!q) return setChildren(out);
    if (!r.frames) return setChildren(out, "no matching frames");
    const a = r.outer.reduce((sum, n) => sum + (n.a_share || 0), 0);
    const b = r.outer.reduce((sum, n) => sum + (n.b_share || 0), 0);
    out.dataset.a = String(a);
    out.dataset.b = String(b);
    return setChildren(out, `${r.frames} frame${r.frames === 1 ? "" : "s"} · `, el("strong", {}, fmtPct(a)), " → ",
      el("strong", {}, fmtPct(b)), ` (${fmtSignedPct(b - a)})`);
  }

  renderLegend(tree) {
    const steps = [-1, -0.5, -0.2, 0, 0.2, 0.5, 1];
    const chips = steps.map((f) => {
      const c = el("span", { class: "ramp-step" });
      c.style.background = diffColor(f * this.scale, this.scale);
      return c;
    });
    setChildren($("diff-legend"), el("span", { class: "muted" }, `shrank ${fmtPct(this.scale, 0)}`), ...chips,
      el("span", { class: "muted" }, `grew ${fmtPct(this.scale, 0)}`),
      el("span", { class: "muted spacer" }, `baseline ${fmtNum(tree.a_total)} · comparison ${fmtNum(tree.b_total)} samples; width = comparison, colour = change in share of each profile`));
  }

  /** The changes of the zoomed frame (the server's whole-profile ranking when not zoomed),
   * only the functions the search matches. */
  renderTable() {
    if (!this.tree) return;
    const focus = this.graph.focusNode();
    const zoomed = focus && focus !== this.tree;
    const q = this.store.get().q;
    const source = zoomed ? subtreeChanges(focus, 200) : this.tree.top_changes || [];
    const rows = source.filter(matches(q)).filter((r) => Math.abs(r.delta_share) >= 0.0005).slice(0, TABLE_ROWS);
    const scope = $("diff-table-scope");
    scope.dataset.scope = zoomed ? focus.name : "";
    setChildren(scope, zoomed ? ["in ", el("span", { class: "mono" }, focus.name)] : "in the whole profiles",
      q ? ` · matching “${q}”` : "");
    if (!rows.length) {
      setChildren($("diff-table"), el("tr", {}, el("td", { colspan: "4", class: "muted" },
        q ? "No changed function matches the search." : "No function changed its share.")));
      return;
    }
    setChildren($("diff-table"), ...rows.map((r) => {
      const chip = el("span", { class: "chip" });
      chip.style.background = diffColor(r.delta_share, this.scale);
      return el("tr", { class: "change-row", dataset: { delta: String(r.delta_share) } },
        el("td", { class: "fn" }, el("div", { class: "fn-name" }, r.name), el("div", { class: "fn-file" }, r.file || "")),
        el("td", { class: "num muted" }, fmtPct(r.a_share)),
        el("td", { class: "num muted" }, fmtPct(r.b_share)),
        el("td", { class: "num" }, el("span", { class: `delta ${r.delta_share > 0 ? "up" : "down"}` }, chip, fmtSignedPct(r.delta_share))));
    }));
  }

  describe(node) {
    return [el("div", { class: "tt-title mono" }, node.name),
      node.file ? el("div", { class: "tt-muted mono" }, `${node.file}:${node.line}`) : null,
      el("div", { class: "tt-row" }, el("span", { class: "tt-label" }, "baseline"),
        el("span", { class: "tt-value" }, `${fmtPct(node.a_share)} (${fmtNum(node.a)})`)),
      el("div", { class: "tt-row" }, el("span", { class: "tt-label" }, "comparison"),
        el("span", { class: "tt-value" }, `${fmtPct(node.b_share)} (${fmtNum(node.b)})`)),
      el("div", { class: "tt-row" }, el("span", { class: "tt-label" }, "change"),
        el("span", { class: "tt-value" }, fmtSignedPct(node.delta_share)))];
  }
}
