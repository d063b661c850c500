"""Heavy flame graphs and diffs stay within their budgets (issue 30, item 5).

On a small store shaped like bench/heavy_queries.py's (8 call chains 300 frames deep, 4,000
distinct leaves; the bench has 64 x 4,990 and 332,800):

- a range whose stack trie exceeds ``web.query_max_stack_nodes`` answers its heaviest part:
  200, ``truncated`` with ``truncated_by: memory``, the leaves shown and the value omitted,
  and the root still counts the whole range; the same for a diff and the exports;
- a query whose SQL passes ``web.query_timeout_s`` is interrupted and answered 503 with
  ``reason: time``; one whose stack reading passes it answers what it read, truncated;
- DuckDB running out of its memory limit is a 503 with ``reason: memory``, never a 500;
- heavy requests wait in line: with one slot, six at once all succeed and never overlap;
  beyond ``web.heavy_queue`` waiting, the next is answered 503 at once with Retry-After.

The bench itself (figures in BENCHMARKS.md) checks the serving process's memory and times.
"""
from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from infersight.daemon.config.load import Config, with_overrides
from infersight.storage import flame_query, stacks
from infersight.storage.store import Store
from infersight.web.app import create_app

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from _heavy_store import build  # noqa: E402

T_TO = 1_800_000_000
T_FROM = T_TO - 3600
CHAINS, DEPTH, LEAVES = 8, 300, 500


@pytest.fixture(scope="module")
def heavy_db(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("heavy") / "heavy.duckdb")
    build(path, T_TO, chains=CHAINS, depth=DEPTH, leaves_per_chain=LEAVES, hot=4)
    return path


@pytest.fixture
def make_client(heavy_db):
    made = []

    async def make(**web) -> TestClient:
        config = with_overrides(Config(), **{f"web.{k}": v for k, v in web.items()})
        store = Store.open(heavy_db, read_only=True, threads=2, memory_limit_mb=32)
        client = TestClient(TestServer(create_app(config, store)))
        await client.start_server()
        made.append((client, store))
        return client

    yield make
    for _, store in made:          # each test closes its client
        store.close()


async def _json(resp) -> dict:
    text = await resp.text()
    return json.loads(text)


