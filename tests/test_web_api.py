"""The JSON API through aiohttp's in-process test client, on a real store filled with batches."""
from __future__ import annotations

import math
import time
from collections import Counter
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import make_mocked_request
from hypothesis import given, settings
from hypothesis import strategies as st

from infersight.storage import events as q_events
from infersight.storage.model import Batch, Event, Frame, GpuSample, ProcessSample, StackSample, Target
from infersight.web import params
from infersight.web.app import create_app

T = 472_222 * 3600          # a whole hour; range A is [T, T+10), range B is [T+100, T+110)
B_OFFSET = 100
ENGINE, API = 4242, 77

MAIN = Frame("main", "/srv/app.py", 10)
SERVE = Frame("serve", "/srv/app.py", 20)
STEP = Frame("step", "/srv/engine.py", 30)
STEP_B = Frame("step", "/srv/engine.py", 31)        # same function, another line: one node
MATMUL = Frame("matmul", "/srv/engine.py", 40)
SLEEP = Frame("sleep", "/srv/engine.py", 55)
HANDLE = Frame("handle", "/srv/api.py", 7)

# per second: (pid, frames, active, count)
RANGE_A = [(ENGINE, (MAIN, SERVE, STEP, MATMUL), True, 5), (ENGINE, (MAIN, SERVE, STEP_B, MATMUL), True, 1),
           (ENGINE, (MAIN, SERVE, STEP, SLEEP), False, 2), (API, (MAIN, HANDLE), True, 1)]
RANGE_B = [(ENGINE, (MAIN, SERVE, STEP, MATMUL), True, 10), (ENGINE, (MAIN, SERVE, STEP, SLEEP), False, 2),
           (API, (MAIN, HANDLE), True, 1)]
SECONDS = 10


def stacks_batch(second: int, per_second) -> Batch:
    b = Batch("stacks", float(second))
    b.targets += [Target("testhost", ENGINE, 1.0, "python -m vllm.entrypoints.openai.api_server", role="engine"),
                  Target("testhost", API, 2.0, "python api.py", role="api_server")]
    for pid, frames, active, n in per_second:
        b.stack_samples.append(StackSample(second, pid, 1.0 if pid == ENGINE else 2.0, pid * 10, "MainThread",
                                           frames, active, n))
    return b


def expected_stacks(per_second, keep=lambda pid, active: True) -> Counter:
    """Function-name paths -> samples over SECONDS, computed from the input, not from the API."""
    out: Counter = Counter()
    for pid, frames, active, n in per_second:
        if keep(pid, active):
            out[tuple(f.function for f in frames)] += n * SECONDS
    return out


@pytest.fixture
def filled(store):
    for s in range(SECONDS):
        store.submit(stacks_batch(T + s, RANGE_A))
        store.submit(stacks_batch(T + B_OFFSET + s, RANGE_B))
    gpu = Batch("gpu", float(T))
    gpu.gpu_samples = [GpuSample(T + 0.5 * i, 0, {"sm_util": float(i), "util_gpu": 100.0}) for i in range(2 * SECONDS)]
    gpu.gpu_samples += [GpuSample(T + B_OFFSET + 0.5 * i, 0, {"sm_util": 25.0}) for i in range(2 * SECONDS)]
    store.submit(gpu)
    store.flush()
    return store


@pytest.fixture
def make_client(aiohttp_client, make_config):
    async def make(store, **overrides):
        return await aiohttp_client(create_app(make_config(**overrides), store, agent=None))
    return make


@pytest.fixture
async def client(make_client, filled):
    return await make_client(filled)


def walk(node, path=()):
    here = path + (node["name"],)
    yield here, node
    for child in node["children"]:
        yield from walk(child, here)


def tree_leaf_values(tree) -> Counter:
    """Self values (value minus children) per function path, as the tree says."""
    out: Counter = Counter()
    for path, node in walk(tree):
        own = node["value"] - sum(c["value"] for c in node["children"])
        if own:
            out[path[1:]] += own
    return out


