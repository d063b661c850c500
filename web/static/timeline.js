// The timeline: every GPU's class band and activity, the engine's flow, and the findings, on
// one shared time axis. Two stacked canvases: the base (redrawn when data or range change)
// and an overlay for the crosshair, the selection and the drag (redrawn on every move).
//
// Drag selects a range, shift+drag pans, ctrl/cmd+wheel zooms around the pointer,
// double-click zooms out, a click on a class band selects that stretch, a click on a
// finding opens it.
import { SIGNAL_COLORS } from "./colors.js";
import { fitCanvas, fmtLatency, fmtNum } from "./dom.js";
import { ACTIVITY, describeAt, ROOF } from "./timeline_tips.js";
import * as tr from "./tracks.js";

const GUTTER = 124;
const RIGHT = 14;

export class Timeline {
  constructor(root, tooltip, handlers) {
    this.root = root;
    this.tooltip = tooltip;
    this.handlers = handlers;
    this.base = root.querySelector("canvas.base");
    this.overlay = root.querySelector("canvas.overlay");
    this.data = null;
    this.events = [];
    this.view = [0, 1];
    this.marks = { sel: null, base: null, eventId: null };
    this.drag = null;
    this.hoverX = null;
    this.overlay.addEventListener("pointerdown", (e) => this.onDown(e));
    this.overlay.addEventListener("pointermove", (e) => this.onMove(e));
    this.overlay.addEventListener("pointerup", (e) => this.onUp(e));
    this.overlay.addEventListener("pointerleave", () => this.onLeave());
    this.overlay.addEventListener("dblclick", (e) => this.onDouble(e));
    this.overlay.addEventListener("wheel", (e) => this.onWheel(e), { passive: false });
    new ResizeObserver(() => this.render()).observe(root);
  }

  setData(data, events) {
    this.data = data;
    this.events = events;
    this.placed = tr.placeEvents(events);
    this.render();
  }

  setView(from, to) {
    this.view = [from, to];
    this.render();
  }

  /** Whether the user is dragging (selecting or panning) right now. */
  isDragging() {
    return Boolean(this.drag);
  }

  setMarks(marks) {
    this.marks = { ...this.marks, ...marks };
    this.drawOverlay();
  }

  scale() {
    const width = this.root.clientWidth;
    const [from, to] = this.view;
    const left = GUTTER;
    const right = Math.max(left + 10, width - RIGHT);
    const k = (right - left) / (to - from);
    return { from, to, left, right, width, x: (t) => left + (t - from) * k, t: (x) => from + (x - left) / k };
  }

  layout() {
    const tracks = [];
    let y = 4;
    const add = (track, gapAfter) => {
      tracks.push({ ...track, y });
      y += track.h + gapAfter;
    };
    const d = this.data;
    for (const g of d ? d.gpus : []) {
      add({ kind: "gpu", gpu: g.gpu, h: 18 }, 2);
      add({ kind: "classes", gpu: g.gpu, h: 14 }, 6);
      const roof = ROOF.some(([s]) => g.roof && g.roof[s]);
      add({ kind: "activity", gpu: g.gpu, h: 64 }, roof ? 6 : 14);
      if (roof) add({ kind: "roof", gpu: g.gpu, h: 40 }, 14);
    }
    const eng = d ? d.engine : {};
    if (Object.keys(eng).length) {
      add({ kind: "engine", h: 18 }, 2);
      if (eng.generation_tokens_per_s) add({ kind: "tokens", h: 44 }, 8);
      if (eng.requests_running || eng.requests_waiting) add({ kind: "requests", h: 44 }, 8);
      if (eng.ttft_seconds_p95) add({ kind: "ttft", h: 36 }, 8);
    }
    add({ kind: "events", h: (this.placed ? this.placed.lanes : 1) * 12 + 4 }, 4);
    add({ kind: "axis", h: 22 }, 0);
    return { tracks, height: y };
  }

