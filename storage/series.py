"""Time series queries over GPU, host, process and engine samples.

Every series comes back as points ``[[t, value], ...]`` averaged into ``step``-second bins
(t is the bin start), so a 24 h range at 1 s and a 5 min range at 1 s use the same code.
"""
from __future__ import annotations

import re

from infersight.storage.model import GPU_SIGNALS

HOST_SIGNALS = {"host_cpu_percent": ("cpu_percent", "percent"), "host_mem_used_bytes": ("mem_used_bytes", "bytes"),
                "host_load1": ("load1", "load")}
PROCESS_SIGNALS = {"process_cpu_percent": ("cpu_percent", "percent_of_core"), "process_rss_bytes": ("rss_bytes", "bytes"),
                   "process_threads": ("threads", "count")}
MAX_POINTS = 100_000

# Engine signals that are not amounts -- ratios, latency quantiles and latencies, per-GPU
# rates (each GPU of an engine does about the same work) -- are combined across endpoints and
# models by their maximum, the busiest; the others (requests, token rates) add up.
_NOT_SUMMED_RE = r"(_p[0-9][0-9]|_ratio|_seconds)$"
NOT_SUMMED_SQL = (f"(signal = 'kv_cache_usage' OR regexp_matches(signal, '{_NOT_SUMMED_RE}') "
                  "OR contains(signal, '_per_gpu_'))")


def summed(signal: str) -> bool:
    """Whether engine ``signal`` adds up across endpoints and models (see NOT_SUMMED_SQL)."""
    return not (signal == "kv_cache_usage" or re.search(_NOT_SUMMED_RE, signal) is not None or "_per_gpu_" in signal)


def gpu_series(cur, signal: str, gpu: int, t_from: float, t_to: float, step: float) -> list[list[float]]:
    """Mean of GPU ``signal`` per ``step`` bin for one GPU; NULLs (unsupported) are skipped."""
    if signal not in GPU_SIGNALS:
        raise ValueError(f"unknown GPU signal {signal!r}")
    return _binned(cur, f"SELECT t, {signal} AS v FROM gpu_samples WHERE gpu = ? AND t >= ? AND t < ? "
                        f"AND {signal} IS NOT NULL", [gpu, t_from, t_to], t_from, step)


def host_series(cur, signal: str, t_from: float, t_to: float, step: float) -> list[list[float]]:
    column = HOST_SIGNALS[signal][0]
    return _binned(cur, f"SELECT t, {column} AS v FROM host_samples WHERE t >= ? AND t < ?",
                   [t_from, t_to], t_from, step)


def process_series(cur, signal: str, pid: int, t_from: float, t_to: float, step: float) -> list[list[float]]:
    column = PROCESS_SIGNALS[signal][0]
    return _binned(cur, f"""SELECT p.t, p.{column} AS v FROM process_samples p JOIN targets g ON g.id = p.target
                           WHERE g.pid = ? AND p.t >= ? AND p.t < ?""", [pid, t_from, t_to], t_from, step)


def engine_series(cur, signal: str, t_from: float, t_to: float, step: float,
                  model: str | None = None, endpoint: str | None = None) -> list[list[float]]:
    """An engine signal per ``step`` bin: the mean of each endpoint and model in the bin, then
    those summed (endpoints scrape at their own moments, so they are combined per bin, not
    per sample time).

    Summing is right for running/waiting requests and token rates; ratios, quantiles,
    latencies and per-GPU rates take the maximum instead (:func:`summed`). Pass ``model``
    (and ``endpoint``) to get one engine's value.
    """
    params: list = [signal, t_from, t_to]
    extra = ""
    if model is not None:
        extra += " AND model = ?"
        params.append(model)
    if endpoint is not None:
        extra += " AND endpoint = (SELECT id FROM endpoints WHERE url = ?)"
        params.append(endpoint)
    rows = (f"SELECT t, endpoint, model, value AS v FROM engine_samples WHERE signal = ? AND t >= ? AND t < ?{extra} "
            "AND NOT isnan(value)")
    return _engine_binned(cur, rows, params, "sum" if summed(signal) else "max", t_from, step)


def engine_per_gpu_series(cur, signals: tuple[str, ...], t_from: float, t_to: float, step: float,
                          include: tuple[str, ...] | None = None, exclude: tuple[str, ...] = ()) -> list[list[float]]:
    """The sum of per-GPU engine ``signals`` (read + write bytes) per endpoint, model and sample
    time, binned, the busiest endpoint's per bin: the numerator of MFU or MBU. Only endpoints
    (URLs) in ``include`` (None: all) and not in ``exclude`` count."""
    rows = ("SELECT s.t, s.endpoint, s.model, sum(s.value) AS v FROM engine_samples s "
            "JOIN endpoints e ON e.id = s.endpoint "
            "WHERE list_contains(?, s.signal) AND s.t >= ? AND s.t < ? AND NOT isnan(s.value) "
            "AND (?::VARCHAR[] IS NULL OR list_contains(?::VARCHAR[], e.url)) AND NOT list_contains(?::VARCHAR[], e.url) "
            "GROUP BY 1, 2, 3")
    inc = None if include is None else list(include)
    return _engine_binned(cur, rows, [list(signals), t_from, t_to, inc, inc, list(exclude)], "max", t_from, step)


