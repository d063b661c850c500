// A flame graph on one canvas: fast with tens of thousands of frames.
//
// The tree ({name, value, file, line, children}) is flattened once into typed arrays in
// depth-first order, so a frame's subtree is the contiguous index range [i, next[i]) and a
// frame narrower than half a pixel is skipped together with everything above it. Hit
// testing is a binary search in the frames of one depth. Names are drawn with fillText:
// canvas text is never parsed as markup, whatever a frame is called.
import { fitCanvas } from "./dom.js";
import { frameColor, SEARCH_DIM, SEARCH_MATCH, textOn } from "./colors.js";

const FONT = "11px ui-monospace, SFMono-Regular, Menlo, Consolas, 'DejaVu Sans Mono', monospace";
const MIN_PX = 0.5;
const LABEL_MIN_PX = 24;

export class FlameGraph {
  /**
   * @param canvas   the canvas to draw on (its parent's width is the graph's width)
   * @param tooltip  a Tooltip
   * @param options  describe(node, {value, total, parentValue}) -> tooltip children;
   *                 colorFor(node) -> fill colour; onFocus(pathOfNames); onPick(node) on a
   *                 shift+click; keepColorOnMatch: search dims the rest but leaves matches
   *                 their own colour (the diff's); rowHeight in CSS px
   */
  constructor(canvas, tooltip, options = {}) {
    this.canvas = canvas;
    this.tooltip = tooltip;
    this.describe = options.describe || (() => []);
    this.colorFor = options.colorFor || ((node) => frameColor(node.name, node.file));
    this.onFocus = options.onFocus || (() => {});
    this.onPick = options.onPick || null;
    this.keepColorOnMatch = Boolean(options.keepColorOnMatch);
    this.rowH = options.rowHeight || 18;
    this.orientation = "icicle";
    this.n = 0;
    this.focus = 0;
    this.hover = -1;
    this.searching = false;
    this.textColors = new Map();
    canvas.addEventListener("mousemove", (e) => this.onMove(e));
    canvas.addEventListener("mouseleave", () => this.onLeave());
    canvas.addEventListener("click", (e) => this.onClick(e));
    new ResizeObserver(() => { if (this.n) this.render(); }).observe(canvas.parentElement);
  }

  /** Flatten ``tree``; returns the time it took in ms. Zero-value frames are left out. */
  setTree(tree) {
    const t0 = performance.now();
    const nodes = [];
    const parent = [];
    const depth = [];
    const x = [];
    const stack = [[tree, -1, 0, 0]];
    while (stack.length) {
      const [node, p, x0, d] = stack.pop();
      const i = nodes.length;
      nodes.push(node);
      parent.push(p);
      depth.push(d);
      x.push(x0);
      const kids = node.children || [];
      let offset = x0;
      const queued = [];
      for (const child of kids) {
        if (!(child.value > 0)) continue;
        queued.push([child, i, offset, d + 1]);
        offset += child.value;
      }
      for (let k = queued.length - 1; k >= 0; k--) stack.push(queued[k]);
    }
    const n = nodes.length;
    this.nodes = nodes;
    this.n = n;
    this.parent = Int32Array.from(parent);
    this.depth = Uint16Array.from(depth);
    this.x = Float64Array.from(x);
    this.value = Float64Array.from(nodes, (node) => node.value);
    const size = new Int32Array(n).fill(1);
    for (let i = n - 1; i > 0; i--) size[this.parent[i]] += size[i];
    this.next = new Int32Array(n);
    for (let i = 0; i < n; i++) this.next[i] = i + size[i];
    let maxDepth = 0;
    for (let i = 0; i < n; i++) if (this.depth[i] > maxDepth) maxDepth = this.depth[i];
    this.maxDepth = maxDepth;
    this.byDepth = Array.from({ length: maxDepth + 1 }, () => []);
    for (let i = 0; i < n; i++) this.byDepth[this.depth[i]].push(i);
    this.colors = new Array(n);   // filled when a frame is first drawn: most are too narrow to be
    this.matched = new Uint8Array(n);
    this.searching = false;
    this.focus = 0;
    this.hover = -1;
    this.updatePath();
    this.layoutMs = performance.now() - t0;
    return this.layoutMs;
  }