  render() {
    const width = this.root.clientWidth;
    if (!width) return;
    const { tracks, height } = this.layout();
    this.tracks = tracks;
    const sc = this.scale();
    const ctx = fitCanvas(this.base, width, height);
    fitCanvas(this.overlay, width, height);
    ctx.clearRect(0, 0, width, height);
    const gridTop = tracks.length ? tracks[0].y : 0;
    const axis = tracks[tracks.length - 1];
    tr.drawGrid(ctx, sc, gridTop, axis.y);
    this.eventHits = [];
    for (const t of tracks) this.drawTrack(ctx, sc, t);
    this.root.dataset.viewFrom = String(this.view[0]);
    this.root.dataset.viewTo = String(this.view[1]);
    this.root.dataset.plotLeft = String(sc.left);
    this.root.dataset.plotRight = String(sc.right);
    this.root.dataset.layout = JSON.stringify(tracks.map(({ kind, gpu, y, h }) => ({ kind, gpu, y, h })));
    this.drawOverlay();
  }

  gpuData(gpu) {
    return this.data.gpus.find((g) => g.gpu === gpu);
  }

  drawTrack(ctx, sc, t) {
    const d = this.data;
    const eng = d ? d.engine : {};
    const engGap = d ? d.engine_step * 2.5 : 1;
    switch (t.kind) {
      case "gpu": {
        const g = this.gpuData(t.gpu);
        ctx.font = tr.LABEL_FONT;
        ctx.fillStyle = "#1F2328";
        ctx.textBaseline = "middle";
        ctx.fillText(`GPU ${g.gpu}${g.name ? ` · ${g.name}` : ""}`, 8, t.y + t.h / 2, sc.width - 340);
        this.drawKey(ctx, sc, t, [...ACTIVITY.filter(([s]) => g.activity[s]).map(([s, label, dash]) => [label, SIGNAL_COLORS[s], dash]),
          ...ROOF.filter(([s]) => g.roof && g.roof[s]).map(([s, label]) => [label, SIGNAL_COLORS[s], null])]);
        break;
      }
      case "classes":
        tr.drawLabel(ctx, t, "class");
        tr.drawClassBand(ctx, sc, t, this.gpuData(t.gpu).runs);
        break;
      case "activity": {
        const g = this.gpuData(t.gpu);
        tr.drawLabel(ctx, t, "GPU activity", "% of peak");
        tr.drawFrame(ctx, sc, t, "100");
        const gap = d.gpu_step * 2.5;
        for (const [s, , dash] of [...ACTIVITY].reverse()) {
          tr.drawSeries(ctx, sc, t, g.activity[s], { color: SIGNAL_COLORS[s], max: 100, gap, dash, width: dash ? 1.2 : 1.6 });
        }
        if (!Object.keys(g.activity).length) this.noData(ctx, sc, t, "no GPU samples in this range");
        break;
      }
      case "roof": {
        // next to the GPM DRAM bandwidth above: what the engine says it achieved of the peaks
        const g = this.gpuData(t.gpu);
        const max = Math.min(1, tr.niceMax(ROOF.flatMap(([s]) => (g.roof[s] || []).map((p) => p[1]))));
        tr.drawLabel(ctx, t, "MFU · MBU", "engine, of peak");
        tr.drawFrame(ctx, sc, t, `${+(max * 100).toPrecision(3)}%`);
        for (const [s] of ROOF) {
          tr.drawSeries(ctx, sc, t, g.roof[s], { color: SIGNAL_COLORS[s], max, gap: d.roof_step * 2.5, width: 1.6 });
        }
        break;
      }
      case "engine":
        ctx.font = tr.LABEL_FONT;
        ctx.fillStyle = "#1F2328";
        ctx.textBaseline = "middle";
        ctx.fillText("Engine", 8, t.y + t.h / 2);
        this.drawKey(ctx, sc, t, [["running", SIGNAL_COLORS.requests_running, null],
          ["waiting", SIGNAL_COLORS.requests_waiting, null]].filter(() => eng.requests_running || eng.requests_waiting));
        break;
      case "tokens": {
        const max = tr.niceMax(eng.generation_tokens_per_s.map((p) => p[1]));
        tr.drawLabel(ctx, t, "tokens/s", "generated");
        tr.drawFrame(ctx, sc, t, fmtNum(max));
        tr.drawSeries(ctx, sc, t, eng.generation_tokens_per_s, { color: SIGNAL_COLORS.generation_tokens_per_s, max, gap: engGap, fill: true });
        break;
      }
      case "requests": {
        const all = [...(eng.requests_running || []), ...(eng.requests_waiting || [])].map((p) => p[1]);
        const max = tr.niceMax(all);
        tr.drawLabel(ctx, t, "requests", "running · waiting");
        tr.drawFrame(ctx, sc, t, fmtNum(max));
        tr.drawSeries(ctx, sc, t, eng.requests_waiting, { color: SIGNAL_COLORS.requests_waiting, max, gap: engGap });
        tr.drawSeries(ctx, sc, t, eng.requests_running, { color: SIGNAL_COLORS.requests_running, max, gap: engGap });
        break;
      }
      case "ttft": {
        const max = tr.niceMax(eng.ttft_seconds_p95.map((p) => p[1]));
        tr.drawLabel(ctx, t, "TTFT p95", "time to first token");
        tr.drawFrame(ctx, sc, t, fmtLatency(max));
        tr.drawSeries(ctx, sc, t, eng.ttft_seconds_p95, { color: SIGNAL_COLORS.ttft_seconds_p95, max, gap: engGap });
        break;
      }
      case "events":
        tr.drawLabel(ctx, t, "findings");
        this.eventHits = tr.drawEvents(ctx, sc, t, this.placed ? this.placed.placed : [], this.marks.eventId);
        if (!this.eventHits.length) this.noData(ctx, sc, t, "none in this range");
        break;
      case "axis":
        tr.drawAxis(ctx, sc, t.y);
        break;
      default:
        break;
    }
  }

