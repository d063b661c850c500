"""Queries the web UI's timeline needs in one round trip (SQL lives here, not in web/).

- :func:`gpu_activity` bins the four activity signals of every GPU in one scan.
- :func:`class_runs` merges consecutive per-second analysis windows of one class into runs,
  and pools the runs shorter than a drawn point, so a 24 h view carries at most a few
  thousand spans per GPU instead of 86,400 windows; :func:`class_totals` the exact seconds.
- :func:`window_ratios` bins the analysis windows' ``mfu`` and ``mbu`` features (the
  engine's own FLOP and byte counters over the GPU's peaks, 0-1).

Times are Unix seconds; percentages are 0-100.
"""
from __future__ import annotations

ACTIVITY_SIGNALS = ("sm_util", "tensor_util", "dram_bw_util", "util_gpu")
WINDOW_RATIOS = ("mfu", "mbu")
MAX_BINS = 20_000
MAX_RUNS = 100_000
# Two windows touch when the next starts within this many seconds of the previous end
# (analysis windows are 1 s and share their bounds; a gap longer than this breaks a run).
RUN_JOIN_S = 0.05
# How far before the range a run that is still going at its start is followed back, so
# "host-bound since 09:12" is true for views shorter than the run (at most this long).
RUN_LOOKBACK_S = 6 * 3600.0


def _check_step(t_from: float, t_to: float, step: float) -> None:
    """Raise ValueError unless ``step`` is positive and cuts the range into at most MAX_BINS bins."""
    if step <= 0:
        raise ValueError("step must be positive")
    if (t_to - t_from) / step > MAX_BINS:
        raise ValueError(f"step too small for this range (at most {MAX_BINS} bins)")


def gpu_activity(cur, t_from: float, t_to: float, step: float) -> dict[int, dict[str, list[list[float | None]]]]:
    """``{gpu: {signal: [[bin_start, mean], ...]}}`` for ACTIVITY_SIGNALS, ``step``-second bins.

    A signal a GPU never reported in the range (no GPM, say) is absent for that GPU; a bin
    whose samples all lack it has None.
    """
    _check_step(t_from, t_to, step)
    means = ", ".join(f"avg({s})" for s in ACTIVITY_SIGNALS)
    rows = cur.execute(f"""
        SELECT gpu, ? + floor((t - ?) / ?) * ? AS b, {means}
        FROM gpu_samples WHERE t >= ? AND t < ?
        GROUP BY 1, 2 ORDER BY 1, 2""", [t_from, t_from, step, step, t_from, t_to]).fetchall()
    out: dict[int, dict[str, list[list[float | None]]]] = {}
    for gpu, b, *values in rows:
        per = out.setdefault(int(gpu), {s: [] for s in ACTIVITY_SIGNALS})
        for name, v in zip(ACTIVITY_SIGNALS, values):
            per[name].append([round(b, 3), None if v is None else round(float(v), 2)])
    for per in out.values():
        for name in [n for n, pts in per.items() if all(v is None for _, v in pts)]:
            del per[name]
    return out


