"""The engine's MFU and MBU (analysis window features, 0-1) in the UI's timeline answer: binned
per GPU, absent for a GPU whose windows carry none (an engine without FLOP/byte counters)."""
from __future__ import annotations

import pytest

from infersight.storage import ui_queries
from infersight.storage.events import replace_windows
from infersight.storage.model import Window
from infersight.web.app import create_app

T = 1_790_000_000.0


@pytest.fixture
def filled(store):
    # GPU 0: MFU 0.1 then 0.3 (10 s each), MBU 0.5 throughout; GPU 1: windows without either
    store.write_sync(replace_windows, 0, T, T + 20, [
        Window(T + s, T + s + 1, 0, "compute_bound", {"mfu": 0.1 if s < 10 else 0.3, "mbu": 0.5}) for s in range(20)])
    store.write_sync(replace_windows, 1, T, T + 20, [
        Window(T + s, T + s + 1, 1, "idle", {"sm_util": 0.0}) for s in range(20)])
    return store


def test_window_ratios_bin_means_per_gpu(filled):
    got = filled.read_sync(ui_queries.window_ratios, T, T + 20, 5.0)
    assert set(got) == {0}, "GPU 1's windows carry no MFU or MBU"
    assert got[0]["mfu"] == [[T, 0.1], [T + 5, 0.1], [T + 10, 0.3], [T + 15, 0.3]]
    assert got[0]["mbu"] == [[T + 5 * k, 0.5] for k in range(4)]
    # a bin straddling the change holds the mean of its windows
    assert filled.read_sync(ui_queries.window_ratios, T + 8, T + 12, 4.0)[0]["mfu"] == [[T + 8, 0.2]]


def test_window_ratios_leave_out_a_ratio_never_reported(store):
    store.write_sync(replace_windows, 0, T, T + 5, [Window(T + s, T + s + 1, 0, "memory_bound", {"mbu": 0.7})
                                                    for s in range(5)])
    assert store.read_sync(ui_queries.window_ratios, T, T + 5, 1.0) == {0: {"mbu": [[T + s, 0.7] for s in range(5)]}}
    with pytest.raises(ValueError):
        store.read_sync(ui_queries.window_ratios, T, T + 5, 0.0)


async def test_timeline_answer_carries_the_roof_per_gpu(aiohttp_client, make_config, filled):
    client = await aiohttp_client(create_app(make_config(), filled, agent=None))
    body = await (await client.get("/api/ui/timeline", params={"from": T, "to": T + 20, "points": 10})).json()
    assert body["roof_step"] == 2.0
    gpus = {g["gpu"]: g for g in body["gpus"]}
    assert gpus[0]["roof"]["mfu"][0] == [T, 0.1] and gpus[0]["roof"]["mfu"][-1] == [T + 18, 0.3]
    assert gpus[1]["roof"] == {}
