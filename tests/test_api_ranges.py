"""Ranges scripts ask for: ``from=0`` ("since the beginning") on /api/events and /api/windows,
whose answers ``limit`` bounds; routes whose work grows with the range still refuse it."""
from __future__ import annotations

import time

import pytest

from infersight.storage.events import replace_windows, upsert_events
from infersight.storage.model import Event, Window
from infersight.web.app import create_app

OLD = 1_000_000_000.0        # 2001: years before any sensible MAX_RANGE_S
RECENT = time.time() - 600.0


@pytest.fixture
async def client(aiohttp_client, make_config, store):
    events = [Event(f"old-{i}", "cpu_gpu_gap", OLD + 10 * i, OLD + 10 * i + 5, "h", 0) for i in range(3)]
    events += [Event(f"new-{i}", "saturation", RECENT + 10 * i, RECENT + 10 * i + 5, "h", 1) for i in range(2)]
    store.write_sync(upsert_events, events)
    store.write_sync(replace_windows, 0, OLD, OLD + 5, [Window(OLD + s, OLD + s + 1, 0, "idle", {"sm_util": 0.0})
                                                       for s in range(5)])
    store.write_sync(replace_windows, 1, RECENT, RECENT + 3,
                     [Window(RECENT + s, RECENT + s + 1, 1, "compute_bound", {"mfu": 0.4}) for s in range(3)])
    return await aiohttp_client(create_app(make_config(), store, agent=None))


async def test_events_from_zero_answers_everything_newest_first(client):
    resp = await client.get("/api/events", params={"from": 0})
    assert resp.status == 200
    ids = [e["id"] for e in (await resp.json())["events"]]
    assert ids == ["new-1", "new-0", "old-2", "old-1", "old-0"]
    limited = (await (await client.get("/api/events", params={"from": 0, "limit": 2})).json())["events"]
    assert [e["id"] for e in limited] == ["new-1", "new-0"]
    only_old = (await (await client.get("/api/events", params={"from": 0, "to": OLD + 100})).json())["events"]
    assert {e["id"] for e in only_old} == {"old-0", "old-1", "old-2"}


async def test_windows_from_zero_answers_everything_bounded_by_limit(client):
    resp = await client.get("/api/windows", params={"from": 0})
    assert resp.status == 200
    rows = (await resp.json())["windows"]
    assert [(w["gpu"], w["start"]) for w in rows] == [(0, OLD + s) for s in range(5)] + [(1, RECENT + s) for s in range(3)]
    assert rows[-1]["features"] == {"mfu": 0.4}
    limited = (await (await client.get("/api/windows", params={"from": 0, "limit": 3})).json())["windows"]
    assert [w["start"] for w in limited] == [OLD, OLD + 1, OLD + 2]
    gpu1 = (await (await client.get("/api/windows", params={"from": 0, "gpu": 1, "limit": 2})).json())["windows"]
    assert [w["start"] for w in gpu1] == [RECENT, RECENT + 1]


@pytest.mark.parametrize("path, query, param", [
    ("/api/windows", {"from": 0, "limit": 0}, "limit"),
    ("/api/windows", {"from": 0, "limit": 10**9}, "limit"),
    ("/api/events", {"from": -1}, "from"),
    ("/api/windows", {"from": 5, "to": 5}, "from"),
    ("/api/flamegraph", {"from": 0}, "from"),        # work grows with the range: still bounded
    ("/api/series", {"signal": "sm_util", "from": 0}, "from"),
])
async def test_other_ranges_are_still_refused(client, path, query, param):
    resp = await client.get(path, params={k: str(v) for k, v in query.items()})
    assert resp.status == 400
    assert (await resp.json())["param"] == param
