// The header (range presets, custom range, auto-refresh, time zone), the selection bar and
// the plain-words notes shown where data is missing.
import { $, classLabel, el, fmtDur, fmtTime, fromInputValue, setChildren, toInputValue, tzLabel } from "./dom.js";
import { classSeconds } from "./summary.js";
import { viewRange } from "./state.js";

/** The view covering all stored data, with a little room on both sides. */
export function allRange(extent) {
  const pad = Math.max(1, (extent.to - extent.from) * 0.02);
  return { from: extent.from - pad, to: extent.to + pad, live: null };
}

export function bindHeader(store, getExtent) {
  for (const button of $("presets").querySelectorAll("button")) {
    button.addEventListener("click", () => {
      const preset = button.dataset.preset;
      if (preset === "custom") {
        const form = $("custom-form");
        form.hidden = !form.hidden;
        if (!form.hidden) fillCustom(store.get());
        return;
      }
      $("custom-form").hidden = true;
      if (preset === "all") {
        const extent = getExtent();
        if (extent && extent.from !== null) store.set({ ...allRange(extent), sel: null, event: null }, "push");
        return;
      }
      store.set({ live: preset, from: null, to: null, sel: null, event: null }, "push");
    });
  }
  $("custom-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const from = fromInputValue($("custom-from").value);
    const to = fromInputValue($("custom-to").value);
    if (from === null || to === null || to <= from) {
      $("custom-to").setCustomValidity("must be after the start");
      $("custom-to").reportValidity();
      return;
    }
    $("custom-to").setCustomValidity("");
    store.set({ from, to, live: null }, "push");
    $("custom-form").hidden = true;
  });
  $("refresh").addEventListener("change", (e) => store.set({ refresh: Number(e.target.value) }));
  $("tz").addEventListener("click", () => store.set({ tz: store.get().tz === "utc" ? "local" : "utc" }));
}

function fillCustom(s) {
  const [from, to] = viewRange(s);
  $("custom-from").value = toInputValue(from);
  $("custom-to").value = toInputValue(to);
}

/** Reflect the state in the header controls. */
export function renderHeader(s, extent) {
  let active = "custom";
  if (s.live) active = s.live;
  else if (extent && extent.from !== null && s.from !== null) {
    const all = allRange(extent);
    if (Math.abs(all.from - s.from) < 1 && Math.abs(all.to - s.to) < 1) active = "all";
  }
  for (const button of $("presets").querySelectorAll("button")) {
    button.setAttribute("aria-pressed", String(button.dataset.preset === active));
  }
  const refresh = $("refresh");
  const want = String(s.refresh || 0);
  if (![...refresh.options].some((o) => o.value === want)) refresh.append(el("option", { value: want }, `${want} s`));
  refresh.value = want;
  $("tz").textContent = s.tz === "utc" ? "UTC" : `Local (${tzLabel()})`;
  const [from, to] = viewRange(s);
  setChildren($("view-range"), `${fmtTime(from, true)} – ${fmtTime(to, to - from > 86400)} · ${fmtDur(to - from)}`);
}

/** The selection bar: what is selected, its classes, and what can be done with it. */
export function renderSelection(s, data, clearBase) {
  const text = $("selection-text");
  $("sel-zoom").disabled = !s.sel;
  $("sel-base").disabled = !s.sel;
  $("sel-clear").disabled = !s.sel && !s.base;
  if (!s.sel) {
    setChildren(text, el("span", { class: "muted" }, "No selection: the flame graph shows the whole range. Drag across the timeline to pick the bad minutes."));
  } else {
    const [a, b] = s.sel;
    const secs = {};
    for (const g of data ? data.gpus : []) {
      for (const [k, v] of Object.entries(classSeconds(g.runs, a, b))) secs[k] = (secs[k] || 0) + v;
    }
    const parts = Object.entries(secs).sort((x, y) => y[1] - x[1]).slice(0, 4)
      .map(([k, v]) => `${classLabel(k)} ${fmtDur(v)}`);
    setChildren(text, el("strong", {}, "Selected "), `${fmtTime(a, true)} – ${fmtTime(b)} (${fmtDur(b - a)})`,
      parts.length ? el("span", { class: "muted" }, ` · ${parts.join(", ")}`) : null);
  }
  const baseText = $("baseline-text");
  if (s.base) {
    setChildren(baseText, el("span", { class: "muted" }, "baseline "), `${fmtTime(s.base[0], true)} – ${fmtTime(s.base[1])}`,
      el("button", { type: "button", class: "btn ghost small", onclick: clearBase }, "clear"));
  } else setChildren(baseText, el("span", { class: "muted" }, "no baseline set"));
}

// A live view whose newest stored data is older than this (and than 3 refresh periods) says so.
const OLD_DATA_S = 30;

/** Plain-words notes where a part of the timeline has nothing to show, or shows old data. */
export function renderNotes(data, gpuStatus, s, readOnly = false, now = Date.now() / 1000) {
  const notes = [];
  const extent = data.extent;
  if (!extent || extent.from === null) {
    notes.push(["info", "Nothing is stored yet. The agent writes its first samples within seconds of starting; "
      + "a database filled by `infersight replay` shows its recording under “All”."]);
  } else {
    const [from, to] = viewRange(s);
    if (extent.to < from || extent.from > to) {
      notes.push(["info", `No data in this range. Stored data spans ${fmtTime(extent.from, true)} – ${fmtTime(extent.to, true)}.`, "all"]);
    } else if (s.live && now - extent.to > Math.max(OLD_DATA_S, 3 * (s.refresh || 0))) {
      notes.push(["warn stale-data", `The newest stored data is ${fmtDur(now - extent.to)} old (${fmtTime(extent.to, true)}): `
        + (readOnly ? "this is a stored database (infersight serve); nothing new arrives."
          : "the agent has stopped storing new samples. The Health tab says which collector or the storage failed.")]);
    }
  }
  if (!data.gpus.length) {
    const why = gpuStatus && gpuStatus.collector && gpuStatus.collector.no_data ? ` (${gpuStatus.collector.no_data})` : "";
    notes.push(["warn", `No GPU data on this host${why}: NVML reported no NVIDIA GPU, or the GPU collector is off. `
      + "Bottleneck classes and GPU activity need it; stacks and engine metrics are shown without them."]);
  }
  for (const g of data.gpus.filter((x) => x.name && /simulated/i.test(x.name))) {
    notes.push(["warn", `GPU ${g.gpu} is simulated (${g.name}): there is no NVIDIA GPU here, so its activity comes `
      + "from the demo engine's own timing of its work. Stacks, engine metrics and findings are measured for real."]);
  }
  if (!Object.keys(data.engine).length) {
    notes.push(["info", "No inference engine metrics in this range: no engine /metrics endpoint was scraped (tokens/s, requests and TTFT need one)."]);
  }
  return notes;
}
