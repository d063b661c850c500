"""MFU, MBU and scrape latency through the HTTP API: /api/series, /api/signals, /api/windows."""
from __future__ import annotations

import pytest

from infersight.daemon.analysis.analyzer import Analyzer
from infersight.daemon.config.load import Config
from infersight.storage.model import Batch, EngineSample, GpuInfo, GpuSample
from infersight.web.app import create_app

T0 = 1_700_000_000
H200_BF16 = 989.5e12
A, B = "http://127.0.0.1:8000/metrics", "http://127.0.0.1:8001/metrics"


@pytest.fixture
async def client(store, aiohttp_client):
    """GPU 0 an H200, GPU 1 a model the peak table does not know; engine A ramps its FLOPs
    from 10% to 55% of an H200 over 10 s and reads + writes 2.4 TB/s; engine B idles."""
    b = Batch("t", float(T0), gpu_info=[GpuInfo(0, "GPU-0", "NVIDIA H200", peak_dram_bw_bytes_s=4.8e12),
                                        GpuInfo(1, "GPU-1", "NVIDIA Imaginary 1", peak_dram_bw_bytes_s=3.0e12)])
    for i in range(10):
        t = T0 + i
        for gpu in (0, 1):
            b.gpu_samples.append(GpuSample(t + 0.5, gpu, {"util_gpu": 100.0, "sm_util": 80.0, "tensor_util": 50.0,
                                                          "dram_bw_util": 40.0}))
        b.engine_samples += [
            EngineSample(t + 0.1, A, "vllm", "m", "flops_per_gpu_per_s", (0.1 + 0.05 * i) * H200_BF16),
            EngineSample(t + 0.1, A, "vllm", "m", "read_bytes_per_gpu_per_s", 2.0e12),
            EngineSample(t + 0.1, A, "vllm", "m", "write_bytes_per_gpu_per_s", 0.4e12),
            EngineSample(t + 0.1, A, "vllm", "m", "scrape_latency_seconds", 0.5 + 0.1 * i),
            EngineSample(t + 0.2, B, "vllm", "m", "flops_per_gpu_per_s", 0.0),
            EngineSample(t + 0.2, B, "vllm", "m", "scrape_latency_seconds", 0.01),
        ]
    store.submit(b)
    store.flush()
    Analyzer(Config(), store).analyse(T0, T0 + 10)
    return await aiohttp_client(create_app(Config(), store, agent=None))


async def get(client, path: str, **params) -> tuple[int, dict]:
    resp = await client.get(path, params={k: str(v) for k, v in params.items()})
    return resp.status, await resp.json()


async def test_mfu_series_of_a_known_gpu(client):
    status, body = await get(client, "/api/series", signal="engine_mfu", gpu=0, **{"from": T0, "to": T0 + 10}, step=1)
    assert status == 200 and body["unit"] == "ratio" and body["gpu_name"] == "NVIDIA H200"
    assert body["peak"] == pytest.approx(H200_BF16) and "datasheet" in body["peak_source"]
    assert [round(v, 4) for _, v in body["points"]] == [round(0.1 + 0.05 * i, 4) for i in range(10)]
    status, body = await get(client, "/api/series", signal="engine_mbu", gpu=0, **{"from": T0, "to": T0 + 10}, step=5)
    assert [v for _, v in body["points"]] == [pytest.approx(0.5), pytest.approx(0.5)]


async def test_an_unknown_gpu_gets_no_mfu_and_says_why_but_an_mbu_from_nvml(client):
    status, body = await get(client, "/api/series", signal="engine_mfu", gpu=1, **{"from": T0, "to": T0 + 10})
    assert status == 200 and body["points"] == [] and body["peak"] is None
    assert "NVIDIA Imaginary 1" in body["reason"]
    status, body = await get(client, "/api/series", signal="engine_mbu", gpu=1, **{"from": T0, "to": T0 + 10}, step=10)
    assert body["peak_source"].startswith("NVML") and body["points"][0][1] == pytest.approx(2.4e12 / 3.0e12)


async def test_bad_gpu_is_a_clear_400(client):
    status, body = await get(client, "/api/series", signal="engine_mfu", gpu="zero")
    assert status == 400 and body["param"] == "gpu"


async def test_signals_lists_them_with_units(client):
    _, body = await get(client, "/api/signals")
    kinds = {s["signal"]: (s["unit"], s["kind"]) for s in body["signals"]}
    assert kinds["engine_mfu"] == ("ratio", "gpu") and kinds["engine_mbu"] == ("ratio", "gpu")
    assert kinds["scrape_latency_seconds"] == ("seconds", "engine")
    assert kinds["flops_per_gpu_per_s"] == ("flop_per_second", "engine")


async def test_scrape_latency_per_endpoint_and_the_slowest_overall(client):
    rng = {"from": T0, "to": T0 + 10}
    _, a = await get(client, "/api/series", signal="scrape_latency_seconds", endpoint=A, step=10, **rng)
    _, both = await get(client, "/api/series", signal="scrape_latency_seconds", step=1, **rng)
    assert a["points"][0][1] == pytest.approx(0.95)        # mean of 0.5 ... 1.4
    # endpoints are not added up: the slowest one per scrape
    assert [v for _, v in both["points"]] == [pytest.approx(0.5 + 0.1 * i) for i in range(10)]


async def test_windows_carry_mfu_and_mbu(client):
    _, body = await get(client, "/api/windows", gpu=0, **{"from": T0, "to": T0 + 10})
    assert len(body["windows"]) == 10
    assert [w["features"]["mfu"] for w in body["windows"]] == [pytest.approx(0.1 + 0.05 * i) for i in range(10)]
    assert {round(w["features"]["mbu"], 4) for w in body["windows"]} == {0.5}