async def test_flamegraph_json_adds_up(client):
    resp = await client.get("/api/flamegraph", params={"from": T, "to": T + SECONDS})
    assert resp.status == 200
    tree = await resp.json()
    expected = expected_stacks(RANGE_A)
    assert tree["value"] == tree["total"] == sum(expected.values())
    for _, node in walk(tree):
        assert node["value"] >= sum(c["value"] for c in node["children"])
        values = [c["value"] for c in node["children"]]
        assert values == sorted(values, reverse=True)
    assert tree_leaf_values(tree) == expected
    nodes = {path[1:]: node for path, node in walk(tree)}
    matmul = nodes[("main", "serve", "step", "matmul")]
    assert (matmul["file"], matmul["line"]) == ("/srv/engine.py", 40)
    step = nodes[("main", "serve", "step")]
    assert step["line"] == 30  # two lines merge into one node showing the line with most samples
    assert step["value"] == expected[("main", "serve", "step", "matmul")] + expected[("main", "serve", "step", "sleep")]


@pytest.mark.parametrize("query, keep", [
    ({"pid": ENGINE}, lambda pid, active: pid == ENGINE),
    ({"role": "api_server"}, lambda pid, active: pid == API),
    ({"active": "1"}, lambda pid, active: active),
    ({"active": "idle", "pid": f"{ENGINE},{API}"}, lambda pid, active: not active),
    ({"tid": ENGINE * 10}, lambda pid, active: pid == ENGINE),
])
async def test_flamegraph_filters(client, query, keep):
    tree = await (await client.get("/api/flamegraph", params={"from": T, "to": T + SECONDS, **query})).json()
    assert tree_leaf_values(tree) == expected_stacks(RANGE_A, keep)


async def test_flamegraph_gpu_idle_weight(client):
    # range B: sm_util 25 in every second, so each sample weighs 0.75
    tree = await (await client.get("/api/flamegraph", params={
        "from": T + B_OFFSET, "to": T + B_OFFSET + SECONDS, "weight": "gpu_idle"})).json()
    assert tree["weight"] == "gpu_idle"
    assert tree["value"] == pytest.approx(0.75 * sum(expected_stacks(RANGE_B).values()))


async def test_folded_parses_back(client):
    resp = await client.get("/api/flamegraph", params={"from": T, "to": T + SECONDS, "format": "folded"})
    assert resp.status == 200 and resp.content_type == "text/plain"
    assert "attachment" in resp.headers["Content-Disposition"]
    parsed: Counter = Counter()
    for line in (await resp.text()).splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        for f in frames:
            assert f.endswith(")") and " (/srv/" in f  # function (file:line)
        parsed[tuple(f.split(" (")[0] for f in frames)] += int(count)
    assert parsed == expected_stacks(RANGE_A)