  get total() {
    return this.n ? this.value[0] : 0;
  }

  updatePath() {
    this.onPath = new Uint8Array(this.n);
    this.path = [];
    for (let i = this.focus; i >= 0; i = this.parent[i]) {
      this.onPath[i] = 1;
      this.path.unshift(i);
    }
  }

  /** The focused frame's node (the tree's root when nothing is zoomed). */
  focusNode() {
    return this.n ? this.nodes[this.focus] : null;
  }

  /** Names from the root's child down to the focused frame. */
  focusNames() {
    return this.path.slice(1).map((i) => this.nodes[i].name);
  }

  focusChain() {
    return this.path.map((i) => ({ index: i, name: this.nodes[i].name }));
  }

  /** Zoom to the frame reached by ``names`` from the root (as far as it exists). */
  setFocusNames(names) {
    let i = 0;
    for (const name of names || []) {
      let found = -1;
      for (let c = i + 1; c < this.next[i]; c = this.next[c]) {
        if (this.nodes[c].name === name) {
          found = c;
          break;
        }
      }
      if (found < 0) break;
      i = found;
    }
    this.setFocus(i, false);
  }

  setFocus(i, notify = true) {
    this.focus = i >= 0 && i < this.n ? i : 0;
    this.updatePath();
    this.render();
    if (notify) this.onFocus(this.focusNames());
  }

  setOrientation(orientation) {
    this.orientation = orientation === "flame" ? "flame" : "icicle";
    if (this.n) this.render();
  }

  /**
   * Highlight frames whose function or file contains ``text`` (case-insensitive).
   * Returns {frames, value, share, outer}: matched frames, the value and share of the total
   * under them (a match inside another match is counted once), and the outermost matched
   * nodes (whose other fields a caller may sum).
   */
  setSearch(text) {
    const q = (text || "").trim().toLowerCase();
    this.searching = q.length > 0;
    this.matched.fill(0);
    let frames = 0;
    let value = 0;
    const outer = [];
    if (this.searching) {
      let coveredUntil = 0;
      for (let i = 1; i < this.n; i++) {
        const node = this.nodes[i];
        if (String(node.name).toLowerCase().includes(q) || String(node.file || "").toLowerCase().includes(q)) {
          this.matched[i] = 1;
          frames++;
          if (i >= coveredUntil) {
            value += this.value[i];
            outer.push(this.nodes[i]);
            coveredUntil = this.next[i];
          }
        }
      }
    }
    this.render();
    return { frames, value, share: this.total ? value / this.total : 0, outer };
  }

  rowY(d) {
    return this.orientation === "icicle" ? d * this.rowH : (this.maxDepth - d) * this.rowH;
  }

  /** Draw; returns the time it took in ms. */
  render() {
    const t0 = performance.now();
    const width = Math.max(200, this.canvas.parentElement.clientWidth);
    const height = this.n ? (this.maxDepth + 1) * this.rowH : this.rowH;
    const ctx = fitCanvas(this.canvas, width, height);
    ctx.clearRect(0, 0, width, height);
    if (!this.n) return 0;
    ctx.font = FONT;
    ctx.textBaseline = "middle";
    const charW = ctx.measureText("M").width || 7;
    const f = this.focus;
    const fx = this.x[f];
    const fd = this.depth[f];
    const scale = width / this.value[f];
    const h = this.rowH - 1;
    let i = 0;
    while (i < this.n) {
      const d = this.depth[i];
      let px;
      let pw;
      if (d < fd || (d === fd && i !== f)) {
        if (!this.onPath[i]) {
          i = this.next[i];
          continue;
        }
        px = 0;
        pw = width;
      } else {
        px = (this.x[i] - fx) * scale;
        pw = this.value[i] * scale;
        if (pw < MIN_PX) {
          i = this.next[i];
          continue;
        }
      }
      const y = this.rowY(d);
      const matchFill = this.keepColorOnMatch ? this.color(i) : SEARCH_MATCH;
      const fill = d < fd ? SEARCH_DIM : this.searching ? (this.matched[i] ? matchFill : SEARCH_DIM) : this.color(i);
      ctx.fillStyle = fill;
      ctx.fillRect(px, y, pw >= 2 ? pw - 1 : pw, h);
      if (pw >= LABEL_MIN_PX) this.label(ctx, i, px, y, pw, fill, charW);
      i++;
    }
    if (this.hover >= 0) this.outline(ctx, this.hover, width, scale, fx, fd);
    this.renderMs = performance.now() - t0;
    this.canvas.dataset.nodes = String(this.n);
    this.canvas.dataset.renderMs = this.renderMs.toFixed(2);
    this.canvas.dataset.layoutMs = (this.layoutMs || 0).toFixed(2);
    return this.renderMs;
  }

