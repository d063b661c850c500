"""JSON API routes. Handlers parse parameters (web/params.py), call storage query functions
through ``store.read`` (a reader thread), and shape JSON. No SQL here, no blocking calls.
"""
from __future__ import annotations

import time

from aiohttp import web

from infersight.storage import events as q_events
from infersight.storage import series, stacks
from infersight.storage.model import GPU_SIGNALS
from infersight.web import engine_roof
from infersight.web import params as p
from infersight.web.health import problems as health_problems
from infersight.web.heavy import diff, flamegraph  # budgeted, in line: web/heavy.py
from infersight.web.keys import AGENT_KEY, CONFIG_KEY, STORE_KEY
from infersight.web.responses import bytes_response, dumps, json_response

RECENT_PROCESS_S = 600.0
WINDOWS_LIMIT = 200_000  # a GPU-day and more of 1 s windows in one answer


def _store(request: web.Request):
    return request.app[STORE_KEY]


async def health(request: web.Request) -> web.Response:
    """``{"status": "ok"|"degraded", "collectors": {name: {...}}, "storage": {...}}``."""
    agent = request.app[AGENT_KEY]
    store = _store(request)
    collectors = {}
    if agent is not None:
        for name, st in agent.runner.status.items():
            collectors[name] = st.as_dict()
    stats = store.stats()
    degraded = health_problems(agent, store, stats)   # failing endpoints, targets, components too
    body = {
        "status": "degraded" if degraded else "ok",
        "problems": degraded,
        "collectors": collectors,
        "storage": {"path": store.path, "size_bytes": store.size_bytes(), "read_only": store.read_only,
                    "rows_written": stats.rows_written, "batches_dropped": stats.batches_dropped,
                    "rows_dropped": stats.rows_dropped, "batches_rejected": stats.batches_rejected,
                    "queue_depth": stats.queue_depth,
                    "flush_failures": stats.flush_failures, "last_flush_s": round(stats.last_flush_s, 6),
                    "last_error": stats.last_error, "failing_since": stats.failing_since,
                    "retained_rows": stats.retained_rows},
        "uptime_s": round(time.time() - agent.started_at, 3) if agent is not None else None,
    }
    if agent is not None:
        for name, component in agent.extras.items():
            if hasattr(component, "health"):
                body[name] = component.health()
        stacks_collector = agent.collector("stacks")
        if stacks_collector is not None and hasattr(stacks_collector, "status"):
            body["targets"] = stacks_collector.status()
    return json_response(body)


async def processes(request: web.Request) -> web.Response:
    """Targets with their latest psutil numbers (recent ones; ``all=1`` for every one)."""
    store = _store(request)
    if p.boolean(request, "all"):
        rows = await store.read(series.all_processes)
    else:
        rows = await store.read(series.latest_processes, time.time() - RECENT_PROCESS_S)
        if not rows and request.app[AGENT_KEY] is None:
            rows = await store.read(series.all_processes)
    return json_response({"processes": rows})


def _engine_signal_units() -> dict[str, str]:
    try:
        from infersight.daemon.engines.signals import ENGINE_SIGNALS
    except ImportError:
        return {}
    return dict(ENGINE_SIGNALS)


async def signals(request: web.Request) -> web.Response:
    """Every signal /api/series answers, with unit and kind (gpu, engine, host, process)."""
    engine_units = _engine_signal_units()
    present = await _store(request).read(series.engine_signals_present)
    out = [{"signal": k, "unit": v, "kind": "gpu"} for k, v in GPU_SIGNALS.items()]
    out += [{"signal": k, "unit": "ratio", "kind": "gpu"} for k in engine_roof.SIGNALS]
    for name in sorted(set(engine_units) | set(present)):
        out.append({"signal": name, "unit": engine_units.get(name, _unit_guess(name)), "kind": "engine"})
    out += [{"signal": k, "unit": v[1], "kind": "host"} for k, v in series.HOST_SIGNALS.items()]
    out += [{"signal": k, "unit": v[1], "kind": "process"} for k, v in series.PROCESS_SIGNALS.items()]
    return json_response({"signals": out})


def _unit_guess(name: str) -> str:
    if "seconds" in name:
        return "seconds"
    if name.endswith("_per_s"):
        return "per_second"
    return "value"


