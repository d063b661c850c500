// Colours. Classes use the Okabe-Ito palette (distinguishable with the common forms of colour
// blindness); diffs use a blue/red diverging scale whose intensity grows with the change.

export const CLASS_COLORS = {
  compute_bound: "#009E73",   // bluish green: the GPU does useful math
  memory_bound: "#56B4E9",    // sky blue: busy, bound by memory bandwidth
  host_bound: "#D55E00",      // vermillion: starving for the CPU
  launch_bound: "#E69F00",    // orange: kernels too small, launches dominate
  latency_bound: "#0072B2",   // blue: busy, but near neither the compute nor the bandwidth roof
  starting: "#F0E442",        // yellow: engine start-up (imports, compilation, graph capture)
  stopping: "#E8E2B0",        // pale yellow: engine shutting down
  stall: "#CC79A7",           // reddish purple: neither side busy with work in flight
  idle: "#C7CCD1",            // light grey: nothing to do
  unknown: "#8A9199",         // dark grey: not enough data to tell
};

export const CLASS_ORDER = ["host_bound", "launch_bound", "stall", "latency_bound", "memory_bound", "compute_bound",
                            "starting", "stopping", "idle", "unknown"];

export function classColor(klass) {
  return CLASS_COLORS[klass] || CLASS_COLORS.unknown;
}

export const SIGNAL_COLORS = {
  sm_util: "#0072B2",
  tensor_util: "#009E73",
  dram_bw_util: "#E69F00",
  util_gpu: "#6B7280",
  generation_tokens_per_s: "#0072B2",
  requests_running: "#0072B2",
  requests_waiting: "#D55E00",
  ttft_seconds_p95: "#CC79A7",
  // the engine's own roofline ratios: the hue of the GPM signal each compares with
  mfu: "#009E73",
  mbu: "#E69F00",
};

export const EVENT_COLORS = {
  cpu_gpu_gap: "#D55E00",
  util_throughput_mismatch: "#CC79A7",
  saturation: "#E69F00",
  regression: "#0072B2",
};

export function eventColor(kind) {
  return EVENT_COLORS[kind] || "#6B7280";
}

// Flame graph frames: one soft hue per package (first path component), so frames of one
// library read as one family; lightness varies a little per function to separate neighbours.
const FRAME_HUES = [28, 205, 160, 48, 220, 12, 320, 85, 265, 185];

function hash(text) {
  let h = 2166136261;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 16777619);
  }
  return h >>> 0;
}

function packageOf(file) {
  if (!file) return "";
  const clean = file.replace(/^.*(?:site-packages|dist-packages)\//, "");
  const slash = clean.indexOf("/");
  return slash > 0 ? clean.slice(0, slash) : clean.replace(/\.py$/, "");
}

const fileHues = new Map();

export function frameColor(name, file) {
  if (!file) return "#D9DCE1";
  let base = fileHues.get(file);
  if (base === undefined) {
    base = FRAME_HUES[hash(packageOf(file)) % FRAME_HUES.length];
    fileHues.set(file, base);
  }
  const h = hash(name);
  const hue = base + (h % 25) - 12;
  const light = 66 + ((h >>> 8) % 17);
  return `hsl(${(hue + 360) % 360} 62% ${light}%)`;
}

export const SEARCH_MATCH = "#CC79A7";
export const SEARCH_DIM = "#E7E9EC";

// Diverging scale for diffs: RdBu end points, blended from a neutral grey.
const NEUTRAL = [238, 239, 241];
const GREW = [178, 24, 43];
const SHRANK = [33, 102, 172];

/** Colour for a change in share ``delta`` (fraction) given the scale's full-intensity ``scale``. */
export function diffColor(delta, scale) {
  const t = Math.min(1, Math.sqrt(Math.abs(delta) / (scale || 1)));
  const end = delta >= 0 ? GREW : SHRANK;
  const rgb = NEUTRAL.map((n, i) => Math.round(n + (end[i] - n) * t));
  return `rgb(${rgb[0]} ${rgb[1]} ${rgb[2]})`;
}

/** Dark or light text for a background colour given as rgb(...)/hsl(...)/#rrggbb. */
export function textOn(color) {
  const rgb = parseColor(color);
  if (!rgb) return "#1F2328";
  const lum = (0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]) / 255;
  return lum < 0.55 ? "#FFFFFF" : "#1F2328";
}

function parseColor(color) {
  let m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(color);
  if (m) return m.slice(1).map((x) => parseInt(x, 16));
  m = /^rgb\((\d+) (\d+) (\d+)\)$/.exec(color);
  if (m) return m.slice(1).map(Number);
  m = /^hsl\((\d+) (\d+)% (\d+)%\)$/.exec(color);
  if (m) return hslToRgb(Number(m[1]), Number(m[2]) / 100, Number(m[3]) / 100);
  return null;
}

function hslToRgb(h, s, l) {
  const k = (n) => (n + h / 30) % 12;
  const a = s * Math.min(l, 1 - l);
  const f = (n) => l - a * Math.max(-1, Math.min(k(n) - 3, Math.min(9 - k(n), 1)));
  return [f(0), f(8), f(4)].map((v) => Math.round(v * 255));
}
