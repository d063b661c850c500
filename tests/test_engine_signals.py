"""Engine detection and normalization: literal scrapes, the real fixtures, and hypothesis."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infersight.daemon.engines import histograms as eh
from infersight.daemon.engines.ingest import EndpointIngest
from infersight.daemon.engines.promtext import parse
from infersight.daemon.engines.signals import ENGINE_SIGNALS, EngineNormalizer

FIXTURES = Path(__file__).parent / "fixtures" / "engine-metrics"


def render(samples) -> str:
    def value(v):
        return "NaN" if math.isnan(v) else ("+Inf" if v == math.inf else repr(v))
    lines = []
    for name, labels, v in samples:
        body = ",".join(f'{k}="{val}"' for k, val in labels)
        lines.append(f"{name}{{{body}}} {value(v)}" if body else f"{name} {value(v)}")
    return "\n".join(lines) + "\n"


def run(texts, window=10.0):
    """Feed (t, text) pairs to one normalizer; returns {(engine, model, signal): [(t, v)]}, deltas."""
    norm = EngineNormalizer("ep", window)
    series, deltas = {}, []
    for t, text in texts:
        out = norm.update(t, parse(text))
        for s in out.engine_samples:
            series.setdefault((s.engine, s.model, s.signal), []).append((s.t, s.value))
        deltas.extend(out.histogram_deltas)
    return series, deltas


def values(series, signal, engine=None):
    return [v for (e, _, sig), pts in series.items() if sig == signal and engine in (None, e) for _, v in pts]


# -- counters, gauges, resets ----------------------------------------------------------

def scrape(gen, running=3, created=1000.0, extra=""):
    return (f'vllm:generation_tokens_total{{model_name="m"}} {gen}\n'
            f'vllm:generation_tokens_created{{model_name="m"}} {created}\n'
            f'vllm:num_requests_running{{model_name="m"}} {running}\n' + extra)


def test_rates_and_reset_never_negative_or_spiking():
    texts = [(0.0, scrape(1000)), (1.0, scrape(1100)), (2.0, scrape(1300)),
             (3.0, scrape(40, created=1002.5)),      # engine restarted: counter back near 0
             (4.0, scrape(140, created=1002.5))]
    series, _ = run(texts)
    rates = series[("vllm", "m", "generation_tokens_per_s")]
    assert rates == [(1.0, 100.0), (2.0, 200.0), (3.0, 40.0), (4.0, 100.0)]
    assert series[("vllm", "m", "requests_running")] == [(t, 3.0) for t in range(5)]


def test_reset_seen_through_created_even_when_the_value_grew():
    texts = [(0.0, scrape(10)), (1.0, scrape(20)), (2.0, scrape(30, created=1001.9))]
    series, _ = run(texts)
    assert series[("vllm", "m", "generation_tokens_per_s")] == [(1.0, 10.0), (2.0, 30.0)]


def test_first_scrape_gives_no_rate_and_new_series_join_quietly():
    extra = 'vllm:generation_tokens_total{model_name="m",engine="1"} 5000\n'
    texts = [(0.0, scrape(0)), (1.0, scrape(10)), (2.0, scrape(20, extra=extra)),
             (3.0, scrape(30, extra=extra.replace("5000", "5010")))]
    series, _ = run(texts)
    assert series[("vllm", "m", "generation_tokens_per_s")] == [(1.0, 10.0), (2.0, 10.0), (3.0, 20.0)]


def test_data_parallel_series_add_up_and_rank_copies_count_once():
    text = """\
sglang:num_running_reqs{model_name="m",tp_rank="0",dp_rank="0"} 4
sglang:num_running_reqs{model_name="m",tp_rank="1",dp_rank="0"} 4
sglang:num_running_reqs{model_name="m",tp_rank="0",dp_rank="1"} 6
sglang:num_running_reqs{model_name="m",tp_rank="1",dp_rank="1"} 6
sglang:token_usage{model_name="m",dp_rank="0"} 0.25
sglang:token_usage{model_name="m",dp_rank="1"} 0.5
sglang:num_queue_reqs{model_name="m",priority=""} 9
sglang:num_queue_reqs{model_name="m",priority="high"} 4
sglang:num_queue_reqs{model_name="m",priority="low"} 5
"""
    series, _ = run([(0.0, text)])
    assert series[("sglang", "m", "requests_running")] == [(0.0, 10.0)]
    assert series[("sglang", "m", "kv_cache_usage")] == [(0.0, 0.5)]
    assert series[("sglang", "m", "requests_waiting")] == [(0.0, 9.0)]


def test_old_vllm_names_and_models_apart():
    text = """\