  drawKey(ctx, sc, t, entries) {
    ctx.font = tr.SMALL_FONT;
    ctx.textBaseline = "middle";
    let x = sc.right;
    for (const [label, color, dash] of [...entries].reverse()) {
      const w = ctx.measureText(label).width;
      x -= w;
      ctx.fillStyle = "#4B5563";
      ctx.fillText(label, x, t.y + t.h / 2);
      x -= 20;
      ctx.strokeStyle = color;
      ctx.lineWidth = 2;
      ctx.setLineDash(dash || []);
      ctx.beginPath();
      ctx.moveTo(x, t.y + t.h / 2);
      ctx.lineTo(x + 14, t.y + t.h / 2);
      ctx.stroke();
      ctx.setLineDash([]);
      x -= 12;
    }
  }

  noData(ctx, sc, t, text) {
    ctx.font = tr.SMALL_FONT;
    ctx.fillStyle = "#9AA1AB";
    ctx.textBaseline = "middle";
    ctx.fillText(text, sc.left + 8, t.y + t.h / 2);
  }

  drawOverlay() {
    if (!this.tracks) return;
    const sc = this.scale();
    const ctx = this.overlay.getContext("2d");
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const height = this.overlay.height / dpr;
    ctx.clearRect(0, 0, sc.width, height);
    const bottom = this.tracks[this.tracks.length - 1].y;
    const shade = (range, fill, stroke, label) => {
      if (!range || range[1] < sc.from || range[0] > sc.to) return;
      const x0 = Math.max(sc.left, sc.x(range[0]));
      const x1 = Math.min(sc.right, sc.x(range[1]));
      ctx.fillStyle = fill;
      ctx.fillRect(x0, 0, Math.max(1, x1 - x0), bottom);
      ctx.strokeStyle = stroke;
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(Math.round(x0) + 0.5, 0);
      ctx.lineTo(Math.round(x0) + 0.5, bottom);
      ctx.moveTo(Math.round(x1) - 0.5, 0);
      ctx.lineTo(Math.round(x1) - 0.5, bottom);
      ctx.stroke();
      if (label && x1 - x0 > 40) {
        ctx.font = tr.SMALL_FONT;
        ctx.fillStyle = stroke;
        ctx.textBaseline = "bottom";
        ctx.fillText(label, x0 + 3, bottom - 1);
      }
    };
    shade(this.marks.base, "rgba(107,114,128,0.12)", "#6B7280", "baseline");
    const sel = this.drag && this.drag.mode === "select" ? this.drag.range : this.marks.sel;
    shade(sel, "rgba(0,114,178,0.12)", "#0072B2", null);
    if (this.hoverX !== null && !this.drag) {
      ctx.strokeStyle = "rgba(31,35,40,0.45)";
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(Math.round(this.hoverX) + 0.5, 0);
      ctx.lineTo(Math.round(this.hoverX) + 0.5, bottom);
      ctx.stroke();
    }
  }

