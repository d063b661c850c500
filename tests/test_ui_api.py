"""The UI's own route (/api/ui/timeline), its queries and the static files, through aiohttp's
in-process test client on a real store filled with batches."""
from __future__ import annotations

import re
from collections import Counter

import pytest

from infersight.storage import events as q_events
from infersight.storage import ui_queries
from infersight.storage.model import Batch, EngineSample, GpuSample, Window
from infersight.web.app import create_app
from infersight.web.keys import STATIC_DIR

T = 1_800_000_000.0
# GPU 0: idle 0-3, host_bound 3-6, a 2 s hole, host_bound 8-10 (a new run), memory_bound 10-12
CLASSES_0 = ["idle"] * 3 + ["host_bound"] * 3 + [None, None] + ["host_bound"] * 2 + ["memory_bound"] * 2
CLASSES_1 = ["compute_bound"] * 12


def windows(gpu: int, classes: list[str | None]) -> list[Window]:
    return [Window(T + i, T + i + 1, gpu, k, {}) for i, k in enumerate(classes) if k is not None]


@pytest.fixture
def filled(store):
    gpu = Batch("gpu", T)
    # GPU 0 has GPM (sm_util) and NVML util; GPU 1 only NVML util (a GPU without GPM)
    gpu.gpu_samples = [GpuSample(T + 0.25 * i, 0, {"sm_util": float(i % 4) * 10, "util_gpu": 50.0}) for i in range(48)]
    gpu.gpu_samples += [GpuSample(T + 0.25 * i, 1, {"util_gpu": 80.0}) for i in range(48)]
    engine = Batch("engines", T)
    engine.engine_samples = [EngineSample(T + i, "http://e:8000/metrics", "vllm", "m", "requests_running", float(i))
                             for i in range(12)]
    engine.engine_samples += [EngineSample(T + i, "http://e:8000/metrics", "vllm", "m", "prompt_tokens_per_s", 1.0)
                              for i in range(12)]
    store.submit(gpu)
    store.submit(engine)
    store.flush()
    store.write_sync(q_events.replace_windows, 0, T, T + 12, windows(0, CLASSES_0))
    store.write_sync(q_events.replace_windows, 1, T, T + 12, windows(1, CLASSES_1))
    return store


@pytest.fixture
async def client(aiohttp_client, make_config, filled):
    return await aiohttp_client(create_app(make_config(), filled, agent=None))


def test_class_runs_merge_touching_windows_of_one_class(filled):
    runs = filled.read_sync(ui_queries.class_runs, T, T + 12)
    assert runs[0] == [[T, T + 3, "idle"], [T + 3, T + 6, "host_bound"], [T + 8, T + 10, "host_bound"],
                       [T + 10, T + 12, "memory_bound"]]
    assert runs[1] == [[T, T + 12, "compute_bound"]]


def test_a_run_going_on_at_the_range_start_keeps_its_true_start(filled):
    runs = filled.read_sync(ui_queries.class_runs, T + 4.5, T + 4.8)
    assert runs == {0: [[T + 3, T + 5, "host_bound"]], 1: [[T, T + 5, "compute_bound"]]}
    assert filled.read_sync(ui_queries.class_runs, T + 6.5, T + 7.5) == {1: [[T, T + 8, "compute_bound"]]}, \
        "GPU 0 has no window in the range: no run; runs that ended before it are left out"


# GPU 2: 40 s flickering host_bound, host_bound, idle; a 30 s compute_bound run; 40 s flickering again
FLICKER = ["host_bound", "host_bound", "idle"] * 13 + ["host_bound"] + ["compute_bound"] * 30 \
    + ["idle", "idle", "memory_bound"] * 13 + ["idle"]


