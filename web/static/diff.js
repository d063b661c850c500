// The diff tab: baseline versus comparison as one flame graph (width by the comparison,
// colour by the change in each frame's share of its profile, so ranges of different length
// compare fairly) and the table of functions whose share changed most.
import { getJson, Latest, saveBlob } from "./api.js";
import { diffColor } from "./colors.js";
import { $, el, fmtDur, fmtNum, fmtPct, fmtSignedPct, fmtTime, setChildren } from "./dom.js";
import { FlameGraph } from "./flame.js";
import { filterParams } from "./profile.js";
import { profileRange } from "./state.js";

const MIN_SCALE = 0.02;   // below a 2-point change in share nothing is drawn at full intensity

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

export class DiffPanel {
  constructor(store, tooltip) {
    this.store = store;
    this.view = $("diff-view");
    this.latest = new Latest();
    this.scale = 1;
    this.graph = new FlameGraph($("diff-canvas"), tooltip, {
      describe: (node) => this.describe(node),
      colorFor: (node) => diffColor(node.delta_share || 0, this.scale),
    });
    $("diff-png").addEventListener("click", async () => saveBlob(await this.graph.toBlob(), "infersight-diff.png"));
  }

  async load() {
    const s = this.store.get();
    const comparison = profileRange(s);
    const base = s.base;
    this.renderHead(base, comparison);
    if (!base) {
      this.setStatus("no-baseline", "Pick a baseline to compare against: select a healthy stretch in the timeline and press "
        + "“Use as baseline”, or press “Compare” on a finding (its baseline is the same length of time just before it).");
      return;
    }
    const signal = this.latest.next();
    this.view.dataset.state = "loading";
    try {
      const tree = await getJson("/api/diff", { a_from: base[0], a_to: base[1], b_from: comparison[0], b_to: comparison[1],
        ...filterParams(s) }, signal);
      this.show(tree, s);
    } catch (err) {
      if (err.name === "AbortError") return;
      this.setStatus("error", `Could not load the diff: ${err.message}`);
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
    if (!(tree.a_total > 0) || !(tree.b_total > 0)) {
      const which = !(tree.a_total > 0) && !(tree.b_total > 0) ? "either range" : !(tree.a_total > 0) ? "the baseline" : "the comparison";
      this.setStatus("empty", `No samples in ${which}: there is nothing to compare.`);
      return;
    }
    this.setStatus("ready", null);
    this.scale = diffScale(tree);
    this.graph.setTree(tree);
    this.graph.setOrientation(s.orient);
    this.renderLegend(tree);
    this.renderTable(tree.top_changes || []);
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

  renderTable(rows) {
    const changed = rows.filter((r) => Math.abs(r.delta_share) >= 0.0005);
    if (!changed.length) {
      setChildren($("diff-table"), el("tr", {}, el("td", { colspan: "4", class: "muted" }, "No function changed its share.")));
      return;
    }
    setChildren($("diff-table"), ...changed.map((r) => {
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
