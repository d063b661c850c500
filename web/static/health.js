// The agent's health in the page: problems with their fix (a collector failing, an engine
// endpoint down, py-spy unable to attach), every collector, every engine endpoint, the
// discovered processes with their roles and GPUs, and the storage counters. From
// /api/health, /api/processes and /api/engines; the header's pill says "healthy" or how many
// problems, and opens this tab.
import { getJson } from "./api.js";
import { $, el, fmtDur, fmtNum, fmtTime, setChildren } from "./dom.js";
import { bytes } from "./evidence.js";

const ROLE_WORDS = {
  api_server: "API server", engine_core: "engine core", worker: "worker", engine: "engine",
  other: "child of an engine", helper: "helper (never sampled)", other_gpu_process: "other GPU process (neighbour)",
};

export function roleWords(role) {
  return ROLE_WORDS[role] || String(role || "?").replace(/_/g, " ");
}

const LOG_FIX = "the agent's log says more: journalctl -u infersight (or the terminal running it)";

/** Every problem of a health answer: [{what, detail, fix}], worst first. */
export function problemsOf(health, endpoints) {
  const out = [];
  const collectors = health.collectors || {};
  for (const [name, st] of Object.entries(collectors)) {
    if (st.ok === false) out.push({ what: `Collector ${name} is failing`, detail: st.last_error || "", fix: LOG_FIX });
  }
  for (const [name, st] of Object.entries(components(health))) {
    if (st.ok === false) out.push({ what: `The ${name} is failing`, detail: st.last_error || "", fix: LOG_FIX });
  }
  for (const t of health.targets || []) {
    if (t.exited_at) continue;
    if (t.last_error) {
      const permission = t.last_error_kind === "permission";
      out.push({ what: `py-spy cannot ${permission ? "attach to" : "sample"} pid ${t.pid} (${roleWords(t.role)})`,
        detail: t.last_error, pid: t.pid,
        fix: permission ? "grant CAP_SYS_PTRACE (the shipped systemd unit does) or run the agent as the engine's user; "
          + "infersight check says what is missing" : "" });
    } else if (/no py-spy/.test(t.state || "")) {
      out.push({ what: `pid ${t.pid} is not sampled: py-spy is missing`, detail: t.state, pid: t.pid,
        fix: "pip install py-spy in the agent's environment, or set collectors.stacks.pyspy_path" });
    }
  }
  for (const ep of endpoints || []) {
    if (ep.ok) continue;
    out.push({ what: `Engine metrics endpoint ${ep.url} is down`, detail: ep.last_error || "no answer yet",
      fix: "check that the engine serves Prometheus text there, or fix collectors.engines.endpoints" });
  }
  const known = new Set(out.map((p) => p.detail));
  for (const text of health.problems || []) {
    if (![...known].some((d) => d && text.includes(d))) out.push({ what: text, detail: "", fix: LOG_FIX });
  }
  return out;
}

/** The agent's other parts that report their own health (analysis, alerts, exporters):
 * the answer's top-level objects with an ``ok``. */
export function components(health) {
  const out = {};
  for (const [name, value] of Object.entries(health || {})) {
    if (value && typeof value === "object" && !Array.isArray(value) && "ok" in value && name !== "storage") out[name] = value;
  }
  return out;
}

function ago(t) {
  return t ? `${fmtDur(Math.max(0, Date.now() / 1000 - t))} ago` : "never";
}

/** A table; a header written "#name" is a number column (right-aligned). */
function table(cls, headers, rows) {
  return el("table", { class: `table health-table ${cls}` },
    el("thead", {}, el("tr", {}, ...headers.map((h) => (h.startsWith("#") ? el("th", { class: "num" }, h.slice(1)) : el("th", {}, h))))),
    el("tbody", {}, ...(rows.length ? rows : [el("tr", {}, el("td", { colspan: String(headers.length), class: "muted" }, "none"))])));
}

export class HealthPanel {
  constructor(handlers) {
    this.handlers = handlers;
    this.view = $("health-view");
    this.data = null;
    $("health-pill").addEventListener("click", () => handlers.open());
  }

  /** Fetch health, processes and endpoints; render the pill (and the tab when shown). */
  async load() {
    try {
      const [health, procs, engines] = await Promise.all([getJson("/api/health"), getJson("/api/processes"),
        getJson("/api/engines").catch(() => ({ endpoints: [] }))]);
      this.data = { health, processes: procs.processes || [], endpoints: engines.endpoints || [], at: Date.now() / 1000 };
      this.data.problems = problemsOf(health, this.data.endpoints);
    } catch (err) {
      this.data = { error: err.message, problems: [{ what: "The agent did not answer /api/health", detail: err.message, fix: "" }] };
    }
    this.renderPill();
    if (!this.view.hidden) this.render();
    return this.data;
  }

  /** The problem that explains an empty flame graph (py-spy cannot attach), or null. */
  samplingProblem() {
    return (this.data && this.data.problems || []).find((p) => p.pid !== undefined) || null;
  }