vllm:gpu_cache_usage_perc{model_name="a"} 0.3
vllm:kv_cache_usage_perc{model_name="b"} 0.7
vllm:gpu_cache_usage_perc{model_name="b"} 0.1
"""
    series, _ = run([(0.0, text)])
    assert series[("vllm", "a", "kv_cache_usage")] == [(0.0, 0.3)]
    assert series[("vllm", "b", "kv_cache_usage")] == [(0.0, 0.7)]


def test_tgi_counters_without_total_and_histogram_sums():
    def tgi(inp, gen, dur_fast, dur_all):
        return f"""\
# TYPE tgi_queue_size gauge
tgi_queue_size 2
tgi_batch_current_size 8
tgi_request_count {dur_all}
tgi_request_input_length_sum {inp}
tgi_request_input_length_count {dur_all}
tgi_request_generated_tokens_sum {gen}
tgi_request_duration_bucket{{le="0.5"}} {dur_fast}
tgi_request_duration_bucket{{le="1"}} {dur_all}
tgi_request_duration_bucket{{le="+Inf"}} {dur_all}
tgi_request_duration_count {dur_all}
"""
    series, deltas = run([(0.0, tgi(100, 1000, 1, 2)), (2.0, tgi(300, 1600, 2, 6))])
    assert series[("tgi", "", "prompt_tokens_per_s")] == [(2.0, 100.0)]
    assert series[("tgi", "", "generation_tokens_per_s")] == [(2.0, 300.0)]
    assert series[("tgi", "", "requests_waiting")][0][1] == 2.0
    [d] = deltas
    assert d.signal == "e2e_seconds" and d.counts == (1.0, 4.0, 4.0) and d.interval_s == 2.0
    # rank 2 of 4 falls in (0.5, 1]: 0.5 + 0.5 * (2 - 1) / 3
    assert series[("tgi", "", "e2e_seconds_p50")] == [(2.0, pytest.approx(0.5 + 0.5 / 3))]


def test_triton_trt_llm_backend():
    def triton(first_ms_fast, first_ms_all):
        return f"""\
