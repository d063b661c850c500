"""vLLM 0.24's newer metric families and their SGLang twins, normalized.

The literal scrapes below are written in the exposition vLLM 0.24 serves, with the names,
labels (``model_name``, ``engine``; ``reason`` for the waiting split) and units read in its
source (vllm/v1/metrics/loggers.py and perf.py): the ``estimated_*_per_gpu`` counters count
FLOPs and bytes per GPU, ``iteration_tokens_total`` is a histogram of tokens per engine step,
the prefill/decode times are histograms in seconds, the prefix-cache counters count tokens.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from infersight.daemon.engines.ingest import EndpointIngest
from infersight.daemon.engines.promtext import parse
from infersight.daemon.engines.signals import ENGINE_SIGNALS, EngineNormalizer

FIXTURES = Path(__file__).parent / "fixtures" / "engine-metrics"
ITERATION_BOUNDS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
LATENCY_BOUNDS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0)


def vllm_024(*, flops=0.0, read=0.0, write=0.0, steps=0, step_tokens_le64=0, prefill_le05=0, decode_le10=0,
             queries=0.0, hits=0.0, capacity=3, deferred=1, engine="0", created=1.79e9) -> str:
    """One engine's share of a vLLM 0.24 scrape. Every step has 33-64 tokens, every prefill
    takes 0.3-0.5 s and every decode 5-10 s, so quantiles land inside known buckets."""
    lab = f'engine="{engine}",model_name="m"'
    lines = [
        "# HELP vllm:estimated_flops_per_gpu_total Estimated number of floating point operations per GPU "
        "(for Model Flops Utilization calculations).",
        "# TYPE vllm:estimated_flops_per_gpu_total counter",
        f"vllm:estimated_flops_per_gpu_total{{{lab}}} {flops}",
        f"vllm:estimated_flops_per_gpu_created{{{lab}}} {created}",
        "# TYPE vllm:estimated_read_bytes_per_gpu_total counter",
        f"vllm:estimated_read_bytes_per_gpu_total{{{lab}}} {read}",
        f"vllm:estimated_read_bytes_per_gpu_created{{{lab}}} {created}",
        "# TYPE vllm:estimated_write_bytes_per_gpu_total counter",
        f"vllm:estimated_write_bytes_per_gpu_total{{{lab}}} {write}",
        f"vllm:estimated_write_bytes_per_gpu_created{{{lab}}} {created}",
        "# TYPE vllm:num_requests_waiting gauge",
        f"vllm:num_requests_waiting{{{lab}}} {capacity + deferred}",
        "# TYPE vllm:num_requests_waiting_by_reason gauge",
        f'vllm:num_requests_waiting_by_reason{{{lab},reason="capacity"}} {capacity}',
        f'vllm:num_requests_waiting_by_reason{{{lab},reason="deferred"}} {deferred}',
        "# TYPE vllm:prefix_cache_queries_total counter",
        f"vllm:prefix_cache_queries_total{{{lab}}} {queries}",
        f"vllm:prefix_cache_queries_created{{{lab}}} {created}",
        "# TYPE vllm:prefix_cache_hits_total counter",
        f"vllm:prefix_cache_hits_total{{{lab}}} {hits}",
        f"vllm:prefix_cache_hits_created{{{lab}}} {created}",
        "# HELP vllm:iteration_tokens_total Histogram of number of tokens per engine_step.",
        "# TYPE vllm:iteration_tokens_total histogram",
    ]
    lines += [f'vllm:iteration_tokens_total_bucket{{{lab},le="{float(b)}"}} {steps if b >= 64 else 0}'
              for b in ITERATION_BOUNDS]
    lines += [f'vllm:iteration_tokens_total_bucket{{{lab},le="+Inf"}} {steps}',
              f"vllm:iteration_tokens_total_count{{{lab}}} {steps}",
              f"vllm:iteration_tokens_total_sum{{{lab}}} {steps * 48.0}",
              f"vllm:iteration_tokens_total_created{{{lab}}} {created}"]
    for family, n, le in (("request_prefill_time_seconds", prefill_le05, 0.5),
                          ("request_decode_time_seconds", decode_le10, 10.0)):
        lines.append(f"# TYPE vllm:{family} histogram")
        lines += [f'vllm:{family}_bucket{{{lab},le="{b}"}} {n if b >= le else 0}' for b in LATENCY_BOUNDS]
        lines += [f'vllm:{family}_bucket{{{lab},le="+Inf"}} {n}', f"vllm:{family}_count{{{lab}}} {n}",
                  f"vllm:{family}_created{{{lab}}} {created}"]
    return "\n".join(lines) + "\n"


def run(texts: list[tuple[float, str]]) -> dict[tuple[str, str, str], list[tuple[float, float]]]:
    norm = EngineNormalizer("ep", 10.0)
    series: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    for t, text in texts:
        for s in norm.update(t, parse(text)).engine_samples:
            series.setdefault((s.engine, s.model, s.signal), []).append((s.t, s.value))
    return series


def last(series, signal, engine="vllm", model="m"):
    return series[(engine, model, signal)][-1][1]


# -- vLLM 0.24 ----------------------------------------------------------------------------

def test_flop_and_byte_counters_become_per_gpu_rates():
    series = run([(10.0, vllm_024(flops=1e15, read=1e12, write=1e11)),
                  (12.0, vllm_024(flops=3e15, read=5e12, write=3e11))])
    assert series[("vllm", "m", "flops_per_gpu_per_s")] == [(12.0, pytest.approx(1e15))]
    assert last(series, "read_bytes_per_gpu_per_s") == pytest.approx(2e12)
    assert last(series, "write_bytes_per_gpu_per_s") == pytest.approx(1e11)


def test_data_parallel_engines_give_the_mean_gpu_not_the_sum():
    # two data-parallel engines, each on its own GPUs: one works, one idles
    first = vllm_024(flops=0, engine="0") + vllm_024(flops=0, engine="1")
    second = vllm_024(flops=4e14, engine="0") + vllm_024(flops=0, engine="1")
    series = run([(0.0, first), (1.0, second)])
    assert last(series, "flops_per_gpu_per_s") == pytest.approx(2e14)
    # while amounts add up across engines
    assert last(series, "requests_waiting_capacity") == 6.0


def test_an_engine_restart_resets_the_flop_counter_without_a_spike():
    series = run([(0.0, vllm_024(flops=9e15)), (1.0, vllm_024(flops=9.5e15)),
                  (2.0, vllm_024(flops=2e14, created=1.8e9))])
    assert [v for _, v in series[("vllm", "m", "flops_per_gpu_per_s")]] == [pytest.approx(5e14), pytest.approx(2e14)]


def test_steps_per_second_and_tokens_per_step():
    series = run([(0.0, vllm_024(steps=1000)), (2.0, vllm_024(steps=1300))])
    assert last(series, "steps_per_s") == pytest.approx(150.0)
    # all 300 new steps had 33-64 tokens: the median is half-way through that bucket
    assert last(series, "iteration_tokens_p50") == pytest.approx(48.0)
    assert last(series, "iteration_tokens_p95") == pytest.approx(32 + 32 * 0.95)
    assert ENGINE_SIGNALS["iteration_tokens_p50"] == "tokens"


def test_prefill_and_decode_times_per_request():
    series = run([(0.0, vllm_024(prefill_le05=4, decode_le10=4)), (1.0, vllm_024(prefill_le05=14, decode_le10=24))])
    assert last(series, "prefill_time_seconds_p50") == pytest.approx(0.3 + 0.2 * 0.5)
    assert last(series, "decode_time_seconds_p50") == pytest.approx(5.0 + 5.0 * 0.5)
    assert ENGINE_SIGNALS["decode_time_seconds_p99"] == "seconds"


def test_waiting_split_by_reason_adds_up_to_waiting():
    series = run([(0.0, vllm_024(capacity=5, deferred=2))])
    assert last(series, "requests_waiting_capacity") == 5.0
    assert last(series, "requests_waiting_deferred") == 2.0
    assert last(series, "requests_waiting") == 7.0


def test_prefix_cache_rates_and_hit_ratio():
    series = run([(0.0, vllm_024(queries=1000, hits=100)), (2.0, vllm_024(queries=3000, hits=600)),
                  (3.0, vllm_024(queries=3000, hits=600))])
    assert series[("vllm", "m", "prefix_cache_queries_per_s")] == [(2.0, 1000.0), (3.0, 0.0)]
    assert series[("vllm", "m", "prefix_cache_hits_per_s")] == [(2.0, 250.0), (3.0, 0.0)]
    # a second without lookups has no hit ratio, not a ratio of 0
    assert series[("vllm", "m", "prefix_cache_hit_ratio")] == [(2.0, 0.25)]


def test_hits_counted_before_their_queries_never_give_a_ratio_above_one():
    series = run([(0.0, vllm_024(queries=100, hits=0)), (1.0, vllm_024(queries=110, hits=50))])
    assert last(series, "prefix_cache_hit_ratio") == 1.0


def test_older_vllm_prefix_cache_names():
    def old(q, h):
        return (f'vllm:gpu_prefix_cache_queries_total{{model_name="m"}} {q}\n'
                f'vllm:gpu_prefix_cache_hits_total{{model_name="m"}} {h}\n')
    series = run([(0.0, old(10, 0)), (1.0, old(110, 80))])
    assert last(series, "prefix_cache_hit_ratio") == pytest.approx(0.8)


# -- SGLang --------------------------------------------------------------------------------

def sglang(*, compute=0.0, cached=0.0, decode=0.0, graph=0, eager=0, flops=None, hit_rate=0.9, counters=True):
    out = []
    for rank in ("0", "1"):   # two tensor-parallel ranks repeat the same figures
        lab = f'engine_type="unified",model_name="m",moe_ep_rank="0",pp_rank="0",tp_rank="{rank}"'
        out.append(f"sglang:cache_hit_rate{{{lab}}} {hit_rate}")
        if counters:
            out += [f'sglang:realtime_tokens_total{{{lab},mode="prefill_compute"}} {compute}',
                    f'sglang:realtime_tokens_total{{{lab},mode="prefill_cache"}} {cached}',
                    f'sglang:realtime_tokens_total{{{lab},mode="decode"}} {decode}',
                    f'sglang:cuda_graph_passes_total{{{lab},mode="decode_cuda_graph"}} {graph}',
                    f'sglang:cuda_graph_passes_total{{{lab},mode="prefill_none"}} {eager}']
        if flops is not None:
            out.append(f"sglang:estimated_flops_per_gpu_total{{{lab}}} {flops}")
    return "\n".join(out) + "\n"


def test_sglang_prefix_cache_from_its_token_counters():
    series = run([(0.0, sglang(compute=100, cached=0)), (1.0, sglang(compute=700, cached=200, decode=5000))])
    assert last(series, "prefix_cache_queries_per_s", "sglang") == pytest.approx(800.0)
    assert last(series, "prefix_cache_hits_per_s", "sglang") == pytest.approx(200.0)
    # the counters decide; the engine's own 0.9 (last logged batch) is not used
    assert series[("sglang", "m", "prefix_cache_hit_ratio")] == [(1.0, pytest.approx(0.25))]


def test_sglang_without_the_counters_keeps_its_hit_rate_gauge():
    series = run([(0.0, sglang(counters=False, hit_rate=0.4)), (1.0, sglang(counters=False, hit_rate=0.5))])
    assert series[("sglang", "m", "prefix_cache_hit_ratio")] == [(0.0, 0.4), (1.0, 0.5)]


def test_sglang_steps_and_flops_count_tensor_parallel_copies_once():
    series = run([(0.0, sglang(graph=100, eager=10, flops=1e15)), (1.0, sglang(graph=160, eager=20, flops=1.5e15))])
    assert last(series, "steps_per_s", "sglang") == pytest.approx(70.0)
    assert last(series, "flops_per_gpu_per_s", "sglang") == pytest.approx(5e14)


# -- the real scrapes -----------------------------------------------------------------------

def advanced(text: str, bump: dict[str, float]) -> str:
    """``text`` with every sample whose name is in ``bump`` raised by that amount."""
    out = []
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if not line.startswith("#") and name in bump:
            head, value = line.rsplit(" ", 1)
            line = f"{head} {float(value) + bump[name]}"
        out.append(line)
    return "\n".join(out) + "\n"


def test_real_vllm_scrape_prefix_cache_and_step_histogram():
    text = (FIXTURES / "vllm.prom").read_text()
    bump = {"vllm:prefix_cache_queries_total": 400.0, "vllm:prefix_cache_hits_total": 100.0,
            "vllm:iteration_tokens_total_count": 20.0, "vllm:iteration_tokens_total_bucket": 20.0}
    ingest = EndpointIngest("ep", 10.0, 5000)
    ingest.ingest(0.0, text)
    got = {s.signal: s.value for s in ingest.ingest(2.0, advanced(text, bump)).engine_samples
           if s.model == "Qwen/Qwen3-0.6B"}
    assert got["prefix_cache_queries_per_s"] == pytest.approx(200.0)
    assert got["prefix_cache_hit_ratio"] == pytest.approx(0.25)
    assert got["steps_per_s"] == pytest.approx(10.0)
    # every bucket grew by 20: all 20 steps are in the first bucket, one token each (a step
    # has at least one: the bucket is not read as spanning 0 to 1)
    assert got["iteration_tokens_p50"] == 1.0
    # this vLLM predates the FLOP counters and the waiting split: no invented values
    assert not {"flops_per_gpu_per_s", "requests_waiting_capacity"} & set(got)


def test_real_sglang_scrape_token_counters():
    text = (FIXTURES / "sglang.prom").read_text()
    bump = {"sglang:realtime_tokens_total": 50.0, "sglang:cuda_graph_passes_total": 30.0}
    ingest = EndpointIngest("ep", 10.0, 5000)
    ingest.ingest(0.0, text)
    got = {s.signal: s.value for s in ingest.ingest(1.0, advanced(text, bump)).engine_samples}
    # prefill_compute and prefill_cache each +50: 100 queried, 50 found
    assert got["prefix_cache_queries_per_s"] == pytest.approx(100.0)
    assert got["prefix_cache_hit_ratio"] == pytest.approx(0.5)
    assert got["steps_per_s"] == pytest.approx(30.0)


def test_real_trtllm_scrape_has_none_of_the_new_families():
    text = (FIXTURES / "trtllm.prom").read_text()
    ingest = EndpointIngest("ep", 10.0, 5000)
    ingest.ingest(0.0, text)
    got = {s.signal for s in ingest.ingest(1.0, text).engine_samples}
    assert not got & {"flops_per_gpu_per_s", "steps_per_s", "prefix_cache_hit_ratio", "requests_waiting_capacity"}


def test_flop_counters_at_zero_mean_not_counting_until_they_move():
    """Without --enable-mfu-metrics vLLM 0.24 exports the estimates at 0 forever: no MFU of 0."""
    norm = EngineNormalizer("ep", 10.0)
    outs = [norm.update(t, parse(vllm_024(flops=f, steps=s))) for t, f, s in
            ((0.0, 0.0, 0), (1.0, 0.0, 500), (2.0, 3e14, 900), (3.0, 3e14, 900))]
    flops = [[s.value for s in o.engine_samples if s.signal == "flops_per_gpu_per_s"] for o in outs]
    assert flops == [[], [], [pytest.approx(3e14)], [0.0]]     # idle once counting: a true 0
    assert outs[1].off == ["flops_per_gpu_per_s", "read_bytes_per_gpu_per_s", "write_bytes_per_gpu_per_s"]
    assert outs[2].off == ["read_bytes_per_gpu_per_s", "write_bytes_per_gpu_per_s"]
