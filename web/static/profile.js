// The flame graph tab: filters (pure waits hidden by default), search, zoom breadcrumbs, the
// hottest functions of the zoomed frame and exports.
import { download, getJson, Latest, saveBlob } from "./api.js";
import { $, el, fmtNum, fmtPct, fmtTime, setChildren } from "./dom.js";
import { FlameGraph } from "./flame.js";
import { profileRange } from "./state.js";

/**
 * Self value per function (name, file) and its inclusive value counted once per stack (a
 * recursive function's inner calls are not counted again), under ``tree`` (with ``tree``
 * itself when ``withRoot``: a zoomed frame). Walks with an explicit stack: start-up stacks
 * are hundreds of frames deep.
 */
export function hottest(tree, limit = 12, withRoot = false) {
  const byFn = new Map();
  const open = new Map();   // key -> how many frames of that function are on the current path
  const stack = [];
  if (withRoot) stack.push([tree, false]);
  else for (let k = (tree.children || []).length - 1; k >= 0; k--) stack.push([tree.children[k], false]);
  while (stack.length) {
    const [node, leaving] = stack.pop();
    const key = `${node.name}\u0000${node.file || ""}`;
    if (leaving) {
      const n = open.get(key) - 1;
      if (n) open.set(key, n);
      else open.delete(key);
      continue;
    }
    const kids = node.children || [];
    const self = node.value - kids.reduce((s, c) => s + c.value, 0);
    let entry = byFn.get(key);
    if (!entry) {
      entry = { name: node.name, file: node.file || "", line: node.line || 0, self: 0, total: 0 };
      byFn.set(key, entry);
    }
    entry.self += Math.max(0, self);
    if (!open.has(key)) entry.total += node.value;
    open.set(key, (open.get(key) || 0) + 1);
    stack.push([node, true]);
    for (let k = kids.length - 1; k >= 0; k--) stack.push([kids[k], false]);
  }
  return [...byFn.values()].filter((e) => e.self > 0).sort((a, b) => b.self - a.self).slice(0, limit);
}

export function filterParams(s) {
  return { pid: s.pid, tid: s.tid, role: s.role, waits: s.waits, weight: s.weight,
    gpu: s.weight === "gpu_idle" ? s.gpu : null };
}

const WAITS_WORDS = { hide: "Pure waits hidden", show: "Waits shown", only: "Only waits shown" };

export class FlamePanel {
  /** ``hints.samplingProblem()``: why py-spy has no samples (health.js), or null. */
  constructor(store, tooltip, hints = {}) {
    this.store = store;
    this.hints = hints;
    this.view = $("flame-view");
    this.latest = new Latest();
    this.tree = null;
    this.graph = new FlameGraph($("flame-canvas"), tooltip, {
      describe: (node, info) => this.describe(node, info),
      onFocus: (names) => this.store.set({ focus: names.length ? names : null }),
      onPick: (node) => this.store.set({ tab: "sandwich", fn: [node.name, node.file || ""] }, "push"),
    });
    this.bindControls();
  }

  bindControls() {
    const set = (key, parse) => (e) => this.store.set({ [key]: parse(e.target.value) });
    const intOrNull = (v) => (v === "" ? null : Number(v));
    $("f-pid").addEventListener("change", set("pid", intOrNull));
    $("f-tid").addEventListener("change", set("tid", intOrNull));
    $("f-role").addEventListener("change", set("role", (v) => v || null));
    $("f-waits").addEventListener("change", set("waits", (v) => v));
    $("f-weight").addEventListener("change", set("weight", (v) => v));
    $("f-gpu").addEventListener("change", set("gpu", intOrNull));
    $("f-orient").addEventListener("click", () => {
      this.store.set({ orient: this.store.get().orient === "icicle" ? "flame" : "icicle" });
    });
    let timer = null;
    $("flame-search").addEventListener("input", (e) => {
      clearTimeout(timer);
      timer = setTimeout(() => this.store.set({ q: e.target.value }), 120);
    });
    $("flame-reset").addEventListener("click", () => this.store.set({ focus: null }));
    $("export-folded").addEventListener("click", () => this.exportFile("folded", "folded.txt"));
    $("export-speedscope").addEventListener("click", () => this.exportFile("speedscope", "speedscope.json"));
    $("export-png").addEventListener("click", async () => saveBlob(await this.graph.toBlob(), `${this.fileStem()}.png`));
  }

  fileStem() {
    const [a, b] = this.loadedRange || profileRange(this.store.get());
    return `infersight-${Math.floor(a)}-${Math.ceil(b)}`;
  }

  exportFile(format, suffix) {
    const s = this.store.get();
    const [from, to] = profileRange(s);
    download("/api/flamegraph", { from, to, format, ...filterParams(s) }, `${this.fileStem()}.${suffix}`)
      .catch((err) => this.setStatus("error", err.message));
  }