  color(i) {
    let c = this.colors[i];
    if (c === undefined) c = this.colors[i] = this.colorFor(this.nodes[i]);
    return c;
  }

  label(ctx, i, px, y, pw, fill, charW) {
    let color = this.textColors.get(fill);
    if (!color) {
      color = textOn(fill);
      this.textColors.set(fill, color);
    }
    const room = pw - 6;
    const name = String(this.nodes[i].name);
    const fits = Math.floor(room / charW);
    const text = name.length <= fits ? name : `${name.slice(0, Math.max(0, fits - 1))}…`;
    if (!text || text === "…") return;
    ctx.fillStyle = color;
    ctx.fillText(text, px + 3, y + this.rowH / 2, room);
  }

  outline(ctx, i, width, scale, fx, fd) {
    const d = this.depth[i];
    const px = d < fd ? 0 : (this.x[i] - fx) * scale;
    const pw = d < fd ? width : this.value[i] * scale;
    ctx.strokeStyle = "#1F2328";
    ctx.lineWidth = 1.5;
    ctx.strokeRect(px + 0.75, this.rowY(d) + 0.75, Math.max(1, pw - 2.5), this.rowH - 2.5);
  }

  /** The frame under CSS pixel (px, py) of the canvas, or -1. */
  hit(px, py) {
    if (!this.n) return -1;
    const row = Math.floor(py / this.rowH);
    const d = this.orientation === "icicle" ? row : this.maxDepth - row;
    if (d < 0 || d > this.maxDepth) return -1;
    const f = this.focus;
    const fd = this.depth[f];
    if (d <= fd) return this.path[d];
    const width = this.canvas.clientWidth;
    const scale = width / this.value[f];
    const v = this.x[f] + px / scale;
    const list = this.byDepth[d];
    let lo = 0;
    let hi = list.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.x[list[mid]] <= v) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    if (found < 0) return -1;
    const i = list[found];
    if (v >= this.x[i] + this.value[i] || i < f || i >= this.next[f]) return -1;
    return this.value[i] * scale >= MIN_PX ? i : -1;
  }

  pointer(e) {
    const box = this.canvas.getBoundingClientRect();
    return this.hit(e.clientX - box.left, e.clientY - box.top);
  }

  onMove(e) {
    const i = this.pointer(e);
    if (i !== this.hover) {
      this.hover = i;
      this.render();
    }
    if (i < 0) {
      this.tooltip.hide();
      this.canvas.classList.remove("pointing");
      return;
    }
    this.canvas.classList.add("pointing");
    const p = this.parent[i];
    const info = { value: this.value[i], total: this.total, parentValue: p >= 0 ? this.value[p] : this.value[i] };
    this.tooltip.show(e.clientX, e.clientY, ...this.describe(this.nodes[i], info));
  }

  onLeave() {
    this.tooltip.hide();
    if (this.hover >= 0) {
      this.hover = -1;
      this.render();
    }
  }

  onClick(e) {
    const i = this.pointer(e);
    if (i < 0) return;
    if (e.shiftKey && this.onPick && i !== 0) {
      this.onPick(this.nodes[i]);
      return;
    }
    this.setFocus(i === this.focus && i !== 0 ? this.parent[i] : i);
  }

  /** The canvas as a PNG blob. */
  toBlob() {
    return new Promise((resolve) => this.canvas.toBlob(resolve, "image/png"));
  }
}
