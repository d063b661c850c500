// Baselines for the diff, computed from the compared range: the same length just before,
// the same time yesterday, and the same length before the last engine restart (the start of
// the newest serving processes that replaced older ones). Pure functions over ranges
// [from, to] (Unix seconds) and /api/processes rows.

export const DAY_S = 86400;
// serving processes started within this many seconds of each other are one (re)start
const START_CLUSTER_S = 60;
const SERVING = new Set(["api_server", "engine_core", "worker", "engine"]);

export function justBefore(range) {
  const d = range[1] - range[0];
  return [range[0] - d, range[0]];
}

export function sameTimeYesterday(range) {
  return [range[0] - DAY_S, range[1] - DAY_S];
}

/** The times serving processes (re)started, oldest first: one per cluster of start times. */
export function engineStarts(processes) {
  const times = (processes || []).filter((p) => SERVING.has(p.role) && Number.isFinite(p.start_time))
    .map((p) => p.start_time).sort((a, b) => a - b);
  const starts = [];
  for (const t of times) {
    if (!starts.length || t - starts[starts.length - 1] > START_CLUSTER_S) starts.push(t);
  }
  return starts;
}

/**
 * The baseline "before the last restart": the compared range's length ending at the newest
 * restart that came before the range (a start that is not the first one stored), no earlier
 * than the start before it; null when no engine restarted before the range.
 */
export function beforeLastRestart(range, processes) {
  const starts = engineStarts(processes);
  for (let k = starts.length - 1; k >= 1; k--) {
    if (starts[k] <= range[0]) {
      const d = range[1] - range[0];
      return [Math.max(starts[k - 1], starts[k] - d), starts[k]];
    }
  }
  return null;
}

/** Whether stored data (``extent`` {from, to}) reaches into ``range``. */
export function hasData(range, extent) {
  return Boolean(extent && extent.from !== null && extent.from < range[1] && extent.to > range[0]);
}