def _engine_binned(cur, rows: str, params: list, agg: str, t_from: float, step: float) -> list[list[float]]:
    """``rows`` (t, endpoint, model, v) averaged per bin and series, then combined by ``agg``."""
    out = cur.execute(f"""
        SELECT b, {agg}(v) FROM (
            SELECT ? + floor((t - ?) / ?) * ? AS b, endpoint, model, avg(v) AS v FROM ({rows}) GROUP BY 1, 2, 3)
        GROUP BY 1 ORDER BY 1 LIMIT {MAX_POINTS}""", [t_from, t_from, step, step] + params).fetchall()
    return [[round(b, 3), None if v is None else round(float(v), 4)] for b, v in out]


def engine_latest(cur, signals: tuple[str, ...], since: float) -> list[tuple[str, str, float, float]]:
    """(endpoint URL, signal, t, value): the newest sample of each of ``signals`` per endpoint
    since ``since``, its models combined as the series are (sum, or max: NOT_SUMMED_SQL)."""
    rows = cur.execute(f"""
        WITH recent AS (SELECT endpoint, signal, t, value FROM engine_samples
                        WHERE t >= ? AND list_contains(?, signal) AND NOT isnan(value)),
             newest AS (SELECT endpoint, signal, max(t) AS t FROM recent GROUP BY 1, 2)
        SELECT e.url, signal, t, CASE WHEN {NOT_SUMMED_SQL} THEN max(r.value) ELSE sum(r.value) END
        FROM recent r JOIN newest USING (endpoint, signal, t) JOIN endpoints e ON e.id = endpoint
        GROUP BY 1, 2, 3 ORDER BY 1, 2""", [since, list(signals)]).fetchall()
    return [(url, signal, float(t), float(v)) for url, signal, t, v in rows]


def _binned(cur, inner: str, params: list, t_from: float, step: float) -> list[list[float]]:
    rows = cur.execute(f"""
        SELECT ? + floor((t - ?) / ?) * ? AS b, avg(v) FROM ({inner}) GROUP BY 1 ORDER BY 1 LIMIT {MAX_POINTS}""",
                       [t_from, t_from, step, step] + params).fetchall()
    return [[round(b, 3), None if v is None else round(float(v), 4)] for b, v in rows]


def engine_signals_present(cur) -> list[str]:
    return [r[0] for r in cur.execute("SELECT DISTINCT signal FROM engine_samples ORDER BY 1").fetchall()]


def gpus(cur) -> list[dict]:
    """Known GPUs with their static facts, plus GPUs seen only in samples."""
    cols = ["gpu", "uuid", "name", "pci_bus_id", "driver", "mem_bus_width_bits", "max_mem_clock_mhz",
            "peak_dram_bw_bytes_s", "power_limit_w", "mig_mode", "gpm_supported", "parent_gpu"]
    rows = cur.execute(f"SELECT {', '.join(cols)} FROM gpus ORDER BY gpu").fetchall()
    out = [dict(zip(cols, r)) for r in rows]
    known = {g["gpu"] for g in out}
    for (gpu,) in cur.execute("SELECT DISTINCT gpu FROM gpu_samples ORDER BY 1").fetchall():
        if gpu not in known:
            out.append({"gpu": gpu, "uuid": None, "name": None})
    return sorted(out, key=lambda g: g["gpu"])


def data_range(cur) -> dict:
    """Earliest and latest sample time across stacks, GPU and engine data (None when empty)."""
    row = cur.execute("""
        SELECT min(lo), max(hi) FROM (
          SELECT min(bucket)::DOUBLE lo, max(bucket)::DOUBLE + 1 hi FROM stack_samples
          UNION ALL SELECT min(t), max(t) FROM gpu_samples
          UNION ALL SELECT min(t), max(t) FROM engine_samples
          UNION ALL SELECT min(t), max(t) FROM host_samples)""").fetchone()
    return {"from": row[0], "to": row[1]}


def latest_processes(cur, since: float) -> list[dict]:
    """Targets seen since ``since`` with their latest psutil numbers (None where not sampled)."""
    rows = cur.execute("""
        SELECT g.id, g.host, g.pid, g.start_time, g.cmdline, g.role, g.gpus, g.first_seen, g.last_seen, g.exited_at,
               p.t, p.cpu_percent, p.rss_bytes, p.threads, p.ctx_voluntary, p.ctx_involuntary
        FROM targets g LEFT JOIN (
            SELECT target, arg_max(t, t) t, arg_max(cpu_percent, t) cpu_percent, arg_max(rss_bytes, t) rss_bytes,
                   arg_max(threads, t) threads, arg_max(ctx_voluntary, t) ctx_voluntary,
                   arg_max(ctx_involuntary, t) ctx_involuntary
            FROM process_samples WHERE t >= ? GROUP BY target) p ON p.target = g.id
        WHERE g.last_seen >= ? OR p.t IS NOT NULL
        ORDER BY g.pid""", [since, since]).fetchall()
    keys = ["id", "host", "pid", "start_time", "cmdline", "role", "gpus", "first_seen", "last_seen", "exited_at",
            "sampled_at", "cpu_percent", "rss_bytes", "threads", "ctx_voluntary", "ctx_involuntary"]
    return [dict(zip(keys, r)) for r in rows]


def all_processes(cur) -> list[dict]:
    """Every target ever stored (replayed recordings have no 'recent' ones)."""
    return latest_processes(cur, float("-inf"))