  /** Reload the threads (filter choices) and the profile for the current state. */
  async load() {
    const s = this.store.get();
    const [from, to] = profileRange(s);
    const signal = this.latest.next();
    this.view.dataset.state = "loading";
    try {
      const [threads, tree] = await Promise.all([
        getJson("/api/threads", { from, to }, signal),
        getJson("/api/flamegraph", { from, to, ...filterParams(s) }, signal),
      ]);
      this.fillFilters(threads.threads, s);
      this.renderFilterNote(s, threads.threads);
      this.show(tree, s, [from, to]);
    } catch (err) {
      if (err.name === "AbortError") return;
      this.setStatus("error", `Could not load the flame graph: ${err.message}`);
    }
  }

  setStatus(state, message, ...more) {
    this.view.dataset.state = state;
    const empty = $("flame-empty");
    empty.hidden = !message;
    setChildren(empty, message || "", ...more);
    $("flame-body").hidden = Boolean(message);
  }

  /** The filters in force, in words, each with one click to lift it. */
  renderFilterNote(s, threads) {
    const parts = [];
    const lift = (label, patch) => el("button", { type: "button", class: "btn ghost small", onclick: () => this.store.set(patch, "push") }, label);
    if (s.pid !== null || s.tid !== null || s.role) {
      const t = (threads || []).find((x) => x.tid === s.tid && (s.pid === null || x.pid === s.pid));
      const what = [s.role ? `role ${s.role}` : null, s.pid !== null ? `pid ${s.pid}` : null,
        s.tid !== null ? `thread ${t && t.name ? `${t.name} (${s.tid})` : s.tid}` : null].filter(Boolean).join(", ");
      parts.push(el("span", { class: "filter-chip", id: "flame-filter-who" }, `Only ${what}${s.event ? " (the finding's culprit)" : ""}`,
        lift("show all", { pid: null, tid: null, role: null })));
    }
    parts.push(el("span", { class: "filter-chip", id: "flame-filter-waits" }, WAITS_WORDS[s.waits],
      s.waits === "hide" ? lift("show waits", { waits: "show" }) : lift("hide waits", { waits: "hide" })));
    setChildren($("flame-filters"), ...parts);
  }

  show(tree, s, range) {
    this.tree = tree;
    this.loadedRange = range;
    this.view.dataset.from = String(range[0]);
    this.view.dataset.to = String(range[1]);
    Object.assign(this.view.dataset, { total: String(tree.total), waits: s.waits, pid: String(s.pid ?? ""), tid: String(s.tid ?? "") });
    const unit = s.weight === "gpu_idle" ? "GPU-idle-weighted samples" : "samples";
    setChildren($("flame-range"), `${fmtTime(range[0], true)} – ${fmtTime(range[1])}`,
      el("span", { class: "muted" }, ` · ${fmtNum(tree.total)} ${unit}`));
    if (!(tree.total > 0)) {
      const why = s.weight === "gpu_idle"
        ? "No samples in this range weigh anything: the GPU was busy the whole time, or no GPU data was stored."
        : "No samples in this range. The sampler records only the serving processes it profiles while they run on the CPU; pick another range or clear the filters.";
      const problem = this.hints.samplingProblem ? this.hints.samplingProblem() : null;
      const waits = s.waits === "hide" ? " Pure waits are hidden: “show waits” shows them." : "";
      this.graph.setTree({ name: "all", value: 0, children: [] });
      this.setStatus("empty", why + waits, problem ? el("p", { class: "note warn", id: "flame-sampling-problem" },
        el("strong", {}, problem.what), `: ${problem.detail}`, problem.fix ? ` Fix: ${problem.fix}` : "") : null);
      setChildren($("flame-hot"));
      return;
    }
    this.setStatus("ready", null);
    this.graph.setTree(tree);
    this.graph.setOrientation(s.orient);
    this.graph.setFocusNames(s.focus);
    this.applySearch(s.q);
    this.renderCrumbs();
    this.renderHottest(tree);
    // the agent sends at most max_nodes frames, heaviest first; say when some were left out
    const cut = tree.truncated ? " (the heaviest only: the rest are in their parents)" : "";
    setChildren($("flame-stats"), `${fmtNum(this.graph.n)} frames${cut} · drawn in ${Number(this.graph.canvas.dataset.renderMs).toFixed(1)} ms`);
  }

  /** React to state keys that need no new data. */
  update(changed, s) {
    if (changed.has("weight") || changed.has("gpu")) this.fillGpus(s);
    if (changed.has("orient")) {
      this.graph.setOrientation(s.orient);
      $("f-orient").textContent = s.orient === "icicle" ? "Icicle ↓" : "Flame ↑";
    }
    if (changed.has("q")) this.applySearch(s.q);
    if (changed.has("focus") && this.tree && this.tree.total > 0) {
      const now = JSON.stringify(this.graph.focusNames());
      if (now !== JSON.stringify(s.focus || [])) this.graph.setFocusNames(s.focus);
      this.renderCrumbs();
      this.renderHottest(this.tree);
    }
  }