nv_trt_llm_request_metrics{{model="tensorrt_llm",request_type="waiting",version="1"}} 3
nv_trt_llm_request_metrics{{model="tensorrt_llm",request_type="scheduled",version="1"}} 4
nv_trt_llm_request_metrics{{model="tensorrt_llm",request_type="max",version="1"}} 512
nv_trt_llm_request_metrics{{model="tensorrt_llm",request_type="active",version="1"}} 7
nv_trt_llm_kv_cache_block_metrics{{kv_cache_block_type="fraction",model="tensorrt_llm",version="1"}} 0.6
nv_trt_llm_kv_cache_block_metrics{{kv_cache_block_type="max",model="tensorrt_llm",version="1"}} 8000
nv_inference_first_response_histogram_ms_bucket{{model="tensorrt_llm",version="1",le="100"}} {first_ms_fast}
nv_inference_first_response_histogram_ms_bucket{{model="tensorrt_llm",version="1",le="200"}} {first_ms_all}
nv_inference_first_response_histogram_ms_bucket{{model="tensorrt_llm",version="1",le="+Inf"}} {first_ms_all}
"""
    series, deltas = run([(0.0, triton(0, 0)), (1.0, triton(0, 10))])
    key = ("triton", "tensorrt_llm")
    assert series[(*key, "requests_running")][0][1] == 4.0
    assert series[(*key, "requests_waiting")][0][1] == 3.0
    assert series[(*key, "kv_cache_usage")][0][1] == 0.6
    assert deltas[0].bounds == (0.1, 0.2, math.inf)
    assert series[(*key, "ttft_seconds_p50")] == [(1.0, pytest.approx(0.15))]


def test_histogram_reset_counts_what_came_after():
    def h(a, b):
        return f'vllm:e2e_request_latency_seconds_bucket{{model_name="m",le="1.0"}} {a}\n' \
               f'vllm:e2e_request_latency_seconds_bucket{{model_name="m",le="+Inf"}} {b}\n'
    _, deltas = run([(0.0, h(50, 60)), (1.0, h(55, 70)), (2.0, h(1, 3)), (3.0, h(1, 3))])
    assert [(d.t, d.counts) for d in deltas] == [(1.0, (5.0, 10.0)), (2.0, (1.0, 3.0))]


def test_quantiles_cover_only_the_window():
    def h(a, b):
        return f'vllm:time_to_first_token_seconds_bucket{{model_name="m",le="0.1"}} {a}\n' \
               f'vllm:time_to_first_token_seconds_bucket{{model_name="m",le="1"}} {b}\n' \
               f'vllm:time_to_first_token_seconds_bucket{{model_name="m",le="+Inf"}} {b}\n'
    texts = [(0.0, h(0, 0)), (1.0, h(10, 10)), (2.0, h(10, 10)), (3.0, h(10, 20)), (4.5, h(10, 20))]
    series, _ = run(texts, window=2.5)
    p50 = dict(series[("vllm", "m", "ttft_seconds_p50")])
    assert p50[1.0] == pytest.approx(0.05)       # 10 fast ones
    assert p50[2.0] == pytest.approx(0.05)       # still inside the 2.5 s window
    assert p50[3.0] == pytest.approx(0.1)        # 10 fast + 10 slow: the median is at 0.1
    assert p50[4.5] == pytest.approx(0.55)       # the fast ones left the window
    assert set(p50) == {1.0, 2.0, 3.0, 4.5}


def test_quantile_function():
    bounds, counts = (0.1, 0.5, 1.0, math.inf), (10.0, 30.0, 40.0, 50.0)
    assert eh.quantile(0.1, bounds, counts) == pytest.approx(0.05)     # rank 5 of the first 10
    assert eh.quantile(0.2, bounds, counts) == pytest.approx(0.1)
    assert eh.quantile(0.5, bounds, counts) == pytest.approx(0.1 + 0.4 * 15 / 20)
    assert eh.quantile(0.99, bounds, counts) == 1.0            # in +Inf: the largest finite bound
    assert eh.quantile(0.5, bounds, (0.0, 0.0, 0.0, 0.0)) is None
    # counts of things (tokens per step) start at 1: the bucket le=1 holds only ones
    assert eh.quantile(0.5, (1.0, 8.0, math.inf), (10.0, 10.0, 10.0), lowest=1.0) == 1.0
    assert eh.quantile(0.5, (1.0, 8.0, math.inf), (0.0, 10.0, 10.0), lowest=1.0) == pytest.approx(4.5)


def test_every_signal_has_a_unit():
    series, _ = run([(0.0, scrape(0)), (1.0, scrape(5))])
    assert {sig for (_, _, sig) in series} <= set(ENGINE_SIGNALS)
    assert {"ttft_seconds_p95", "itl_seconds_p99", "e2e_seconds_p50", "kv_cache_usage"} <= set(ENGINE_SIGNALS)


# -- the real fixtures -----------------------------------------------------------------

FIXTURE_ENGINES = {
    # file: (engine, model, counters advanced, ttft histogram)
    "vllm.prom": ("vllm", "Qwen/Qwen3-0.6B", {"vllm:generation_tokens_total": "generation_tokens_per_s",
                                              "vllm:prompt_tokens_total": "prompt_tokens_per_s",
                                              "vllm:num_preemptions_total": "preemptions_per_s"},
                  "vllm:time_to_first_token_seconds"),
    "sglang.prom": ("sglang", "Qwen/Qwen3-0.6B", {"sglang:generation_tokens_total": "generation_tokens_per_s",
                                                  "sglang:prompt_tokens_total": "prompt_tokens_per_s"},
                    "sglang:time_to_first_token_seconds"),
    "trtllm.prom": ("trtllm", "Qwen/Qwen3-0.6B", {}, "trtllm_time_to_first_token_seconds"),
    "dynamo-frontend.prom": ("dynamo", "qwen/qwen3-0.6b",
                             {"dynamo_frontend_output_tokens_total": "generation_tokens_per_s",
                              "dynamo_frontend_input_sequence_tokens_sum": "prompt_tokens_per_s"},
                             "dynamo_frontend_time_to_first_token_seconds"),
}


@pytest.mark.parametrize("fname", sorted(FIXTURE_ENGINES))
def test_fixture_engine_and_signals(fname):
    engine, model, counters, ttft = FIXTURE_ENGINES[fname]
    text = (FIXTURES / fname).read_text()
    exp = parse(text)
    bounds = sorted({float(dict(s.labels)["le"]) for s in exp.samples if s.name == ttft + "_bucket"})
    lo, hi = bounds[2], bounds[3]            # ten new requests, all in (lo, hi]
    advanced = []
    for s in exp.samples:
        v = s.value
        if s.name in counters:
            v += 300.0
        if s.name == ttft + "_bucket" and float(dict(s.labels)["le"]) >= hi:
            v += 10.0
        if s.name == ttft + "_count":
            v += 10.0
        advanced.append((s.name, s.labels, v))
    ingest = EndpointIngest("ep", 10.0, 5000)
    first = ingest.ingest(100.0, text)
    assert first.engines == [engine] and model in first.models
    assert not [s for s in first.engine_samples if s.signal.endswith("_per_s")]
    second = ingest.ingest(102.0, render(advanced))
    got = {(s.engine, s.model, s.signal): s.value for s in second.engine_samples}
    for signal in counters.values():
        assert got[(engine, model, signal)] == pytest.approx(150.0)
    assert got[(engine, model, "ttft_seconds_p50")] == pytest.approx(lo + (hi - lo) * 0.5)
    assert got[(engine, model, "ttft_seconds_p95")] == pytest.approx(lo + (hi - lo) * 0.95)
    [delta] = [d for d in second.histogram_deltas if d.signal == "ttft_seconds"]
    assert delta.counts[-1] == 10.0 and delta.interval_s == 2.0 and delta.model == model
    other = {sig for (e, _, sig) in got if e == engine}
    if engine in ("vllm", "sglang", "dynamo"):
        assert {"requests_running", "requests_waiting"} <= other
    if engine in ("vllm", "sglang"):
        assert got[(engine, model, "kv_cache_usage")] == 0.0


# -- hypothesis: whatever an endpoint says, the normalizer neither raises nor invents -----

metric_names = st.sampled_from([
    "vllm:generation_tokens_total", "vllm:generation_tokens_created", "vllm:num_requests_running",
    "vllm:kv_cache_usage_perc", "vllm:time_to_first_token_seconds_bucket", "vllm:time_to_first_token_seconds_count",
    "sglang:num_running_reqs", "tgi_request_generated_tokens_sum", "trtllm_e2e_request_latency_seconds_bucket",
    "nv_trt_llm_request_metrics", "dynamo_frontend_output_tokens_total", "other_metric",
    "vllm:estimated_flops_per_gpu_total", "vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total",
    "vllm:num_requests_waiting_by_reason", "vllm:iteration_tokens_total_bucket", "vllm:iteration_tokens_total_count",
    "sglang:realtime_tokens_total", "sglang:cache_hit_rate",
])
label_sets = st.dictionaries(
    st.sampled_from(["model_name", "model", "le", "tp_rank", "priority", "request_type", "x", "engine", "reason",
                     "mode"]),
    st.sampled_from(["m", "n", "0", "1", "0.1", "+Inf", "NaN", "abc", "1e400", "-1", "scheduled", "", "capacity",
                     "prefill_cache", "prefill_compute"]),
    max_size=4)
sample_values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10_000).map(float))


@st.composite
def engine_scrapes(draw):
    lines = draw(st.lists(st.tuples(metric_names, label_sets, sample_values), max_size=25))
    text = render([(n, tuple(sorted(ls.items())), v) for n, ls, v in lines])
    junk = draw(st.lists(st.text(max_size=20), max_size=3))
    return text + "\n".join(junk)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(engine_scrapes(), min_size=1, max_size=6), st.floats(0.01, 5.0))
def test_adversarial_scrapes_never_raise_nor_give_impossible_values(texts, step):
    ingest = EndpointIngest("ep", 10.0, 50)
    for i, text in enumerate(texts):
        out = ingest.ingest(1000.0 + i * step, text)
        assert len(out.raw_series) <= 50
        for s in out.engine_samples:
            assert s.signal in ENGINE_SIGNALS
            assert not math.isnan(s.value)
            if s.signal.endswith("_per_s"):
                assert 0 <= s.value < math.inf
            if s.signal == "prefix_cache_hit_ratio" and s.engine == "vllm":
                assert 0 <= s.value <= 1
        for d in out.histogram_deltas:
            assert all(c >= 0 for c in d.counts) and list(d.bounds) == sorted(d.bounds)