def class_runs(cur, t_from: float, t_to: float, step: float = 0.0) -> dict[int, list[list]]:
    """``{gpu: [[start, end, class], ...]}``: runs of consecutive analysis windows of one
    class (gaps-and-islands) that overlap [t_from, t_to), oldest first.

    A run ends with the last window starting before ``t_to``; a run going on at ``t_from``
    keeps its true start, looked for at most RUN_LOOKBACK_S back.

    ``step`` (seconds, the width one drawn point stands for): runs at least ``step`` long are
    kept whole; shorter ones lying between two whole runs are pooled per ``step``-wide bin
    (bins counted from ``t_from``) into one run of the class with the most seconds among them
    (ties: the first by name), spanning the pooled runs. So a day of runs flickering
    every few seconds answers about one run per bin instead of one per flicker (a day of
    8 GPUs held over 150,000), while every run a point can show keeps its bounds. With
    ``step`` 0 every run is exact; :func:`class_totals` gives exact seconds either way.
    """
    if step:
        _check_step(t_from, t_to, step)
    rows = cur.execute(f"""
        WITH w AS (
            SELECT gpu, start, "end", klass,
                   CASE WHEN klass = lag(klass) OVER (PARTITION BY gpu ORDER BY start)
                         AND start - lag("end") OVER (PARTITION BY gpu ORDER BY start) <= {RUN_JOIN_S}
                        THEN 0 ELSE 1 END AS brk
            FROM windows WHERE "end" > ? AND start < ?),
        g AS (SELECT *, sum(brk) OVER (PARTITION BY gpu ORDER BY start ROWS UNBOUNDED PRECEDING) AS run FROM w),
        r AS (SELECT gpu, min(start) AS a, max("end") AS b, any_value(klass) AS k FROM g
              GROUP BY gpu, run HAVING max("end") > ?),
        -- a pool: the short runs after the same whole run (seg) in the same bin
        s AS (SELECT *, b - a >= ? AS whole,
                     sum(CASE WHEN b - a >= ? THEN 1 ELSE 0 END)
                         OVER (PARTITION BY gpu ORDER BY a ROWS UNBOUNDED PRECEDING) AS seg
              FROM r),
        p AS (SELECT gpu, a, b, k, seg, whole,
                     CASE WHEN whole THEN 0 ELSE floor((a - ?) / ?) END AS bin FROM s),
        c AS (SELECT gpu, seg, whole, bin, k, sum(b - a) AS secs, min(a) AS ka, max(b) AS kb
              FROM p GROUP BY ALL),
        o AS (SELECT *, row_number() OVER (PARTITION BY gpu, seg, whole, bin ORDER BY secs DESC, k) AS rank,
                     min(ka) OVER (PARTITION BY gpu, seg, whole, bin) AS pa,
                     max(kb) OVER (PARTITION BY gpu, seg, whole, bin) AS pb
              FROM c)
        SELECT gpu, pa, pb, k FROM o WHERE rank = 1 ORDER BY gpu, pa LIMIT {MAX_RUNS}""",
                       [t_from - RUN_LOOKBACK_S, t_to, t_from, step, step, t_from, step or 1.0]).fetchall()
    out: dict[int, list[list]] = {}
    for gpu, start, end, klass in rows:
        out.setdefault(int(gpu), []).append([float(start), float(end), klass])
    return out


def class_totals(cur, t_from: float, t_to: float) -> dict[int, dict[str, float]]:
    """``{gpu: {class: seconds}}`` of the analysis windows clipped to [t_from, t_to): the exact
    time per class, which pooled :func:`class_runs` only approximate."""
    rows = cur.execute("""
        SELECT gpu, klass, sum(least("end", ?) - greatest(start, ?)) FROM windows
        WHERE "end" > ? AND start < ? GROUP BY 1, 2 ORDER BY 1, 2""", [t_to, t_from, t_from, t_to]).fetchall()
    out: dict[int, dict[str, float]] = {}
    for gpu, klass, seconds in rows:
        out.setdefault(int(gpu), {})[klass] = round(float(seconds), 3)
    return out


def window_ratios(cur, t_from: float, t_to: float, step: float) -> dict[int, dict[str, list[list[float | None]]]]:
    """``{gpu: {"mfu"|"mbu": [[bin_start, mean 0-1], ...]}}`` over the analysis windows
    starting in [t_from, t_to), ``step``-second bins. Only GPUs and ratios with a value in the
    range appear: an engine without FLOP/byte counters (or a GPU of unknown peaks) gives none.
    """
    _check_step(t_from, t_to, step)
    means = ", ".join(f"avg({name})" for name in WINDOW_RATIOS)
    present = " OR ".join(f"{name} IS NOT NULL" for name in WINDOW_RATIOS)
    rows = cur.execute(f"""
        SELECT gpu, ? + floor((start - ?) / ?) * ? AS b, {means}
        FROM windows WHERE start >= ? AND start < ? AND ({present})
        GROUP BY 1, 2 ORDER BY 1, 2""", [t_from, t_from, step, step, t_from, t_to]).fetchall()
    out: dict[int, dict[str, list[list[float | None]]]] = {}
    for gpu, b, *values in rows:
        per = out.setdefault(int(gpu), {name: [] for name in WINDOW_RATIOS})
        for name, v in zip(WINDOW_RATIOS, values):
            per[name].append([round(b, 3), None if v is None else round(float(v), 4)])
    for per in out.values():
        for name in [n for n, pts in per.items() if all(v is None for _, v in pts)]:
            del per[name]
    return out