async def test_speedscope_is_a_valid_sampled_profile(client):
    resp = await client.get("/api/flamegraph", params={"from": T, "to": T + SECONDS, "format": "speedscope"})
    doc = await resp.json()
    assert doc["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    frames = doc["shared"]["frames"]
    (prof,) = doc["profiles"]
    assert prof["type"] == "sampled" and len(prof["samples"]) == len(prof["weights"])
    assert sum(prof["weights"]) == prof["endValue"] == sum(expected_stacks(RANGE_A).values())
    got: Counter = Counter()
    for sample, weight in zip(prof["samples"], prof["weights"]):
        got[tuple(frames[i]["name"] for i in sample)] += weight
    assert got == expected_stacks(RANGE_A)
    assert {"name": "matmul", "file": "/srv/engine.py", "line": 40} in frames


async def test_diff_compares_two_ranges(client):
    resp = await client.get("/api/diff", params={"a_from": T, "a_to": T + SECONDS,
                                                 "b_from": T + B_OFFSET, "b_to": T + B_OFFSET + SECONDS})
    assert resp.status == 200
    diff = await resp.json()
    total_a, total_b = sum(expected_stacks(RANGE_A).values()), sum(expected_stacks(RANGE_B).values())
    assert (diff["a"], diff["b"], diff["a_total"], diff["b_total"]) == (total_a, total_b, total_a, total_b)
    nodes = {path[1:]: node for path, node in walk(diff)}
    matmul = nodes[("main", "serve", "step", "matmul")]
    assert matmul["a"] == 60 and matmul["b"] == 100
    assert matmul["delta_share"] == pytest.approx(100 / total_b - 60 / total_a, abs=1e-5)
    top = diff["top_changes"][0]
    assert top["name"] == "matmul" and top["delta_share"] > 0


async def test_series_bins_gpu_samples_by_step(client):
    resp = await client.get("/api/series", params={"signal": "sm_util", "gpu": 0, "from": T, "to": T + SECONDS,
                                                   "step": 2})
    body = await resp.json()
    assert body["unit"] == "percent" and body["gpu"] == 0
    values = [float(i) for i in range(2 * SECONDS)]           # sm_util = i at T + 0.5 i
    expected = [[T + 2 * k, sum(values[4 * k:4 * k + 4]) / 4] for k in range(SECONDS // 2)]
    assert body["points"] == expected


async def test_series_default_step_and_other_gpu(client):
    one = await (await client.get("/api/series", params={"signal": "sm_util", "from": T, "to": T + 4})).json()
    assert [p[0] for p in one["points"]] == [T, T + 1, T + 2, T + 3]  # short range: 1 s bins
    none = await (await client.get("/api/series", params={"signal": "sm_util", "gpu": 3, "from": T,
                                                          "to": T + 4})).json()
    assert none["points"] == []


async def test_processes_health_signals_and_events(client, filled):
    now = time.time()
    b = Batch("host", now, targets=[Target("testhost", ENGINE, 1.0, "vllm", role="engine")])
    b.process_samples = [ProcessSample(now, ENGINE, 1.0, 150.0, 123 << 20, 17, 5, 6)]
    filled.submit(b)
    filled.flush()
    procs = (await (await client.get("/api/processes")).json())["processes"]
    engine = next(p for p in procs if p["pid"] == ENGINE)
    assert (engine["cpu_percent"], engine["rss_bytes"], engine["threads"], engine["role"]) == (150.0, 123 << 20,
                                                                                             17, "engine")
    everyone = (await (await client.get("/api/processes", params={"all": "1"})).json())["processes"]
    assert {p["pid"] for p in everyone} == {ENGINE, API}

    health = await (await client.get("/api/health")).json()
    assert health["status"] == "ok" and health["storage"]["path"] == filled.path
    assert health["storage"]["rows_written"] == filled.stats().rows_written > 0

    signals = {s["signal"]: s for s in (await (await client.get("/api/signals")).json())["signals"]}
    assert signals["sm_util"] == {"signal": "sm_util", "unit": "percent", "kind": "gpu"}

    filled.write_sync(q_events.upsert_events, [Event("e1", "cpu_gpu_gap", T + 1, T + 5, "testhost", 0,
                                                     top_frames=[{"frame": "sleep", "share": 0.9}])])
    events = (await (await client.get("/api/events", params={"from": T, "to": T + 60})).json())["events"]
    assert [(e["id"], e["kind"], e["top_frames"][0]["frame"]) for e in events] == [("e1", "cpu_gpu_gap", "sleep")]
    one = await (await client.get("/api/events/e1")).json()
    assert one["duration_s"] == 4
    assert (await client.get("/api/events/nope")).status == 404


BAD = [
    ("/api/flamegraph", {"from": 10, "to": 5}, "from"),
    ("/api/flamegraph", {"from": "abc"}, "from"),
    ("/api/flamegraph", {"to": "1e300"}, "to"),
    ("/api/flamegraph", {"from": "nan"}, "from"),
    ("/api/flamegraph", {"from": "-inf"}, "from"),
    ("/api/flamegraph", {"from": 0, "to": 1e10}, "from"),                 # range of centuries
    ("/api/flamegraph", {"format": "xml"}, "format"),
    ("/api/flamegraph", {"weight": "cpu"}, "weight"),
    ("/api/flamegraph", {"pid": "1;DROP TABLE targets"}, "pid"),
    ("/api/flamegraph", {"tid": "9" * 30}, "tid"),
    ("/api/flamegraph", {"max_nodes": 0}, "max_nodes"),
    ("/api/flamegraph", {"gpu": -1}, "gpu"),
    ("/api/flamegraph", {"gpu": "9" * 40}, "gpu"),
    ("/api/flamegraph", {"active": "maybe"}, "active"),
    ("/api/flamegraph", {"role": "r" * 500}, "role"),
    ("/api/diff", {"a_from": 5, "a_to": 1}, "a_from"),
    ("/api/diff", {"b_to": "x"}, "b_to"),
    ("/api/series", {}, "signal"),
    ("/api/series", {"signal": "1;DROP TABLE gpu_samples"}, "signal"),
    ("/api/series", {"signal": "sm_util' OR '1'='1"}, "signal"),
    ("/api/series", {"signal": "x" * 1000}, "signal"),
    ("/api/series", {"signal": "sm_util", "step": 0}, "step"),
    ("/api/series", {"signal": "sm_util", "step": -5}, "step"),
    ("/api/series", {"signal": "sm_util", "from": 0, "to": 3e7, "step": 0.01}, "step"),
    ("/api/series", {"signal": "sm_util", "gpu": "abc"}, "gpu"),
    ("/api/series", {"signal": "process_cpu_percent"}, "pid"),
    ("/api/events", {"limit": 0}, "limit"),
    ("/api/events", {"kind": "k" * 100}, "kind"),
    ("/api/processes", {"all": "perhaps"}, "all"),
    ("/api/windows", {"from": 1, "to": 1}, "from"),
    ("/api/threads", {"to": "1;DROP TABLE threads"}, "to"),
]


@pytest.mark.parametrize("path, query, name", BAD, ids=[f"{p}-{'&'.join(map(str, q))}" for p, q, _ in BAD])
async def test_bad_parameters_are_400_json(client, path, query, name):
    resp = await client.get(path, params={k: str(v) for k, v in query.items()})
    assert resp.status == 400
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert body["param"] == name and body["error"].startswith(f"{name}:")
    assert "Traceback" not in body["error"]


async def test_injection_attempts_leave_the_data_alone(client):
    for q in ({"pid": "1;DROP TABLE targets"}, {"role": "x' OR '1'='1"}, {"role": "'; DELETE FROM stack_samples; --"}):
        await client.get("/api/flamegraph", params={"from": T, "to": T + SECONDS, **q})
    sneaky = await (await client.get("/api/flamegraph", params={"from": T, "to": T + SECONDS,
                                                                 "role": "x' OR '1'='1"})).json()
    assert sneaky["value"] == 0  # a value, never SQL
    tree = await (await client.get("/api/flamegraph", params={"from": T, "to": T + SECONDS})).json()
    assert tree["value"] == sum(expected_stacks(RANGE_A).values())


async def test_internal_errors_are_json_500_without_details(make_client, tmp_path):
    from infersight.storage.store import Store

    s = Store.open(str(tmp_path / "closed.duckdb"))
    cl = await make_client(s)
    s.close()  # every query now fails inside the handler
    resp = await cl.get("/api/flamegraph")
    assert resp.status == 500 and resp.content_type == "application/json"
    assert await resp.json() == {"error": "internal error; see the agent's log"}


@pytest.mark.parametrize("path, status", [("/api/health", 200), ("/api/flamegraph?from=x", 400),
                                          ("/api/nothing-here", 404), ("/", 200)])
async def test_security_headers_on_every_response(client, path, status):
    resp = await client.get(path)
    assert resp.status == status
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    if status >= 400:
        assert resp.content_type == "application/json"


async def test_bearer_token_is_enforced(make_client, filled):
    cl = await make_client(filled, **{"web.auth_token": "s3cret-token"})
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"},
                    {"Authorization": "Basic czNjcmV0LXRva2Vu"}):
        for path in ("/api/health", "/api/flamegraph", "/api/events", "/metrics"):
            resp = await cl.get(path, headers=headers)
            assert resp.status == 401, (path, headers)
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert "s3cret" not in await resp.text()
    ok = await cl.get("/api/health", headers={"Authorization": "Bearer s3cret-token"})
    assert ok.status == 200 and (await ok.json())["status"] == "ok"
    # the page and its code hold no data: a browser loads them, then asks for the token
    page = await cl.get("/")
    assert page.status == 200 and "s3cret" not in await page.text()
    assert page.headers["Content-Security-Policy"]
    assert (await cl.get("/static/api.js")).status == 200
    assert (await cl.post("/")).status in (401, 405)


async def test_no_token_configured_means_open(client):
    assert (await client.get("/api/health")).status == 200


# -- parameter parsing as a property: any query string gives a clean range or a 400 ----------

texts = st.one_of(st.none(), st.text(max_size=30), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                  st.integers(min_value=-10**30, max_value=10**30).map(str))


@settings(max_examples=300, deadline=None)
@given(f=texts, t=texts)
def test_time_range_is_ordered_finite_and_bounded_or_400(f, t):
    query = {k: v for k, v in (("from", f), ("to", t)) if v is not None}
    req = make_mocked_request("GET", "/api/x?" + urlencode(query))
    try:
        lo, hi = params.time_range(req)
    except params.BadParam as exc:
        assert exc.status == 400
        return
    assert math.isfinite(lo) and lo < hi <= 1e11 and hi - lo <= params.MAX_RANGE_S
    if f:  # an explicit from (empty means missing)
        assert lo >= 0