@pytest.fixture(autouse=True)
def _deep_json():
    """A 300-frame tree nests 600 levels: Python's json needs a higher recursion limit."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 10_000))
    yield
    sys.setrecursionlimit(old)


def total_samples(db: str) -> int:
    store = Store.open(db, read_only=True)
    try:
        return int(store.read_sync(stacks.profile, T_FROM, T_TO).total)
    finally:
        store.close()


async def test_a_range_over_the_node_budget_answers_its_heaviest_part(make_client, heavy_db):
    client = await make_client(query_max_stack_nodes=1000)
    try:
        resp = await client.get("/api/flamegraph", params={"from": T_FROM, "to": T_TO})
        assert resp.status == 200
        tree = await _json(resp)
        assert tree["truncated"] is True and tree["truncated_by"] == "memory"
        assert tree["leaves"] == CHAINS * LEAVES and 0 < tree["leaves_shown"] < tree["leaves"]
        assert tree["value"] == tree["total"] == total_samples(heavy_db)   # the root counts the whole range
        shown = sum(c["value"] for c in tree["children"])
        assert shown + tree["omitted"] == pytest.approx(tree["total"])
        # without the bound, the same query answers everything
        full = await _json(await client.get("/api/flamegraph", params={"from": T_FROM, "to": T_TO,
                                                                       "max_nodes": 1_000_000}))
        assert full["value"] == tree["value"]
    finally:
        await client.close()


async def test_the_whole_range_fits_a_larger_budget(make_client, heavy_db):
    client = await make_client()
    try:
        tree = await _json(await client.get("/api/flamegraph", params={"from": T_FROM, "to": T_TO,
                                                                       "max_nodes": 1_000_000}))
        assert tree["truncated"] is False and tree["truncated_by"] is None and tree["omitted"] == 0
        assert tree["leaves_shown"] == tree["leaves"] == CHAINS * LEAVES
        depth, node = 0, tree
        while node["children"]:
            node = max(node["children"], key=lambda c: c["value"])
            depth += 1
        assert depth == 8 + DEPTH + 1
    finally:
        await client.close()


async def test_diff_and_exports_are_bounded_too(make_client):
    client = await make_client(query_max_stack_nodes=1000)
    try:
        mid = (T_FROM + T_TO) // 2
        diff = await _json(await client.get("/api/diff", params={"a_from": T_FROM, "a_to": mid, "b_from": mid,
                                                                 "b_to": T_TO}))
        assert diff["truncated"] is True and diff["a_truncation"]["truncated_by"] == "memory"
        assert diff["top_changes"]
        resp = await client.get("/api/flamegraph", params={"from": T_FROM, "to": T_TO, "format": "folded"})
        assert resp.status == 200 and resp.headers["X-Infersight-Truncated"] == "true"
        kept, total = resp.headers["X-Infersight-Stacks"].split("/")
        assert 0 < int(kept) < int(total) == CHAINS * LEAVES
        assert float(resp.headers["X-Infersight-Omitted-Value"]) > 0
    finally:
        await client.close()


async def test_a_slow_query_is_interrupted_and_answered_503(make_client, monkeypatch):
    slow = ("SELECT 1 AS stack, count(*) FROM range(100000000000) a(i) WHERE i % 7 = ?", [3])
    monkeypatch.setattr(stacks, "leaf_query", lambda *a, **k: slow)
    client = await make_client(query_timeout_s=1.0)
    try:
        started = time.monotonic()
        resp = await client.get("/api/flamegraph", params={"from": T_FROM, "to": T_TO})
        assert resp.status == 503 and time.monotonic() - started < 10
        body = await _json(resp)
        assert body["reason"] == "time" and "1 s budget" in body["error"] and "narrow the range" in body["error"]
    finally:
        await client.close()


async def test_slow_stack_reading_answers_what_it_read(make_client, monkeypatch):
    real = stacks.load_nodes

    def slow(*args, **kwargs):
        time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(stacks, "load_nodes", slow)
    monkeypatch.setattr(flame_query, "LEAF_BATCH", 64)      # 4,000 leaves: some 60 reads of 0.3 s
    client = await make_client(query_timeout_s=3.0)
    try:
        resp = await client.get("/api/flamegraph", params={"from": T_FROM, "to": T_TO})
        assert resp.status == 200
        tree = await _json(resp)
        assert tree["truncated"] is True and tree["truncated_by"] == "time" and tree["leaves_shown"] > 0
    finally:
        await client.close()


async def test_duckdb_out_of_memory_is_503_not_500(make_client, monkeypatch):
    greedy = ("SELECT 1 AS stack, length(string_agg(repeat('x', 1000), '')) FROM range(?)", [200_000])
    monkeypatch.setattr(stacks, "leaf_query", lambda *a, **k: greedy)
    client = await make_client()
    try:
        resp = await client.get("/api/flamegraph", params={"from": T_FROM, "to": T_TO})
        assert resp.status == 503
        assert (await _json(resp))["reason"] == "memory"
    finally:
        await client.close()


async def test_concurrent_heavy_requests_wait_in_line(make_client, monkeypatch):
    running, most = [0], [0]
    lock = threading.Lock()
    real = flame_query.trie_profile

    def counted(*args, **kwargs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            time.sleep(0.2)
            return real(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr("infersight.web.heavy.trie_profile", counted)
    client = await make_client(heavy_queries=1, heavy_queue=8)
    try:
        answers = await asyncio.gather(*(client.get("/api/flamegraph", params={"from": T_FROM + k, "to": T_TO})
                                         for k in range(6)))
        assert [r.status for r in answers] == [200] * 6
        assert most[0] == 1
    finally:
        await client.close()


async def test_a_full_line_is_answered_at_once(make_client, monkeypatch):
    gate = threading.Event()
    real = flame_query.trie_profile

    def held(*args, **kwargs):
        gate.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr("infersight.web.heavy.trie_profile", held)
    client = await make_client(heavy_queries=1, heavy_queue=2)
    try:
        first = [asyncio.create_task(client.get("/api/flamegraph", params={"from": T_FROM + k, "to": T_TO}))
                 for k in range(3)]
        await asyncio.sleep(0.5)          # one runs, two wait
        started = time.monotonic()
        extra = await client.get("/api/flamegraph", params={"from": T_FROM, "to": T_TO})
        assert extra.status == 503 and time.monotonic() - started < 2
        assert extra.headers["Retry-After"] == "5" and (await _json(extra))["reason"] == "busy"
        gate.set()
        assert [r.status for r in await asyncio.gather(*first)] == [200, 200, 200]
    finally:
        gate.set()
        await client.close()