  local(e) {
    const box = this.overlay.getBoundingClientRect();
    return [e.clientX - box.left, e.clientY - box.top];
  }

  trackAt(y) {
    return (this.tracks || []).find((t) => y >= t.y - 2 && y < t.y + t.h + 2) || null;
  }

  onDown(e) {
    if (e.button !== 0 || !this.data) return;
    const [x] = this.local(e);
    const sc = this.scale();
    if (x < sc.left) return;
    this.overlay.setPointerCapture(e.pointerId);
    this.drag = { mode: e.shiftKey ? "pan" : "select", x0: x, view0: [...this.view], range: null, moved: false };
    this.tooltip.hide();
  }

  onMove(e) {
    const [x, y] = this.local(e);
    const sc = this.scale();
    if (this.drag) {
      const dx = x - this.drag.x0;
      if (Math.abs(dx) > 3) this.drag.moved = true;
      if (this.drag.mode === "pan") {
        const dt = (dx / (sc.right - sc.left)) * (this.drag.view0[1] - this.drag.view0[0]);
        this.setView(this.drag.view0[0] - dt, this.drag.view0[1] - dt);
        this.handlers.onView(this.view, false);
      } else if (this.drag.moved) {
        const a = sc.t(Math.max(sc.left, Math.min(sc.right, this.drag.x0)));
        const b = sc.t(Math.max(sc.left, Math.min(sc.right, x)));
        this.drag.range = [Math.min(a, b), Math.max(a, b)];
        this.drawOverlay();
      }
      return;
    }
    this.hoverX = x >= sc.left && x <= sc.right ? x : null;
    this.drawOverlay();
    this.overlay.classList.toggle("pointing", Boolean(this.eventAt(x, y)));
    if (this.hoverX === null || !this.data) {
      this.tooltip.hide();
      return;
    }
    const content = this.describe(sc.t(x), this.trackAt(y), x, y);
    if (content.length) this.tooltip.show(e.clientX, e.clientY, ...content);
    else this.tooltip.hide();
  }

  onUp(e) {
    const drag = this.drag;
    this.drag = null;
    if (!drag) return;
    const [x, y] = this.local(e);
    if (drag.mode === "pan") {
      if (drag.moved) this.handlers.onView(this.view, true);
    } else if (drag.moved && drag.range && drag.range[1] - drag.range[0] > 0) {
      this.handlers.onSelect(drag.range);
    } else {
      this.onClick(x, y);
    }
    this.drawOverlay();
  }

  onClick(x, y) {
    const hit = this.eventAt(x, y);
    if (hit) {
      this.handlers.onEvent(hit.event);
      return;
    }
    const track = this.trackAt(y);
    if (track && track.kind === "classes") {
      const t = this.scale().t(x);
      const run = this.gpuData(track.gpu).runs.find(([a, b]) => t >= a && t < b);
      if (run) this.handlers.onSelect([run[0], run[1]]);
    }
  }

  eventAt(x, y) {
    return (this.eventHits || []).find((h) => x >= h.x0 - 2 && x <= h.x1 + 2 && y >= h.y - 3 && y <= h.y + h.h + 3) || null;
  }

  onLeave() {
    this.hoverX = null;
    this.tooltip.hide();
    this.drawOverlay();
  }

  onDouble(e) {
    e.preventDefault();
    this.zoom(2, this.local(e)[0]);
  }

  onWheel(e) {
    if (!(e.ctrlKey || e.metaKey)) return;
    e.preventDefault();
    this.zoom(e.deltaY > 0 ? 1.25 : 0.8, this.local(e)[0]);
  }

  /** Zoom by ``factor`` (>1 out) around pixel ``x``. */
  zoom(factor, x) {
    const sc = this.scale();
    const center = sc.t(Math.max(sc.left, Math.min(sc.right, x)));
    const [from, to] = this.view;
    const span = Math.max(5, (to - from) * factor);
    const ratio = (center - from) / (to - from);
    this.setView(center - span * ratio, center - span * ratio + span);
    this.handlers.onView(this.view, true);
  }

  describe(t, track, x, y) {
    return describeAt(this, t, track, x, y);
  }
}
