"""Per-second aggregates the analysis classifies (read side; SQL lives here only).

Every function returns plain dicts keyed by the Unix second (int), so the analysis joins
GPU counters, engine signals, process CPU and stack samples without SQL of its own.
"""
from __future__ import annotations

import re

from infersight.storage import window_features as wf
from infersight.storage.series import NOT_SUMMED_SQL

GPU_FEATURES = ("util_gpu", "sm_util", "sm_occupancy", "tensor_util", "dram_bw_util", "power_w", "sm_clock_mhz")


def gpus_with_samples(cur, t_from: float, t_to: float) -> list[int]:
    return [r[0] for r in cur.execute(
        "SELECT DISTINCT gpu FROM gpu_samples WHERE t >= ? AND t < ? ORDER BY 1", [t_from, t_to]).fetchall()]


def gpu_seconds(cur, gpu: int, t_from: float, t_to: float) -> dict[int, dict[str, float | None]]:
    """Mean of each GPU feature per second (None where the GPU reported nothing)."""
    cols = ", ".join(f"avg({c})" for c in GPU_FEATURES)
    rows = cur.execute(f"SELECT floor(t)::BIGINT, {cols}, bit_or(clocks_event_reasons), count(*) FROM gpu_samples "
                       "WHERE gpu = ? AND t >= ? AND t < ? GROUP BY 1", [gpu, t_from, t_to]).fetchall()
    out = {}
    for r in rows:
        d = {c: (None if v is None else float(v)) for c, v in zip(GPU_FEATURES, r[1:])}
        d["clocks_event_reasons"] = r[-2]
        d["gpu_samples"] = r[-1]
        out[int(r[0])] = d
    return out


def engine_seconds(cur, t_from: float, t_to: float) -> dict[int, dict[str, float]]:
    """Engine signals per second, summed over endpoints and models (max for the signals that are
    not amounts: series.NOT_SUMMED_SQL)."""
    rows = cur.execute(f"""
        SELECT sec, signal, CASE WHEN {NOT_SUMMED_SQL} THEN max(v) ELSE sum(v) END
        FROM (SELECT floor(t)::BIGINT sec, signal, endpoint, model, avg(value) v FROM engine_samples
              WHERE t >= ? AND t < ? AND NOT isnan(value) GROUP BY 1, 2, 3, 4)
        GROUP BY 1, 2""", [t_from, t_to]).fetchall()
    out: dict[int, dict[str, float]] = {}
    for sec, signal, value in rows:
        out.setdefault(int(sec), {})[signal] = float(value)
    return out


def process_cpu_seconds(cur, t_from: float, t_to: float) -> dict[int, dict[int, float]]:
    """Per second and pid: mean CPU % of one core (psutil)."""
    rows = cur.execute("""
        SELECT floor(p.t)::BIGINT, g.pid, avg(p.cpu_percent) FROM process_samples p JOIN targets g ON g.id = p.target
        WHERE p.t >= ? AND p.t < ? GROUP BY 1, 2""", [t_from, t_to]).fetchall()
    out: dict[int, dict[int, float]] = {}
    for sec, pid, cpu in rows:
        out.setdefault(int(sec), {})[int(pid)] = float(cpu)
    return out


def wait_frames_since(cur, patterns: tuple[str, ...], after_id: int = 0) -> tuple[list[int], int]:
    """Frame ids above ``after_id`` whose ``file:function`` matches one of ``patterns`` (GPU
    waits), and the highest frame id there is (``after_id`` when none is higher). Frame ids are
    never reused (storage/intern.py), so a reader may keep the matches and later ask only for
    the frames added since."""
    compiled = [re.compile(p) for p in patterns]
    rows = cur.execute("SELECT id, file, function FROM frames WHERE id > ?", [int(after_id)]).fetchall()
    top = max((r[0] for r in rows), default=after_id)
    return [fid for fid, file, fn in rows if any(c.search(f"{file}:{fn}") for c in compiled)], int(top)


