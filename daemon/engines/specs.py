"""Which engine metric feeds which normalized signal (DESIGN.md's table, plus Triton and Dynamo).

An engine is recognised by the names of the metrics an endpoint exposes (:func:`detect`);
each of its signals lists one or more :class:`Source` alternatives, tried in order, the first
with samples for a model winning (so vLLM's old ``gpu_cache_usage_perc`` is used only where
``kv_cache_usage_perc`` is absent). Engines not covered by a signal simply leave it out.

Deliberate gaps, where no metric means the same thing:
- trtllm-serve's ``trtllm_num_paused_requests`` and SGLang's ``sglang:num_retracted_reqs``
  are levels (SGLang's is reset after every publish), not counts of events, so they cannot be
  turned into ``preemptions_per_s``; SGLang uses the ``num_retracted_requests_total`` counter
  where it exists, else the sum of its ``num_retractions`` histogram (retractions of finished
  requests).
- TGI has no TTFT or inter-token histogram (``tgi_request_mean_time_per_token_duration``
  includes the prefill), and no KV-cache gauge.
- Triton's TRT-LLM backend has no token counters; its TTFT is Triton's
  ``nv_inference_first_response_histogram_ms`` (opt-in, milliseconds; time to the first
  streamed response, which is the first token only for streaming/decoupled models).
- Dynamo's frontend counts requests in flight at the HTTP front (queued ones included).
- vLLM 0.24's newer families (vllm/v1/metrics/loggers.py and perf.py): the
  ``estimated_{flops,read_bytes,write_bytes}_per_gpu`` counters have an SGLang twin (with
  ``--enable-mfu-metrics``) and none in trtllm-serve, TGI, Triton or Dynamo's frontend. The
  tokens-per-step histogram (``iteration_tokens_total``) has no equivalent elsewhere; SGLang's
  ``cuda_graph_passes`` counter gives its step rate only. Per-request prefill and decode time
  histograms exist only in vLLM (SGLang's ``per_stage_req_latency_seconds`` times queue and
  transfer stages of disaggregated serving, not a request's prefill and decode). Waiting by
  reason (capacity, deferred) is vLLM's alone. Prefix-cache hits: SGLang's
  ``realtime_tokens{mode=prefill_cache|prefill_compute}`` counters, else its ``cache_hit_rate``
  gauge; none in the others' scrapes we hold (tests/fixtures/engine-metrics).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

# Labels that name the model, in order of preference.
MODEL_LABELS = ("model_name", "model", "served_model_name")
# Labels along which an engine repeats the same figure (the tensor/pipeline/expert ranks of one
# scheduler, e.g. SGLang's): series differing only in these are one series, not several. Any
# other label (vLLM's data-parallel "engine", SGLang's "dp_rank", a "pid") separates series
# that add up.
REPLICA_LABELS = frozenset({"tp_rank", "pp_rank", "moe_ep_rank", "attn_tp_rank"})
# Labels that split a total into parts: when some series lack them (the total), the parts are
# dropped so they are not counted twice.
BREAKDOWN_LABELS = ("priority",)

GAUGE, COUNTER, HISTOGRAM = "gauge", "counter", "histogram"


@dataclass(frozen=True, slots=True)
class Source:
    """One metric that can feed a signal.

    ``name`` is a sample name for gauges; for counters the base name, matched with and without
    ``_total``; for histograms the family name (``_bucket``/``_count``/``_sum`` samples).
    ``match`` are (label, accepted values) a series must carry (which are then not model
    dimensions; series with different accepted values add up); ``scale`` converts to the
    signal's unit (histogram bucket bounds for histograms).
    """

    name: str
    kind: str
    match: tuple[tuple[str, tuple[str, ...]], ...] = ()
    scale: float = 1.0

    def accepts(self, labels: tuple[tuple[str, str], ...]) -> bool:
        """Whether a series with ``labels`` carries every matched label with an accepted value."""
        if not self.match:
            return True
        values = dict(labels)
        return all(values.get(label) in accepted for label, accepted in self.match)

    def sample_names(self) -> tuple[str, ...]:
        if self.kind == COUNTER:
            if self.name.endswith("_total"):
                return (self.name, self.name[: -len("_total")])
            return (self.name + "_total", self.name)
        if self.kind == HISTOGRAM:
            return (self.name + "_bucket",)
        return (self.name,)


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """An engine: how to recognise it and where each of its signals comes from."""

    name: str
    detect_prefixes: tuple[str, ...]
    signals: dict[str, tuple[Source, ...]]


def _match(match: dict[str, str | tuple[str, ...]]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple(sorted((k, v if isinstance(v, tuple) else (v,)) for k, v in match.items()))


def _g(name: str, **match: str | tuple[str, ...]) -> Source:
    return Source(name, GAUGE, _match(match))


def _c(name: str, **match: str | tuple[str, ...]) -> Source:
    return Source(name, COUNTER, _match(match))


def _h(name: str, scale: float = 1.0) -> Source:
    return Source(name, HISTOGRAM, (), scale)


def _trtllm(signal_suffixes: dict[str, tuple[str, str]]) -> dict[str, tuple[Source, ...]]:
    # Dynamo has published trtllm-serve's metrics with a "trtllm:" prefix in some versions;
    # trtllm-serve itself uses "trtllm_".
    return {
        signal: tuple(Source(prefix + suffix, kind) for prefix in ("trtllm_", "trtllm:"))
        for signal, (suffix, kind) in signal_suffixes.items()
    }


ENGINES: tuple[EngineSpec, ...] = (
    EngineSpec("vllm", ("vllm:",), {
        "requests_running": (_g("vllm:num_requests_running"),),
        "requests_waiting": (_g("vllm:num_requests_waiting"),),
        "kv_cache_usage": (_g("vllm:kv_cache_usage_perc"), _g("vllm:gpu_cache_usage_perc")),
        "prompt_tokens_per_s": (_c("vllm:prompt_tokens"),),
        "generation_tokens_per_s": (_c("vllm:generation_tokens"),),
        "preemptions_per_s": (_c("vllm:num_preemptions"),),
        "ttft_seconds": (_h("vllm:time_to_first_token_seconds"),),
        "itl_seconds": (_h("vllm:inter_token_latency_seconds"), _h("vllm:time_per_output_token_seconds")),
        "e2e_seconds": (_h("vllm:e2e_request_latency_seconds"),),
        # vLLM >= 0.24: the model's own estimate of its work per step, per GPU of the engine;
        # always exported, counted only with --enable-mfu-metrics (0 otherwise: see signals.py)
        "flops_per_gpu_per_s": (_c("vllm:estimated_flops_per_gpu"),),
        "read_bytes_per_gpu_per_s": (_c("vllm:estimated_read_bytes_per_gpu"),),
        "write_bytes_per_gpu_per_s": (_c("vllm:estimated_write_bytes_per_gpu"),),
        # one observation of the tokens-per-step histogram per engine step
        "steps_per_s": (_c("vllm:iteration_tokens_total_count"),),
        "iteration_tokens": (_h("vllm:iteration_tokens_total"),),
        "prefill_time_seconds": (_h("vllm:request_prefill_time_seconds"),),
        "decode_time_seconds": (_h("vllm:request_decode_time_seconds"),),
        # the two reasons vLLM gives add up to num_requests_waiting
        "requests_waiting_capacity": (_g("vllm:num_requests_waiting_by_reason", reason="capacity"),),
        "requests_waiting_deferred": (_g("vllm:num_requests_waiting_by_reason", reason="deferred"),),
        # prompt tokens looked up in the prefix cache, and found (old names before vLLM 0.10)
        # Little's law on the latency histograms' sums: the rate of a duration sum is the mean
        # number of requests inside that stage over the interval (counted as they complete).
        # The API server's HTTP middleware times a request from its arrival in the app to the
        # answer; the engine's e2e histogram from its arrival in the engine. The difference is
        # what the front end holds (tokenizing, waiting for its event loop, detokenizing).
        "http_in_flight": (_c("http_request_duration_highr_seconds_sum"), _c("http_request_duration_seconds_sum")),
        "http_requests_per_s": (_c("http_request_duration_highr_seconds_count"),
                                _c("http_request_duration_seconds_count")),
        "engine_in_flight": (_c("vllm:e2e_request_latency_seconds_sum"),),
        "engine_running_lt": (_c("vllm:request_inference_time_seconds_sum"),),
        "engine_queued": (_c("vllm:request_queue_time_seconds_sum"),),
        "requests_per_s": (_c("vllm:request_success"),),
        "prefix_cache_queries_per_s": (_c("vllm:prefix_cache_queries"), _c("vllm:gpu_prefix_cache_queries")),
        "prefix_cache_hits_per_s": (_c("vllm:prefix_cache_hits"), _c("vllm:gpu_prefix_cache_hits")),
    }),
    EngineSpec("sglang", ("sglang:",), {
        "requests_running": (_g("sglang:num_running_reqs"),),
        "requests_waiting": (_g("sglang:num_queue_reqs"),),
        "kv_cache_usage": (_g("sglang:token_usage"),),
        "prompt_tokens_per_s": (_c("sglang:prompt_tokens"),),
        "generation_tokens_per_s": (_c("sglang:generation_tokens"),),
        "preemptions_per_s": (_c("sglang:num_retracted_requests"), _c("sglang:num_retractions_sum")),
        "ttft_seconds": (_h("sglang:time_to_first_token_seconds"),),
        "itl_seconds": (_h("sglang:inter_token_latency_seconds"),),
        "e2e_seconds": (_h("sglang:e2e_request_latency_seconds"),),
        # with --enable-mfu-metrics, the same estimates as vLLM's (one series per tp_rank)
        "flops_per_gpu_per_s": (_c("sglang:estimated_flops_per_gpu"),),
        "read_bytes_per_gpu_per_s": (_c("sglang:estimated_read_bytes_per_gpu"),),
        "write_bytes_per_gpu_per_s": (_c("sglang:estimated_write_bytes_per_gpu"),),
        # forward passes, split by mode ({prefill,decode} x {cuda_graph,none}): they add up
        "steps_per_s": (_c("sglang:cuda_graph_passes"),),
        # prefill tokens computed vs served from the radix cache; hit_rate is the fallback
        "prefix_cache_queries_per_s": (_c("sglang:realtime_tokens", mode=("prefill_compute", "prefill_cache")),),
        "prefix_cache_hits_per_s": (_c("sglang:realtime_tokens", mode="prefill_cache"),),
        "prefix_cache_hit_ratio": (_g("sglang:cache_hit_rate"),),
    }),
    EngineSpec("tgi", ("tgi_",), {
        "requests_running": (_g("tgi_batch_current_size"),),
        "requests_waiting": (_g("tgi_queue_size"),),
        "prompt_tokens_per_s": (_c("tgi_request_input_length_sum"),),
        "generation_tokens_per_s": (_c("tgi_request_generated_tokens_sum"),),
        "e2e_seconds": (_h("tgi_request_duration"),),
    }),
    EngineSpec("trtllm", ("trtllm_", "trtllm:"), _trtllm({
        "requests_running": ("num_requests_running", GAUGE),
        "requests_waiting": ("num_requests_waiting", GAUGE),
        "kv_cache_usage": ("kv_cache_utilization", GAUGE),
        "prompt_tokens_per_s": ("prompt_tokens", COUNTER),
        "generation_tokens_per_s": ("generation_tokens", COUNTER),
        "ttft_seconds": ("time_to_first_token_seconds", HISTOGRAM),
        "itl_seconds": ("time_per_output_token_seconds", HISTOGRAM),
        "e2e_seconds": ("e2e_request_latency_seconds", HISTOGRAM),
    })),
    EngineSpec("triton", ("nv_trt_llm_",), {
        "requests_running": (_g("nv_trt_llm_request_metrics", request_type="scheduled"),
                             _g("nv_trt_llm_request_metrics", request_type="active")),
        "requests_waiting": (_g("nv_trt_llm_request_metrics", request_type="waiting"),
                             _g("nv_inference_pending_request_count")),
        "kv_cache_usage": (_g("nv_trt_llm_kv_cache_block_metrics", kv_cache_block_type="fraction"),),
        "ttft_seconds": (_h("nv_inference_first_response_histogram_ms", scale=0.001),),
    }),
    EngineSpec("dynamo", ("dynamo_frontend_",), {
        "requests_running": (_g("dynamo_frontend_inflight_requests"), _g("dynamo_frontend_active_requests")),
        "requests_waiting": (_g("dynamo_frontend_queued_requests"),),
        "prompt_tokens_per_s": (_c("dynamo_frontend_input_sequence_tokens_sum"),),
        "generation_tokens_per_s": (_c("dynamo_frontend_output_tokens"),),
        "ttft_seconds": (_h("dynamo_frontend_time_to_first_token_seconds"),),
        "itl_seconds": (_h("dynamo_frontend_inter_token_latency_seconds"),),
        "e2e_seconds": (_h("dynamo_frontend_request_duration_seconds"),),
    }),
)


def detect(sample_names: Iterable[str]) -> list[EngineSpec]:
    """The engines whose metrics appear among ``sample_names`` (several when an endpoint mixes
    them, e.g. a Dynamo worker passing vLLM's metrics through), in ENGINES order."""
    prefixes = {p: spec for spec in ENGINES for p in spec.detect_prefixes}
    found: set[str] = set()
    for name in sample_names:
        for prefix, spec in prefixes.items():
            if name.startswith(prefix):
                found.add(spec.name)
        if len(found) == len(ENGINES):
            break
    return [spec for spec in ENGINES if spec.name in found]


def model_of(labels: tuple[tuple[str, str], ...]) -> str:
    """The model a series belongs to: the first of MODEL_LABELS present, else ""."""
    values = dict(labels)
    for key in MODEL_LABELS:
        if key in values:
            return values[key]
    return ""