  applySearch(q) {
    const input = $("flame-search");
    if (input.value !== q && document.activeElement !== input) input.value = q;
    const out = $("flame-search-result");
    if (!this.tree || !(this.tree.total > 0)) return setChildren(out);
    const r = this.graph.setSearch(q);
    out.dataset.share = String(r.share);
    if (!q) return setChildren(out);
    if (!r.frames) return setChildren(out, "no matching frames");
    return setChildren(out, `${r.frames} frame${r.frames === 1 ? "" : "s"} · `, el("strong", {}, fmtPct(r.share)), " of the total");
  }

  renderCrumbs() {
    const chain = this.graph.focusChain();
    const crumbs = chain.map((c, k) => el("button", { class: k === chain.length - 1 ? "crumb current" : "crumb", type: "button",
      onclick: () => this.graph.setFocus(c.index) }, k === 0 ? "all" : c.name));
    const joined = crumbs.flatMap((c, k) => (k ? [el("span", { class: "sep" }, "›"), c] : [c]));
    if (chain.length > 1) setChildren($("flame-crumbs"), ...joined);
    else setChildren($("flame-crumbs"), el("span", { class: "muted" }, "Click a frame to zoom into it, click it again to step back out."));
    $("flame-reset").hidden = chain.length <= 1;
  }

  /** The hottest functions of the zoomed frame (the whole profile when nothing is zoomed),
   * as shares of that frame. */
  renderHottest(tree) {
    const focus = this.graph.focusNode() || tree;
    const zoomed = focus !== tree;
    const base = focus.value || 1;
    const rows = hottest(focus, 12, zoomed).map((h) => el("tr", { class: "hot-row", title: "click to highlight in the flame graph",
      onclick: () => this.store.set({ q: h.name }) },
    el("td", { class: "fn" }, el("div", { class: "fn-name" }, h.name), el("div", { class: "fn-file" }, h.file ? `${h.file}:${h.line}` : "")),
    el("td", { class: "num" }, fmtPct(h.self / base)), el("td", { class: "num muted" }, fmtPct(h.total / base)),
    el("td", { class: "num" }, el("button", { type: "button", class: "btn ghost small hot-sandwich", title: "sandwich: its callers and callees",
      onclick: (e) => { e.stopPropagation(); this.store.set({ tab: "sandwich", fn: [h.name, h.file] }, "push"); } }, "⇅"))));
    setChildren($("flame-hot"), ...rows);
    const head = $("flame-hot-scope");
    head.dataset.scope = zoomed ? focus.name : "";
    setChildren(head, zoomed ? ["in ", el("span", { class: "mono" }, focus.name), ` (${fmtPct(focus.value / tree.total)} of all)`] : "in the whole range");
  }

  fillFilters(threads, s) {
    const pids = new Map();
    const roles = new Set();
    for (const t of threads) {
      pids.set(t.pid, t.role);
      roles.add(t.role);
    }
    options($("f-pid"), [["", "all processes"], ...[...pids].map(([pid, role]) => [String(pid), `${pid} · ${role}`])], s.pid);
    options($("f-role"), [["", "all roles"], ...[...roles].sort().map((r) => [r, r])], s.role);
    const shown = threads.filter((t) => s.pid === null || t.pid === s.pid).slice(0, 300);
    options($("f-tid"), [["", "all threads"], ...shown.map((t) => [String(t.tid), `${t.name || "?"} (${t.tid}) · ${fmtNum(t.samples)}`])], s.tid);
    $("f-waits").value = s.waits;
    $("f-weight").value = s.weight;
    this.fillGpus(s);
  }

  /** The GPUs the timeline knows; the choice matters only when weighting by GPU idle time. */
  setGpus(gpus) {
    this.gpus = gpus;
    this.fillGpus(this.store.get());
  }

  fillGpus(s) {
    const select = $("f-gpu");
    select.hidden = s.weight !== "gpu_idle";
    options(select, [["", "idle of all GPUs (mean)"], ...(this.gpus || []).map((g) => [String(g.gpu), `idle of GPU ${g.gpu}`])], s.gpu);
  }

  describe(node, info) {
    const unit = this.store.get().weight === "gpu_idle" ? "weight" : "samples";
    return [el("div", { class: "tt-title mono" }, node.name),
      node.file ? el("div", { class: "tt-muted mono" }, `${node.file}:${node.line}`) : null,
      el("div", { class: "tt-row" }, el("span", { class: "tt-label" }, unit), el("span", { class: "tt-value" }, fmtNum(info.value))),
      el("div", { class: "tt-row" }, el("span", { class: "tt-label" }, "of total"), el("span", { class: "tt-value" }, fmtPct(info.value / info.total))),
      el("div", { class: "tt-row" }, el("span", { class: "tt-label" }, "of parent"), el("span", { class: "tt-value" }, fmtPct(info.value / info.parentValue))),
      el("div", { class: "tt-muted" }, "click to zoom · shift+click: callers and callees")];
  }
}

/** Replace a <select>'s options; keep ``current`` selectable even when not in the list. */
function options(select, pairs, current) {
  const want = current === null || current === undefined ? "" : String(current);
  if (!pairs.some(([v]) => v === want)) pairs.push([want, `${want} (no samples here)`]);
  setChildren(select, ...pairs.map(([v, label]) => el("option", { value: v }, label)));
  select.value = want;
}
