// The sandwich view of one function: who calls it (callers, drawn upwards from the function)
// and what it calls (callees, drawn downwards), merged over every place it appears in the
// profile of the selected range, with the same filters as the flame graph. As in Pyroscope
// and speedscope, a recursive function counts once per stack (its outermost call).
import { getJson, Latest } from "./api.js";
import { $, el, fmtNum, fmtPct, fmtTime, setChildren } from "./dom.js";
import { FlameGraph } from "./flame.js";
import { filterParams, hottest } from "./profile.js";
import { profileRange } from "./state.js";

function node(name, file, line) {
  return { name, file, line, value: 0, kids: new Map() };
}

function child(parent, src) {
  const key = `${src.name}\u0000${src.file || ""}`;
  let c = parent.kids.get(key);
  if (!c) {
    c = node(src.name, src.file || "", src.line || 0);
    parent.kids.set(key, c);
  }
  return c;
}

/** Add ``src``'s subtree below ``dst`` (values summed by function path). */
function mergeInto(dst, src) {
  const stack = [[dst, src]];
  while (stack.length) {
    const [d, s] = stack.pop();
    for (const c of s.children || []) {
      if (!(c.value > 0)) continue;
      const t = child(d, c);
      t.value += c.value;
      stack.push([t, c]);
    }
  }
}

/** The {name, value, file, line, children} tree of a built node, children heaviest first. */
function finish(root) {
  const out = { name: root.name, file: root.file, line: root.line, value: root.value, children: [] };
  const stack = [[root, out]];
  while (stack.length) {
    const [n, o] = stack.pop();
    const kids = [...n.kids.values()].sort((a, b) => b.value - a.value);
    for (const k of kids) {
      const ko = { name: k.name, file: k.file, line: k.line, value: k.value, children: [] };
      o.children.push(ko);
      stack.push([k, ko]);
    }
  }
  return out;
}

/**
 * Callers and callees of the function (name, file) in a flame tree: {callers, callees,
 * total, self, found}. ``callers``'s root is the function and its children its callers
 * (then theirs); ``callees``'s root is the function and below it what it calls.
 */
export function sandwich(tree, name, file) {
  const callers = node(name, file, 0);
  const callees = node(name, file, 0);
  let self = 0;
  let found = 0;
  let open = 0;
  const path = [];
  const stack = [[tree, false]];
  while (stack.length) {
    const [n, leaving] = stack.pop();
    if (leaving) {
      path.pop();
      if (path.length && n.name === name && (n.file || "") === file) open--;
      continue;
    }
    if (path.length && n.name === name && (n.file || "") === file) {
      found++;
      callers.line = callees.line = n.line || callers.line;
      self += Math.max(0, n.value - (n.children || []).reduce((s, c) => s + c.value, 0));
      if (open === 0) {
        callees.value += n.value;
        mergeInto(callees, n);
        callers.value += n.value;
        let cur = callers;
        for (let i = path.length - 1; i >= 1; i--) {
          cur = child(cur, path[i]);
          cur.value += n.value;
        }
      }
      open++;
    }
    path.push(n);
    stack.push([n, true]);
    const kids = n.children || [];
    for (let k = kids.length - 1; k >= 0; k--) stack.push([kids[k], false]);
  }
  return { callers: finish(callers), callees: finish(callees), total: callees.value, self, found };
}

export class SandwichPanel {
  constructor(store, tooltip) {
    this.store = store;
    this.view = $("sandwich-view");
    this.latest = new Latest();
    const describe = (n, info) => [el("div", { class: "tt-title mono" }, n.name),
      n.file ? el("div", { class: "tt-muted mono" }, `${n.file}:${n.line}`) : null,
      el("div", { class: "tt-row" }, el("span", { class: "tt-label" }, "samples"), el("span", { class: "tt-value" }, fmtNum(info.value))),
      el("div", { class: "tt-row" }, el("span", { class: "tt-label" }, "of the function"),
        el("span", { class: "tt-value" }, fmtPct(info.value / info.total))),
      el("div", { class: "tt-muted" }, "shift+click: sandwich of this function")];
    const pick = (n) => this.store.set({ fn: [n.name, n.file || ""] }, "push");
    this.callers = new FlameGraph($("sandwich-callers"), tooltip, { describe, onPick: pick });
    this.callees = new FlameGraph($("sandwich-callees"), tooltip, { describe, onPick: pick });
    $("sandwich-fn").addEventListener("change", (e) => this.choose(e.target.value));
  }

  /** Pick the function typed or chosen in the box (by name; the hottest of that name wins). */
  choose(text) {
    const want = String(text || "").trim();
    const hit = (this.choices || []).find((h) => h.name === want) || (this.choices || []).find((h) => h.name.includes(want));
    if (hit) this.store.set({ fn: [hit.name, hit.file] }, "push");
  }

  async load() {
    const s = this.store.get();
    const [from, to] = profileRange(s);
    const signal = this.latest.next();
    this.view.dataset.state = "loading";
    try {
      const tree = await getJson("/api/flamegraph", { from, to, ...filterParams(s) }, signal);
      this.show(tree, s, [from, to]);
    } catch (err) {
      if (err.name === "AbortError") return;
      this.setStatus("error", `Could not load the profile: ${err.message}`);
    }
  }

  setStatus(state, message) {
    this.view.dataset.state = state;
    $("sandwich-empty").hidden = !message;
    setChildren($("sandwich-empty"), message || "");
    $("sandwich-body").hidden = Boolean(message);
  }

  show(tree, s, range) {
    this.choices = tree.total > 0 ? hottest(tree, 60) : [];
    setChildren($("sandwich-fns"), ...this.choices.map((h) => el("option", { value: h.name }, h.file)));
    setChildren($("sandwich-range"), `${fmtTime(range[0], true)} – ${fmtTime(range[1])}`);
    const fn = s.fn || (this.choices[0] ? [this.choices[0].name, this.choices[0].file] : null);
    const input = $("sandwich-fn");
    if (document.activeElement !== input) input.value = fn ? fn[0] : "";
    if (!(tree.total > 0)) return this.setStatus("empty", "No samples in this range: nothing to take apart.");
    const cut = sandwich(tree, fn[0], fn[1]);
    this.view.dataset.fn = JSON.stringify(fn);
    if (!cut.found) return this.setStatus("empty", `${fn[0]} has no samples in this range (with these filters).`);
    this.setStatus("ready", null);
    this.view.dataset.total = String(cut.total);
    this.view.dataset.self = String(cut.self);
    setChildren($("sandwich-head"), el("strong", { class: "mono" }, fn[0]), el("span", { class: "muted mono" }, ` ${fn[1]}`),
      el("span", {}, ` · total ${fmtPct(cut.total / tree.total)} · self ${fmtPct(cut.self / tree.total)} of ${fmtNum(tree.total)} samples`),
      el("span", { class: "muted" }, ` · called from ${cut.callers.children.length} place${cut.callers.children.length === 1 ? "" : "s"}`));
    this.callers.setTree(cut.callers);
    this.callers.setOrientation("flame");
    this.callees.setTree(cut.callees);
    this.callees.setOrientation("icicle");
    return null;
  }
}
