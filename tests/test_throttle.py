"""Which process throttles a starved GPU, from where the requests queue, not which reads 100 %.

Two serving processes both saturated (an API server and an engine core at ~100 % of a core,
as real vLLM 0.24 read under a flood of 1-token requests and under 128 streaming clients):
the finding names first the stage that holds the requests, then the other busy one.
"""
from __future__ import annotations

import dataclasses

from infersight.daemon.analysis.judge import judge
from infersight.daemon.analysis.observe import EpisodeSecond, ProcSecond, ThreadSecond
from infersight.daemon.analysis.throttle import find_throttle
from infersight.daemon.config.load import Config

CFG = Config().analysis
RATE = 50.0


def _seconds(http: float | None, engine: float, running: float, n: int = 20) -> list[EpisodeSecond]:
    api = ProcSecond(10, "api_server", 104.0, own=48, threads=(ThreadSecond(10, "MainThread", 48),))
    core = ProcSecond(20, "engine_core", 99.0, own=45, gpu_wait=3, threads=(ThreadSecond(20, "MainThread", 45, 3),))
    return [EpisodeSecond(t=t, lifecycle=None, sm=18.0, tensor=3.0, dram=18.0, util=40.0, running=running,
                          waiting=0.0, gen_tps=700.0, prompt_tps=5000.0, http_in_flight=http, engine_held=engine,
                          procs=(api, core)) for t in range(n)]


def test_a_front_end_holding_the_requests_is_named_first():
    v = judge(_seconds(http=240.0, engine=5.0, running=5.0), CFG, RATE)
    assert v.klass in ("host_bound", "launch_bound")
    th = find_throttle(v, CFG)
    assert th.decided_by == "queueing"
    assert [p.role for p in th.order] == ["api_server", "engine_core"]
    assert th.front_share > 0.9


def test_every_request_admitted_names_the_engine_even_below_the_api_servers_cpu():
    v = judge(_seconds(http=130.0, engine=126.0, running=126.0), CFG, RATE)
    th = find_throttle(v, CFG)
    assert th.decided_by == "queueing"
    assert [p.role for p in th.order] == ["engine_core", "api_server"]


def test_without_pipeline_figures_the_order_is_by_own_cpu_and_says_so():
    v = judge(_seconds(http=None, engine=5.0, running=5.0), CFG, RATE)
    th = find_throttle(v, CFG)
    assert th.decided_by == "cpu"
    assert th.first.role == "api_server"          # 104 % against 99 % x 45/48


def test_a_process_spinning_on_the_gpu_is_not_busy_on_its_own_work():
    secs = _seconds(http=130.0, engine=126.0, running=126.0)
    spinning = ProcSecond(20, "engine_core", 100.0, own=10, gpu_wait=40, threads=(ThreadSecond(20, "MainThread", 10, 40),))
    secs = [dataclasses.replace(s, procs=(s.procs[0], spinning)) for s in secs]
    v = judge(secs, CFG, RATE)
    core = v.proc(20)
    assert core.own_share == 0.2 and core.own_cpu == 20.0
    assert core.own_share_se is not None and core.working == len(secs) * 50
    th = find_throttle(v, CFG)
    assert [p.role for p in th.order] == ["api_server"]