def stack_seconds(cur, t_from: float, t_to: float, wait_frames: list[int]) -> dict[int, dict[int, dict]]:
    """Per second and pid: active samples, active samples whose leaf is a GPU wait, idle
    samples, and the leaf frame (function) with the most active samples."""
    params = [int(t_from // 1), int(-(-t_to // 1))]
    rows = cur.execute("""
        WITH per AS (
            SELECT s.bucket, s.target, n.frame, s.active, sum(s.count)::BIGINT c
            FROM stack_samples s LEFT JOIN stack_nodes n ON n.id = s.stack
            WHERE s.bucket >= ? AND s.bucket < ? GROUP BY 1, 2, 3, 4)
        SELECT per.bucket, g.pid, g.role,
               sum(CASE WHEN active THEN c ELSE 0 END)::BIGINT,
               sum(CASE WHEN active AND list_contains(?, frame) THEN c ELSE 0 END)::BIGINT,
               sum(CASE WHEN NOT active THEN c ELSE 0 END)::BIGINT,
               arg_max(frame, CASE WHEN active THEN c ELSE -1 END)
        FROM per JOIN targets g ON g.id = per.target GROUP BY 1, 2, 3""",
                       params[:2] + [wait_frames]).fetchall()
    names = dict(cur.execute("SELECT id, function FROM frames WHERE id IN (SELECT unnest(?))",
                             [list({r[6] for r in rows if r[6] is not None})]).fetchall()) if rows else {}
    out: dict[int, dict[int, dict]] = {}
    for sec, pid, role, active, waiting, idle, top in rows:
        out.setdefault(int(sec), {})[int(pid)] = {"active": int(active), "gpu_wait": int(waiting), "idle": int(idle),
                                                  "role": role, "top_leaf": names.get(top) if active else None}
    return out


def targets(cur) -> list[dict]:
    rows = cur.execute("SELECT id, pid, role, gpus, cmdline, first_seen, last_seen, exited_at, start_time "
                       "FROM targets").fetchall()
    keys = ("id", "pid", "role", "gpus", "cmdline", "first_seen", "last_seen", "exited_at", "start_time")
    return [dict(zip(keys, r)) for r in rows]


def gpu_processes(cur, gpu: int, t_from: float, t_to: float) -> dict[int, dict]:
    """Processes NVML saw on ``gpu`` in the range: pid -> max memory and mean SM share."""
    rows = cur.execute("""SELECT pid, max(used_memory_bytes), avg(sm_util), count(*) FROM gpu_processes
                          WHERE gpu = ? AND t >= ? AND t < ? GROUP BY 1""", [gpu, t_from, t_to]).fetchall()
    return {int(r[0]): {"used_memory_bytes": r[1], "sm_util": r[2], "samples": r[3]} for r in rows}


def gpu_process_seconds(cur, gpu: int, t_from: float, t_to: float) -> dict[int, dict[int, float | None]]:
    """Per second and pid seen by NVML on ``gpu``: its largest SM share (%) in that second,
    None where NVML gave the process but no utilization sample."""
    rows = cur.execute("""SELECT floor(t)::BIGINT, pid, max(sm_util) FROM gpu_processes
                          WHERE gpu = ? AND t >= ? AND t < ? GROUP BY 1, 2""", [gpu, t_from, t_to]).fetchall()
    out: dict[int, dict[int, float | None]] = {}
    for sec, pid, sm in rows:
        out.setdefault(int(sec), {})[int(pid)] = None if sm is None else float(sm)
    return out


def gpu_name(cur, gpu: int) -> str | None:
    """The model name NVML gave ``gpu`` (None before its facts were collected)."""
    row = cur.execute("SELECT name FROM gpus WHERE gpu = ?", [gpu]).fetchone()
    return row[0] if row else None


def peak_dram_bandwidth(cur, gpu: int) -> float | None:
    row = cur.execute("SELECT peak_dram_bw_bytes_s FROM gpus WHERE gpu = ?", [gpu]).fetchone()
    return row[0] if row else None


def windows_range(cur, gpu: int, t_from: float, t_to: float) -> list[tuple[float, str, dict]]:
    """(start, class, features) of stored windows of ``gpu`` in the range, oldest first."""
    rows = cur.execute(f"SELECT start, klass, {wf.select_sql()} FROM windows WHERE gpu = ? AND start >= ? "
                       "AND start < ? ORDER BY start", [gpu, t_from, t_to]).fetchall()
    decode = wf.Decoder()
    last = len(wf.NAMES) + 3
    return [(r[0], r[1], decode(r[2], r[3:last], r[last])) for r in rows]


def first_gpu_second(cur) -> float | None:
    """The earliest GPU sample time (where a fresh analysis starts)."""
    row = cur.execute("SELECT min(t) FROM gpu_samples").fetchone()
    return row[0]


def engine_means(cur, t_from: float, t_to: float) -> dict[str, float]:
    """Mean of each engine signal over the range (summed over endpoints and models per time)."""
    rows = cur.execute(f"""
        SELECT signal, avg(v) FROM (
            SELECT t, signal, CASE WHEN {NOT_SUMMED_SQL} THEN max(value) ELSE sum(value) END v
            FROM engine_samples WHERE t >= ? AND t < ? AND NOT isnan(value) GROUP BY 1, 2)
        GROUP BY 1""", [t_from, t_to]).fetchall()
    return {s: float(v) for s, v in rows if v is not None}
