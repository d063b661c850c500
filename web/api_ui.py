"""JSON routes the UI needs beyond the public API: one round trip per timeline refresh.

``GET /api/ui/timeline?from=&to=&points=`` answers::

    {"from", "to", "gpu_step", "engine_step", "roof_step",  # seconds per bin
     "runs_step",                                        # seconds per point: shorter runs are pooled
     "extent": {"from", "to"},                           # all stored data (None when empty)
     "gpus": [{"gpu", "name", "uuid", "gpm_supported",
               "activity": {signal: [[t, percent], ...]},  # sm_util, tensor_util, dram_bw_util, util_gpu
               "roof": {"mfu"|"mbu": [[t, ratio], ...]},    # 0-1, from the analysis windows;
                                                            # only those the engine reported
               "runs": [[start, end, class], ...],        # merged analysis windows; runs shorter
                                                            # than runs_step pooled per runs_step bin
               "class_seconds": {class: seconds}}],       # exact, clipped to [from, to)
     "engine": {signal: [[t, value], ...]}}               # only signals stored at all

Handlers parse parameters and call storage query functions on a reader thread; no SQL here.
"""
from __future__ import annotations

from aiohttp import web

from infersight.storage import series, ui_queries
from infersight.web import params as p
from infersight.web.keys import STORE_KEY
from infersight.web.responses import bytes_response, dumps

ENGINE_TRACKS = ("generation_tokens_per_s", "requests_running", "requests_waiting", "ttft_seconds_p95")
# Bins no finer than the data: GPU samples come every 0.1-1 s, engine scrapes about every 1 s.
GPU_MIN_STEP_S = 0.5
ENGINE_MIN_STEP_S = 1.0
WINDOW_MIN_STEP_S = 1.0  # analysis windows are 1 s


def _timeline(cur, t_from: float, t_to: float, points: int) -> dict:
    span = t_to - t_from
    gpu_step = max(GPU_MIN_STEP_S, span / points)
    engine_step = max(ENGINE_MIN_STEP_S, span / points)
    activity = ui_queries.gpu_activity(cur, t_from, t_to, gpu_step)
    # runs shorter than one point are pooled (a day of flickering classes is ~10^5 runs)
    runs_step = span / points
    runs = ui_queries.class_runs(cur, t_from, t_to, runs_step)
    totals = ui_queries.class_totals(cur, t_from, t_to)
    roof_step = max(WINDOW_MIN_STEP_S, span / points)
    roof = ui_queries.window_ratios(cur, t_from, t_to, roof_step)
    known = {g["gpu"]: g for g in series.gpus(cur)}
    gpus = []
    for gpu in sorted(set(known) | set(activity) | set(runs) | set(roof) | set(totals)):
        info = known.get(gpu, {})
        gpus.append({"gpu": gpu, "name": info.get("name"), "uuid": info.get("uuid"),
                     "gpm_supported": info.get("gpm_supported"),
                     "activity": activity.get(gpu, {}), "roof": roof.get(gpu, {}), "runs": runs.get(gpu, []),
                     "class_seconds": totals.get(gpu, {})})
    present = set(series.engine_signals_present(cur))
    engine = {s: series.engine_series(cur, s, t_from, t_to, engine_step) for s in ENGINE_TRACKS if s in present}
    return {"from": t_from, "to": t_to, "gpu_step": gpu_step, "engine_step": engine_step, "roof_step": roof_step,
            "runs_step": runs_step,
            "extent": series.data_range(cur), "gpus": gpus, "engine": engine}


async def timeline(request: web.Request) -> web.Response:
    t_from, t_to = p.time_range(request)
    points = p.integer(request, "points", 1200, lo=10, hi=5000)
    store = request.app[STORE_KEY]
    body = await store.read(_timeline, t_from, t_to, points)
    # up to 8 GPUs x 6 signals x 5,000 points: encoded on a reader thread too
    return bytes_response(await store.compute(dumps, body))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/ui/timeline", timeline)