  renderPill() {
    const pill = $("health-pill");
    const d = this.data;
    const n = d.problems.length;
    const readOnly = d.health && d.health.storage && d.health.storage.read_only;
    pill.dataset.state = n ? "problems" : "ok";
    setChildren(pill, el("span", { class: "health-dot", "aria-hidden": "true" }),
      n ? `${n} problem${n === 1 ? "" : "s"}` : readOnly ? "Stored data (read-only)" : "Agent healthy");
  }

  render() {
    const d = this.data;
    this.view.dataset.state = "ready";
    if (!d) return;
    if (d.error) {
      setChildren($("health-body"), el("p", { class: "note warn" }, `The agent did not answer: ${d.error}`));
      return;
    }
    const h = d.health;
    const readOnly = h.storage && h.storage.read_only;
    setChildren($("health-body"),
      el("section", { class: "health-section", id: "health-problems" },
        el("h3", {}, "Problems"),
        d.problems.length ? el("ul", { class: "problems" }, ...d.problems.map((p) => el("li", { class: "problem" },
          el("strong", {}, p.what), p.detail ? el("div", { class: "problem-detail" }, p.detail) : null,
          p.fix ? el("div", { class: "problem-fix" }, el("span", { class: "muted" }, "Fix: "), p.fix) : null)))
          : el("p", { class: "muted" }, readOnly
            ? "None. This is infersight serve: a stored database, read-only, with no collectors running."
            : `None: every collector ran, every endpoint answered${h.uptime_s ? `; up ${fmtDur(h.uptime_s)}` : ""}.`)),
      el("section", { class: "health-section" }, el("h3", {}, "Processes"), this.processes(d)),
      el("section", { class: "health-section" }, el("h3", {}, "Collectors"), table("collectors",
        ["collector", "state", "last success", "#runs", "#failures", "last error"],
        Object.entries(h.collectors || {}).map(([name, st]) => el("tr", { dataset: { name } },
          el("td", { class: "mono" }, name),
          el("td", {}, st.ok === false ? "failing" : st.no_data ? `no data: ${st.no_data}` : st.runs ? "ok" : "not run yet"),
          el("td", {}, ago(st.last_success)), el("td", { class: "num" }, fmtNum(st.runs)),
          el("td", { class: "num" }, fmtNum(st.failures)), el("td", { class: "wrap" }, st.last_error || ""))))),
      el("section", { class: "health-section" }, el("h3", {}, "Analysis, alerts, exports"), table("components",
        ["part", "state", "last error"],
        Object.entries(components(h)).map(([name, st]) => el("tr", { dataset: { name } },
          el("td", { class: "mono" }, name), el("td", {}, st.ok === false ? "failing" : "ok"),
          el("td", { class: "wrap" }, st.last_error || ""))))),
      el("section", { class: "health-section" }, el("h3", {}, "Engine metrics endpoints"), table("endpoints",
        ["endpoint", "engine", "state", "last success", "#latency", "last error"],
        d.endpoints.map((ep) => el("tr", {},
          el("td", { class: "mono wrap" }, ep.url), el("td", {}, ep.engine || "–"), el("td", {}, ep.ok ? "ok" : "down"),
          el("td", {}, ago(ep.last_success)),
          el("td", { class: "num" }, Number.isFinite(ep.last_latency_s) ? `${fmtNum(ep.last_latency_s * 1000)} ms` : "–"),
          el("td", { class: "wrap" }, ep.last_error || ""))))),
      el("section", { class: "health-section" }, el("h3", {}, "Storage"), this.storage(h.storage || {})));
  }

  processes(d) {
    const targets = new Map((d.health.targets || []).map((t) => [`${t.pid}:${t.start_time}`, t]));
    const rows = d.processes.map((p) => {
      const t = targets.get(`${p.pid}:${p.start_time}`) || {};
      return el("tr", { class: "proc-row", dataset: { pid: String(p.pid), role: p.role || "" } },
        el("td", { class: "num" }, String(p.pid)),
        el("td", {}, roleWords(p.role)),
        el("td", {}, (p.gpus || []).length ? p.gpus.map((g) => `GPU ${g}`).join(", ") : "–"),
        el("td", { class: "wrap" }, p.exited_at ? `exited ${fmtTime(p.exited_at, true)}` : t.last_error ? `py-spy fails: ${t.last_error_kind}` : t.state || "–"),
        el("td", { class: "num" }, Number.isFinite(p.cpu_percent) ? `${fmtNum(p.cpu_percent)}%` : "–"),
        el("td", { class: "num" }, Number.isFinite(p.rss_bytes) ? bytes(p.rss_bytes) : "–"),
        el("td", { class: "mono wrap" }, p.cmdline || ""));
    });
    return table("processes", ["#pid", "role", "GPUs", "sampling", "#CPU", "#RSS", "command line"], rows);
  }

  storage(st) {
    const pairs = [["path", st.path], ["size", bytes(st.size_bytes)], ["rows written", fmtNum(st.rows_written)],
      ["batches dropped", fmtNum(st.batches_dropped)], ["queue depth", fmtNum(st.queue_depth)],
      ["last error", st.last_error || "none"]];
    return el("dl", { class: "evidence" }, ...pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v === undefined ? "–" : String(v))]));
  }
}