def test_runs_shorter_than_a_point_are_pooled_and_whole_runs_keep_their_bounds(store):
    store.write_sync(q_events.replace_windows, 2, T, T + len(FLICKER), windows(2, FLICKER))
    exact = store.read_sync(ui_queries.class_runs, T, T + 110)[2]
    assert len(exact) == 27 + 1 + 27, "every flicker is a run of its own"
    pooled = store.read_sync(ui_queries.class_runs, T, T + 110, 10.0)[2]
    assert [T + 40, T + 70, "compute_bound"] in pooled, "a run longer than a point keeps its bounds"
    before = [r for r in pooled if r[1] <= T + 40]
    after = [r for r in pooled if r[0] >= T + 70]
    assert len(before) + len(after) + 1 == len(pooled), "pools never overlap the whole run"
    assert {r[2] for r in before} == {"host_bound"} and {r[2] for r in after} == {"idle"}, \
        "a pool takes the class with the most seconds in it"
    assert [int((r[0] - T) // 10) for r in before] == [0, 1, 2, 3], "one pool per 10 s bin, by its first run's start"
    assert before[-1][1] == T + 40 and after[0][0] == T + 70 and after[-1][1] == T + 110
    assert all(a[1] <= b[0] for a, b in zip(pooled, pooled[1:])), "oldest first, disjoint"
    assert store.read_sync(ui_queries.class_runs, T, T + 110, 0.5)[2] == exact, \
        "no run is shorter than a half-second point: nothing pooled"
    totals = store.read_sync(ui_queries.class_totals, T + 5, T + 110)[2]
    assert totals == {k: float(n) for k, n in Counter(FLICKER[5:]).items()}, "exact, clipped to the range"
    with pytest.raises(ValueError):
        store.read_sync(ui_queries.class_runs, T, T + 10 ** 6, 1.0)


def test_gpu_activity_bins_means_and_leaves_out_unreported_signals(filled):
    act = filled.read_sync(ui_queries.gpu_activity, T, T + 12, 1.0)
    # four samples per second with sm_util 0, 10, 20, 30: the mean is 15
    assert [v for _, v in act[0]["sm_util"]] == [15.0] * 12
    assert [t for t, _ in act[0]["sm_util"]] == [T + i for i in range(12)]
    assert set(act[0]) == {"sm_util", "util_gpu"}
    assert set(act[1]) == {"util_gpu"}, "GPU 1 has no GPM: no empty series for it"
    with pytest.raises(ValueError):
        filled.read_sync(ui_queries.gpu_activity, T, T + 10 ** 6, 1.0)


async def test_timeline_route_answers_everything_the_timeline_draws(client):
    resp = await client.get("/api/ui/timeline", params={"from": T, "to": T + 12, "points": 100})
    assert resp.status == 200
    body = await resp.json()
    assert [g["gpu"] for g in body["gpus"]] == [0, 1]
    assert body["gpus"][0]["runs"][1] == [T + 3, T + 6, "host_bound"]
    assert body["runs_step"] == pytest.approx(0.12), "one point of 12 s over 100 points"
    assert body["gpus"][0]["class_seconds"] == {"idle": 3.0, "host_bound": 5.0, "memory_bound": 2.0}
    assert set(body["gpus"][1]["activity"]) == {"util_gpu"}
    # the step never goes below the data's own resolution, however many points are asked for
    assert body["gpu_step"] == 0.5 and body["engine_step"] == 1.0
    assert set(body["engine"]) == {"requests_running"}, "only the drawn signals that are stored"
    assert body["engine"]["requests_running"][3] == [T + 3, 3.0]
    assert body["extent"]["from"] == pytest.approx(T)


async def test_timeline_step_follows_the_range_on_long_views(client):
    body = await (await client.get("/api/ui/timeline", params={"from": T - 86400, "to": T + 12, "points": 1000})).json()
    assert body["gpu_step"] == pytest.approx((86400 + 12) / 1000)
    assert len(body["gpus"][0]["activity"]["util_gpu"]) == 1


@pytest.mark.parametrize("query, param", [({"from": T + 5, "to": T}, "from"), ({"from": T, "to": T + 1, "points": 5}, "points"),
                                          ({"from": T, "to": T + 1, "points": "x"}, "points")])
async def test_timeline_route_rejects_bad_parameters(client, query, param):
    resp = await client.get("/api/ui/timeline", params=query)
    assert resp.status == 400
    assert (await resp.json())["param"] == param


async def test_an_empty_store_answers_an_empty_timeline(aiohttp_client, make_config, store):
    client = await aiohttp_client(create_app(make_config(), store, agent=None))
    body = await (await client.get("/api/ui/timeline", params={"from": T, "to": T + 60})).json()
    assert body["gpus"] == [] and body["engine"] == {}
    assert body["extent"] == {"from": None, "to": None}


async def test_the_page_and_its_modules_are_served_under_the_strict_policy(client):
    resp = await client.get("/")
    assert resp.status == 200
    html = await resp.text()
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    # no inline script or style: the policy would block them
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)
    assert "style=" not in html and "<style" not in html
    scripts = re.findall(r'<script type="module" src="/static/([^"]+)"', html)
    assert scripts == ["main.js"]
    for path in sorted(STATIC_DIR.glob("*.js")):
        r = await client.get(f"/static/{path.name}")
        assert r.status == 200
        assert r.content_type in ("application/javascript", "text/javascript")
        text = await r.text()
        # markup from data never goes through the HTML parser
        assert not re.search(r"\.(inner|outer)HTML\b|insertAdjacentHTML|document\.write|\beval\(", text), path.name
        for imported in re.findall(r'from "\./([^"]+)"', text):
            assert (STATIC_DIR / imported).is_file(), f"{path.name} imports a missing module {imported}"