async def series_route(request: web.Request) -> web.Response:
    """``{"signal", "unit", "points": [[t, value], ...]}`` binned by ``step`` seconds."""
    signal = request.query.get("signal", "")
    if not signal:
        raise p.BadParam("signal", "required; see /api/signals")
    if len(signal) > 100:
        raise p.BadParam("signal", "too long")
    t_from, t_to = p.time_range(request)
    default_step = max(1.0, (t_to - t_from) / 1500)
    step = p.number(request, "step", default_step, lo=0.001, hi=86400)
    if (t_to - t_from) / step > series.MAX_POINTS:
        raise p.BadParam("step", f"too small for this range (at most {series.MAX_POINTS} points)")
    store = _store(request)
    if signal in engine_roof.SIGNALS:
        gpu = p.integer(request, "gpu", 0, lo=0, hi=1024)
        return json_response(await engine_roof.series_body(store, signal, gpu, t_from, t_to, step,
                                                           engine_roof.endpoint_map(request.app[AGENT_KEY])))
    if signal in GPU_SIGNALS:
        gpu = p.integer(request, "gpu", 0, lo=0, hi=1024)
        points = await store.read(series.gpu_series, signal, gpu, t_from, t_to, step)
        return await _json_off_loop(request, {"signal": signal, "unit": GPU_SIGNALS[signal], "gpu": gpu, "points": points})
    if signal in series.HOST_SIGNALS:
        points = await store.read(series.host_series, signal, t_from, t_to, step)
        return await _json_off_loop(request, {"signal": signal, "unit": series.HOST_SIGNALS[signal][1], "points": points})
    if signal in series.PROCESS_SIGNALS:
        pid = p.integer(request, "pid", None, lo=0)
        if pid is None:
            raise p.BadParam("pid", f"required for {signal}")
        points = await store.read(series.process_series, signal, pid, t_from, t_to, step)
        return await _json_off_loop(request, {"signal": signal, "unit": series.PROCESS_SIGNALS[signal][1], "pid": pid,
                              "points": points})
    units = _engine_signal_units()
    present = await store.read(series.engine_signals_present)
    if signal in units or signal in present:
        model = request.query.get("model") or None
        endpoint = request.query.get("endpoint") or None
        points = await store.read(series.engine_series, signal, t_from, t_to, step, model, endpoint)
        return await _json_off_loop(request, {"signal": signal, "unit": units.get(signal, _unit_guess(signal)), "points": points})
    raise p.BadParam("signal", f"unknown signal {signal[:60]!r}; see /api/signals")


async def _json_off_loop(request: web.Request, data) -> web.Response:
    """A possibly large answer, encoded on a reader thread."""
    return bytes_response(await _store(request).compute(dumps, data))


async def events_route(request: web.Request) -> web.Response:
    """Findings overlapping the range, newest first, at most ``limit``; ``from=0`` means all."""
    t_from, t_to = p.time_range(request, default_span_s=86400.0, max_span_s=None)
    kind = p.strings(request, "kind", 60)
    gpu = p.integer(request, "gpu", None, lo=0, hi=1024)
    limit = p.integer(request, "limit", 1000, lo=1, hi=100_000)
    rows = await _store(request).read(q_events.events, t_from, t_to, kind=kind[0] if kind else None,
                                      gpu=gpu, limit=limit)
    return await _json_off_loop(request, {"events": rows})


async def event_route(request: web.Request) -> web.Response:
    event_id = request.match_info["event_id"]
    if len(event_id) > 200:
        raise p.BadParam("event_id", "too long")
    row = await _store(request).read(q_events.event, event_id)
    if row is None:
        raise web.HTTPNotFound()
    return json_response(row)


async def windows_route(request: web.Request) -> web.Response:
    """Analysis windows starting in the range, by GPU then oldest first, at most ``limit``;
    ``from=0`` means since the first."""
    t_from, t_to = p.time_range(request, max_span_s=None)
    gpu = p.integer(request, "gpu", None, lo=0, hi=1024)
    limit = p.integer(request, "limit", WINDOWS_LIMIT, lo=1, hi=WINDOWS_LIMIT)
    rows = await _store(request).read(q_events.windows, t_from, t_to, gpu, limit)
    return await _json_off_loop(request, {"windows": rows})


async def gpus_route(request: web.Request) -> web.Response:
    rows = await _store(request).read(series.gpus)
    agent = request.app[AGENT_KEY]
    status = None
    if agent is not None:
        gpu_collector = agent.collector("gpu")
        if gpu_collector is not None and hasattr(gpu_collector, "status"):
            status = gpu_collector.status()
    return json_response({"gpus": rows, "collector": status})


async def range_route(request: web.Request) -> web.Response:
    """The time extent of stored data, so a UI opened on a replayed store finds it."""
    return json_response(await _store(request).read(series.data_range))


async def threads_route(request: web.Request) -> web.Response:
    t_from, t_to = p.time_range(request)
    return json_response({"threads": await _store(request).read(stacks.thread_names, t_from, t_to)})


async def engines_route(request: web.Request) -> web.Response:
    agent = request.app[AGENT_KEY]
    endpoints = []
    if agent is not None:
        collector = agent.collector("engines")
        if collector is not None and hasattr(collector, "endpoint_status"):
            endpoints = collector.endpoint_status()
    return json_response({"endpoints": endpoints})


async def config_route(request: web.Request) -> web.Response:
    """Non-secret settings the UI needs (external URL, intervals)."""
    cfg = request.app[CONFIG_KEY]
    return json_response({"host": cfg.host, "external_url": cfg.web.external_url,
                          "gpu_fast_interval_s": cfg.collectors.gpu.fast_interval_s})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/health", health)
    r.add_get("/api/processes", processes)
    r.add_get("/api/flamegraph", flamegraph)
    r.add_get("/api/diff", diff)
    r.add_get("/api/signals", signals)
    r.add_get("/api/series", series_route)
    r.add_get("/api/events", events_route)
    r.add_get("/api/events/{event_id}", event_route)
    r.add_get("/api/windows", windows_route)
    r.add_get("/api/gpus", gpus_route)
    r.add_get("/api/range", range_route)
    r.add_get("/api/threads", threads_route)
    r.add_get("/api/engines", engines_route)
    r.add_get("/api/config", config_route)
