"""The agent's configuration: one frozen dataclass tree loaded from TOML and validated once.

Every field's metadata says its unit and valid range; :func:`load_config` rejects unknown
keys, wrong types and out-of-range values with a :class:`ConfigError` whose message starts
with the key path (``storage.retention_hours: expected a positive number, got "x"``).
``config.example.toml`` documents every key; a test keeps the two in sync.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import pwd
import re
import socket
import tomllib
import types
import typing
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infersight.daemon.config.fields import ConfigError, check_value, is_host_name, opt, shown


@dataclass(frozen=True)
class AgentConfig:
    host: str = opt("", "host name used in events, metrics and exports; empty means the system host name")
    log_level: str = opt("info", "debug, info, warning or error", choices=("debug", "info", "warning", "error"))


@dataclass(frozen=True)
class StorageConfig:
    path: str = opt("./var/infersight.duckdb", "the DuckDB file; its folder is created when missing")
    queue_max_batches: int = opt(2048, "collector batches the writer queue holds before dropping (count)", min=1)
    flush_interval_s: float = opt(1.0, "longest time a sample waits before it is written (seconds)", min=0.05, max=60)
    retention_hours: float = opt(168.0, "raw and rolled-up data older than this is deleted (hours)", min=0.01)
    max_size_mb: float = opt(4096.0, "oldest data is deleted while the file is larger than this (MiB)", min=1)
    rollup_after_hours: float = opt(6.0, "1 s data older than this is rolled up to rollup_bucket_s (hours)", min=0.01)
    rollup_bucket_s: int = opt(60, "bucket of rolled-up data (seconds)", min=2, max=3600)
    maintenance_interval_s: float = opt(60.0, "how often retention and rollups run (seconds)", min=1)
    duckdb_threads: int = opt(2, "DuckDB worker threads; DuckDB's own default is one per core, which lets one "
                                 "long query take every core of the host (count)", min=1, max=256)
    duckdb_memory_limit_mb: float = opt(32.0, "DuckDB buffer pool limit; larger sorts and aggregations spill to "
                                              "the file's .tmp folder; the agent's resident memory grows with it "
                                              "(MiB)", min=32)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def store_options(storage: StorageConfig) -> dict:
    """Keyword arguments of ``Store.open`` that come from the config (all but path and host)."""
    return {"queue_max_batches": storage.queue_max_batches, "flush_interval_s": storage.flush_interval_s,
            "threads": storage.duckdb_threads, "memory_limit_mb": storage.duckdb_memory_limit_mb}


@dataclass(frozen=True)
class WebConfig:
    listen: str = opt("127.0.0.1:8321", "HOST:PORT of the UI, the JSON API and /metrics")
    auth_token: str = opt("", "bearer token required on every request when set (secret)", secret=True)
    allow_unauthenticated: bool = opt(False, "allow a non-loopback listen address without auth_token")
    external_url: str = opt("", "base URL people reach the UI at, used in webhook links; empty means http://listen")
    allowed_hosts: tuple[str, ...] = opt((), "extra names the agent answers to in the Host header while "
                                         "auth_token is empty (DNS aliases, a reverse proxy's name). Loopback, "
                                         "localhost, IP literals, the host name, the listen name and "
                                         "external_url's are always allowed; other names get 421, so a web page "
                                         "cannot read the API through DNS rebinding")

    query_timeout_s: float = opt(20.0, "time budget of one flame graph, diff or export, from the query to the "
                                 "encoded answer (seconds); a query that passes it answers with what it has "
                                 "(truncated) or 503 with the reason", min=1, max=600)
    query_max_stack_nodes: int = opt(200_000, "stack-trie nodes one flame graph, diff or export may hold: the "
                                     "heaviest stacks that fit are shown, the rest counted as omitted. About 1.5 KB "
                                     "of the agent's memory each at the peak (count)", min=1000, max=10_000_000)
    heavy_queries: int = opt(1, "flame graphs, diffs and exports computed at once; more wait in line, so their "
                             "memory does not add up (count)", min=1, max=16)
    heavy_queue: int = opt(8, "heavy queries that may wait in line; one more is answered 503 at once (count)",
                           min=0, max=1000)

    def __post_init__(self) -> None:
        for i, name in enumerate(self.allowed_hosts):
            if not (is_host_name(name) or _is_ip(name.strip("[]"))):
                raise ConfigError(f"allowed_hosts[{i}]: expected a host name, got {shown(name)}")


ANY_USER = "*"


@dataclass(frozen=True)
class TargetsConfig:
    pids: tuple[int, ...] = opt((), "extra process ids to profile (list of integers)")
    cmdline_patterns: tuple[str, ...] = opt(
        (
            r"vllm[./ ]entrypoints|vllm serve|\bvllm\b.*api_server",
            r"EngineCore|VllmWorker|vllm.*worker",
            r"sglang[./ ]launch_server|sglang::|sglang.*scheduler",
            r"text_generation_server|text-generation-server",
            r"trtllm-serve|tensorrt_llm|triton.*python_backend|triton_python_backend_stub",
        ),
        "regular expressions matched against each process's command line (Python re syntax)",
    )
    discovery_interval_s: float = opt(2.0, "how often the process table is rescanned (seconds)", min=0.5, max=60)
    include_descendants: bool = opt(True, "also profile the Python child processes of every target")
    use_nvml_processes: bool = opt(True, "profile the processes that hold a CUDA context (NVML)")
    allowed_users: tuple[str, ...] = opt(("root",), "users whose processes may be profiled, by name or numeric uid "
                                         "(real and effective uid both); the agent's own user always is; \"*\" "
                                         "allows every user. A process no allow-list admits is never sampled, "
                                         "whatever its command line; one holding a GPU is shown only as "
                                         "other_gpu_process")
    allowed_units: tuple[str, ...] = opt((), "systemd system units whose processes may be profiled whoever runs "
                                         "them (globs: \"vllm*.service\", \"docker-*.scope\"); units under "
                                         "user.slice never count, since any user can start one of any name")
    allowed_cgroups: tuple[str, ...] = opt((), "cgroup paths whose processes, and those of the cgroups below them, "
                                           "may be profiled (globs: \"/kubepods.slice\", "
                                           "\"/system.slice/docker-*.scope\")")

    def __post_init__(self) -> None:
        for i, entry in enumerate(self.allowed_users):
            if entry == ANY_USER or entry.isdigit():
                continue
            try:
                pwd.getpwnam(entry)
            except KeyError:
                raise ConfigError(f"allowed_users[{i}]: no user named {shown(entry)} on this host (a name, a "
                                  "numeric uid or \"*\")") from None
        for i, pattern in enumerate(self.allowed_units):
            if not pattern or "/" in pattern:
                raise ConfigError(f"allowed_units[{i}]: expected a unit name or glob such as \"vllm*.service\", "
                                  f"got {shown(pattern)}")
        for i, pattern in enumerate(self.allowed_cgroups):
            if not pattern.startswith("/"):
                raise ConfigError(f"allowed_cgroups[{i}]: expected a cgroup path starting with '/', got "
                                  f"{shown(pattern)}")


@dataclass(frozen=True)
class HostCollectorConfig:
    enabled: bool = opt(True, "sample host and per-target CPU, memory, threads and context switches")
    interval_s: float = opt(1.0, "sampling interval (seconds)", min=0.1, max=3600)


@dataclass(frozen=True)
class StacksCollectorConfig:
    enabled: bool = opt(True, "sample Python stacks of every target with py-spy (always --nonblocking)")
    rate_hz: int = opt(20, "highest py-spy sampling rate per target (samples per second). 20 gives each thread "
                           "20 samples in every 1 s bucket, and bench/overhead.py measured a single-threaded "
                           "target 20 frames deep at 20 Hz costing 1.1-1.5% of a core in py-spy, inside the "
                           "budget below", min=1, max=1000)
    cpu_budget_percent: float = opt(1.25, "py-spy CPU allowed per target (% of one core): a target whose stacks "
                                          "cost more (many threads, deep stacks) is sampled at a lower rate, down "
                                          "to 1 Hz; 0 keeps rate_hz fixed. 1.25 keeps py-spy plus the agent's own "
                                          "share (0.2-0.4% measured) under 2% of a core per target; "
                                          "bench/overhead.py's 20-thread target then runs at 1-2 Hz",
                                    min=0, max=100)
    recording_s: int = opt(10, "length of one rolling py-spy recording (whole seconds); stacks arrive this late, "
                               "and each recording costs one attach", min=2, max=600)
    handover_s: float = opt(0.5, "how long before a recording's end its successor is started (seconds); the "
                                 "old one runs on until the new one has attached, so this only needs to cover "
                                 "a typical attach", min=0.1, max=30)
    retry_max_s: float = opt(60.0, "longest wait between attempts on a target py-spy failed on (seconds)",
                             min=1, max=3600)
    pyspy_path: str = opt("", "py-spy binary; empty means the one from the py-spy wheel, then PATH")
    include_idle: bool = opt(True, "keep idle samples (threads waiting), marked as idle")


@dataclass(frozen=True)
class GpuCollectorConfig:
    enabled: bool = opt(True, "sample NVML and NVML GPM counters of every GPU")
    fast_interval_s: float = opt(0.5, "utilization, GPM, power and clock sampling interval (seconds)", min=0.1, max=60)
    slow_interval_s: float = opt(5.0, "memory, temperature, energy and per-process sampling interval (seconds)",
                                 min=0.5, max=3600)
    energy_interval_s: float = opt(60.0, "read the energy counter at most this often (seconds); NVML spends about "
                                          "4 ms of CPU per read on an H100, as much as the rest of a slow tick",
                                   min=0.5, max=86400)
    gpm: str = opt("auto", "use NVML GPM: auto (when supported), on, or off", choices=("auto", "on", "off"))
    fast_graphics_util: bool = opt(False, "compute GPM graphics_util on every fast tick instead of as the average "
                                          "over each slow interval; NVML spends 1.3-1.6 ms of CPU per call on it "
                                          "on an H100, about 0.3 % of a core per GPU at the default 0.5 s")
    dcgm_url: str = opt("", "dcgm-exporter /metrics URL for GPUs without GPM; empty means probe "
                            "http://127.0.0.1:9400/metrics, off means never scrape one")
    dcgm_interval_s: float = opt(1.0, "dcgm-exporter scrape interval while some GPU lacks GPM (seconds)",
                                 min=0.1, max=3600)
    events: bool = opt(True, "listen for XID and other critical NVML events")


@dataclass(frozen=True)
class EnginesCollectorConfig:
    enabled: bool = opt(True, "scrape the engines' Prometheus /metrics")
    interval_s: float = opt(1.0, "scrape interval (seconds)", min=0.1, max=3600)
    timeout_s: float = opt(10.0, "deadline of one scrape (seconds); may exceed the interval: a late answer is still "
                           "a sample, and an endpoint is not scraped again before it answers or this passes",
                           min=0.05, max=600)
    endpoints: tuple[str, ...] = opt((), "engine /metrics URLs scraped in addition to those discovered")
    autodiscover: bool = opt(True, "probe /metrics on the listening ports of discovered engine processes")
    max_series_per_endpoint: int = opt(5000, "raw series kept per endpoint; more are counted and dropped", min=1)
    quantile_window_s: float = opt(10.0, "window of the latency quantiles p50/p95/p99 (seconds)", min=1, max=3600)


@dataclass(frozen=True)
class CollectorsConfig:
    host: HostCollectorConfig = field(default_factory=HostCollectorConfig)
    stacks: StacksCollectorConfig = field(default_factory=StacksCollectorConfig)
    gpu: GpuCollectorConfig = field(default_factory=GpuCollectorConfig)
    engines: EnginesCollectorConfig = field(default_factory=EnginesCollectorConfig)


@dataclass(frozen=True)
class AnalysisConfig:
    """Thresholds come from the recordings in tests/fixtures: real vLLM 0.24 (Llama 0.8, 2.7 and 7 B,
    Qwen2 1.3 B; CUDA graphs and eager; one and four API servers) and transformers code on H100
    and H200, and our synthetic scenario engine on an H100. Each doc quotes the pooled phase
    values on both sides of its threshold; bench/real_engine/margins.py prints them and moves
    each threshold 15 % either way to show no recorded phase changes to a class it may not have."""

    enabled: bool = opt(True, "classify windows and detect gaps, mismatches, saturation and regressions")
    interval_s: float = opt(5.0, "how often the analysis runs over new data (seconds)", min=0.5, max=3600)
    lag_s: float = opt(15.0, "analyse up to this long before now, so late stack recordings are in (seconds); "
                       "must exceed collectors.stacks.recording_s + handover_s + storage.flush_interval_s when "
                       "stacks are sampled", min=0, max=3600)
    busy_sm_pct: float = opt(40.0, "GPM SM utilization at or above which the GPU counts as busy (%), pooled over an "
                                   "episode. Busy phases measured 50-98 (scenario compute 50, vLLM decode 68-80, "
                                   "prefill 91-98); starved ones at most 36 (Llama 2.7 B heavy decode) and 29 (Qwen2 "
                                   "48 streams); vLLM 7 B logprobs reads 41 and is host-bound through "
                                   "host_bound_max_sm_pct. Moved 15 % either way it changes no recorded phase to a "
                                   "class its recording does not allow (bench/real_engine/margins.py)", min=0, max=100)
    idle_sm_pct: float = opt(3.0, "SM utilization below which the GPU does nothing (%): idle phases read 0.0, the "
                                  "least busy starved phase 3.4 (scenario host-bound). Moved 15 % either way it "
                                  "changes no recorded phase to a class its recording does not allow "
                                  "(bench/real_engine/margins.py)", min=0, max=100)
    compute_tensor_pct: float = opt(25.0, "a busy GPU can be compute_bound only when tensor utilization reaches this "
                                          "(%): compute phases 42-76 (bf16 GEMM 94, prefill 55-76, GEMMs of a "
                                          "neighbour 46-51); busy phases near no tensor roof at most 12, or 33 with "
                                          "a tensor/SM ratio of 0.42 (vLLM 7 B 128 streams). Moved 15 % either way "
                                          "it changes no recorded phase to a class its recording does not allow "
                                          "(bench/real_engine/margins.py)", min=0, max=100)
    compute_roof_ratio: float = opt(0.5, "a busy GPU is compute_bound when tensor utilization / SM utilization "
                                         "reaches this: its tensor pipes near their roof while the SMs work. Compute "
                                         "phases 0.59-0.97 (prefill 0.60-0.97, GEMMs of a neighbour 0.59-0.73); "
                                         "batched decode of a 7 B model 0.42 (vLLM 128 streams) and below. Moved 15 "
                                         "% either way it changes no recorded phase to a class its recording does "
                                         "not allow (bench/real_engine/margins.py)", min=0, max=2)
    memory_dram_pct: float = opt(30.0, "a busy GPU can be memory_bound only when DRAM bandwidth utilization reaches "
                                       "this (%): memory phases 43-90 (copy 90, decode 43-77); compute phases 22-36 "
                                       "are told apart by memory_roof_ratio. Moved 15 % either way it changes no "
                                       "recorded phase to a class its recording does not allow "
                                       "(bench/real_engine/margins.py)", min=0, max=100)
    memory_roof_ratio: float = opt(0.75, "a busy GPU is memory_bound when DRAM bandwidth utilization / SM "
                                         "utilization reaches this: bandwidth near its roof while the SMs work. "
                                         "Memory phases 0.95-1.09 (scenario, vLLM 7 B one stream); compute phases "
                                         "0.22-0.53; vLLM 7 B 128 streams 0.61 and structured output 0.80 sit near "
                                         "neither roof and may read latency_bound or memory_bound. A busy GPU near "
                                         "neither roof is latency_bound. Moved 15 % either way it changes no "
                                         "recorded phase to a class its recording does not allow "
                                         "(bench/real_engine/margins.py)", min=0, max=2)
    startup_max_s: float = opt(900.0, "a serving process younger than this whose samples are mostly start-up code "
                               "(imports, torch.compile, Triton, CUDA-graph capture, weight loading) puts its GPU "
                               "in the starting class until it serves or goes quiet; vLLM 0.24 took 60-100 s "
                               "(seconds)", min=0, max=86400)
    launch_ratio: float = opt(0.65, "launch_bound when SM util / NVML util falls below this while a serving CPU is "
                                    "busy: kernels run but fill few SMs. Scenario launch-bound phases 0.50-0.53 (0.0 "
                                    "for 100 empty kernels), its host-bound ones 0.79-1.0. The real starved vLLM and "
                                    "transformers phases spread over 0.11-0.73 (eager 0.21-0.36, CUDA graphs "
                                    "0.43-0.73): their counters do not separate launch from host, and either class "
                                    "names the same culprit. Moved 15 % either way it changes no recorded phase to a "
                                    "class its recording does not allow (bench/real_engine/margins.py)", min=0, max=1)
    launch_min_util_pct: float = opt(25.0, "NVML utilization needed before the launch_ratio test applies (%): "
                                           "scenario launch-bound phases 43-60, its starved host-bound ones 3.6-24 "
                                           "(where the slower average of NVML lags the SM counter). Real starved "
                                           "phases 10-60 may read either class (launch_ratio). Moved 15 % either way "
                                           "it changes no recorded phase to a class its recording does not allow "
                                           "(bench/real_engine/margins.py)", min=0, max=100)
    cpu_busy_pct: float = opt(60.0, "a serving process using at least this much of one core on its own work (pooled "
                                    "over an episode, GPU waits taken out) is busy (%): the busiest process of every "
                                    "starved phase 77-110 (four API servers under a flood 77 each); of the busy and "
                                    "idle phases at most 53 (the engine core of vLLM 7 B with one stream), of stalls "
                                    "5-8. Moved 15 % either way it changes no recorded phase to a class its "
                                    "recording does not allow (bench/real_engine/margins.py)", min=1, max=10000)
    host_saturated_pct: float = opt(80.0, "a serving process using this much of a core on its own work is saturated "
                                          "(%): then a GPU below host_bound_max_sm_pct is host_bound, not busy. "
                                          "Saturated processes of starved phases with SM 40-60 read 95-102 (the API "
                                          "server of vLLM 7 B logprobs 97, the engine core of Llama 2.7 B with 128 "
                                          "streams 95); the busiest of busy phases in that band 61 (GEMMs of a "
                                          "neighbour beside 48 streams), 76 with SM 62 (vLLM 7 B structured output). "
                                          "Moved 15 % either way it changes no recorded phase to a class its "
                                          "recording does not allow (bench/real_engine/margins.py)", min=0, max=10000)
    host_bound_max_sm_pct: float = opt(60.0, "below this SM utilization a GPU waits on a saturated serving process "
                                             "for at least 40% of the time and is host_bound (or launch_bound), even "
                                             "above busy_sm_pct. Starved phases with a saturated process read SM "
                                             "41-43 (vLLM 7 B logprobs, Llama 2.7 B 128 streams); busy phases with a "
                                             "saturated engine core 71 and more (GEMMs of a neighbour beside vLLM). "
                                             "Moved 15 % either way it changes no recorded phase to a class its "
                                             "recording does not allow (bench/real_engine/margins.py)", min=0, max=100)
    episode_min_s: int = opt(5, "an episode (a stretch of one workload) lasts at least this long, and a change "
                             "is confirmed this many seconds after it happened (seconds)", min=2, max=60)
    episode_max_s: int = opt(300, "an episode still open after this long is closed and continued by the next "
                             "(its findings go on under one id): bounds the analysis's memory (seconds)",
                             min=60, max=7200)
    episode_load_log2: float = opt(0.8, "a change of the requests in flight (or at the front end) ends an episode "
                                   "when log2(1 + requests) moves this much: a factor of ~1.7 at high load. "
                                   "Carries alone the eager engine's change from 1 to 48 streams (log2 moves 4.6)."
                                   " Lowered 15 % it splits none of the 60 recorded phases of 10 s or more; raised 15 "
                                   "% it still finds every phase change it alone carries "
                                   "(bench/real_engine/margins.py)",
                                   min=0.1, max=10)
    episode_mix: float = opt(0.3, "a change of the prompt share of the token flow (0-1) that ends an episode: "
                             "prefill 0.9-1.0 against decode 0.0-0.1; inside a phase it moves at most 0.08."
                             " Lowered 15 % it splits none of the 60 recorded phases of 10 s or more; raised 15 % it "
                             "still finds every phase change it alone carries (bench/real_engine/margins.py)",
                             min=0.05, max=1)
    episode_gpu_pct: float = opt(15.0, "a change of SM, tensor or DRAM activity (points of %) that ends an "
                                 "episode: inside a phase SM wanders up to 10 points between stretches (vLLM "
                                 "decode 15-27 % second to second); a neighbour moved tensor 8 -> 41-51."
                                 " Lowered 15 % it splits none of the 60 recorded phases of 10 s or more; raised 15 % "
                                 "it still finds every phase change it alone carries "
                                 "(bench/real_engine/margins.py)", min=1, max=100)
    episode_cpu_pct: float = opt(35.0, "a change of a serving process's CPU (points of % of a core) that ends an "
                                 "episode: carries alone the API server's change between logprobs (100 %) and "
                                 "structured output or one stream (16-32 %)."
                                 " Lowered 15 % it splits none of the 60 recorded phases of 10 s or more; raised 15 % "
                                 "it still finds every phase change it alone carries "
                                 "(bench/real_engine/margins.py)", min=1, max=10000)
    episode_foreign: float = opt(0.6, "a change of the share of seconds a foreign process works on the GPU that "
                                 "ends an episode (0-1): a neighbour running GEMMs is active in 0.9-1.0 of its "
                                 "phase's seconds, 0 outside."
                                 " Lowered 15 % it splits none of the 60 recorded phases of 10 s or more; raised 15 % "
                                 "it still finds every phase change it alone carries "
                                 "(bench/real_engine/margins.py)", min=0.1, max=1)
    episode_profile_novel: float = opt(0.3, "a change of a serving process's own-work code that ends an episode: "
                                       "the share of one side's samples in modules the other side hardly runs "
                                       "(0-1): 0.26-0.3 inside transformers' prefill; tokenizer modules beside the "
                                       "model 0.3-0.5 of the samples."
                                       " Lowered 15 % it splits none of the 60 recorded phases of 10 s or more; "
                                       "raised 15 % it still finds every phase change it alone carries "
                                       "(bench/real_engine/margins.py)", min=0.05, max=1)
    episode_profile_samples: int = opt(40, "own-work samples each side needs before a profile may end an "
                                       "episode (count)", min=5)
    throttle_front_share: float = opt(0.4, "the front end (API server) is the throttle of a starved episode when it "
                                           "holds at least this share of the requests in flight (0-1; Little's law "
                                           "on the HTTP and engine latency sums). Front-end-throttled phases "
                                           "0.61-0.96 (logprobs 0.61-0.77, a flood of 1-token requests 0.95-0.96; "
                                           "with four API servers 0.54); engine-throttled ones 0.00-0.19 (128 "
                                           "streaming clients 0.16-0.19). Moved 15 % either way it names another "
                                           "first process in no recorded phase "
                                           "(bench/real_engine/margins.py)", min=0.05, max=0.95)
    gap_min_s: float = opt(3.0, "a CPU-GPU gap lasts at least this long to become an event (seconds)", min=1)
    gap_merge_s: float = opt(2.0, "gaps separated by at most this much merge (seconds); a busy second between "
                             "starved ones joins them when the culprit process stays saturated (vLLM 7 B, 20 "
                             "logprobs per token: the API server at 100% starved its GPU in bursts)", min=0)
    top_frames: int = opt(5, "frames named in each event's attribution (count)", min=1, max=50)
    mismatch_min_s: float = opt(5.0, "a utilization-versus-throughput mismatch lasts this long (seconds)", min=1)
    mismatch_work_rise: float = opt(1.5, "some GPU activity (SM, tensor or DRAM %) per token at least this multiple of "
                                    "its baseline: a neighbour's GEMMs raised tensor per token 9x (6% -> 57% at the "
                                    "same 16k tokens/s); healthy vs memory-bound decode differ by 0.65-1.05x", min=1)
    mismatch_latency_rise: float = opt(1.5, "or per-request time per token (running / tokens/s) at least this multiple "
                                       "of the baseline: the neighbour raised it 2.4x (1.4 -> 3.4 ms)", min=1)
    baseline_s: float = opt(900.0, "trailing window the mismatch and saturation baselines come from (seconds)",
                            min=10)
    saturation_min_s: float = opt(10.0, "busy-and-queue-growing must last this long to report saturation (seconds)",
                                  min=2)
    straggler_min_s: float = opt(5.0, "a straggler among the ranks of one engine (one rank on its own work or its "
                                 "GPU busier while the other ranks wait in collectives) lasts this long to become "
                                 "an event (seconds): one slow step is noise, a rank that lags second after second "
                                 "slows every step of the engine", min=1)
    regression_window_s: float = opt(900.0, "length of the periods compared for regressions (seconds)", min=60)
    regression_baseline: str = opt("previous", "baseline for regressions: previous (the window before) or "
                                   "yesterday (same time one day earlier)", choices=("previous", "yesterday"))
    regression_ratio: float = opt(1.3, "a latency or throughput change at least this ratio is a regression: "
                                  "healthy-vs-healthy repeats in the recordings differ by up to 1.25x (e2e p95) and "
                                  "1.04x (ITL p50, tokens/s)", min=1)
    regression_min_latency_s: float = opt(0.05, "latencies below this are not compared (seconds): quantiles from "
                                          "the first histogram buckets are coarse, TTFT p95 near 5-20 ms varied 4x "
                                          "between two healthy phases", min=0)
    model_weight_bytes: float = opt(0.0, "bytes of model weights read per decode step, for model bandwidth "
                                    "utilization; 0 means unknown", min=0)


SEVERITIES = ("info", "warning", "critical")
WEBHOOK_FORMATS = ("slack", "discord", "msteams", "generic")


@dataclass(frozen=True)
class WebhookConfig:
    """One webhook target (``[[alerts.webhooks]]``). ``url`` and ``secret`` never leave the process
    except in the request itself: logs, /api/* and error messages show the URL's scheme and host."""

    name: str = opt("", "a unique name for this target, shown in logs and /api/health")
    format: str = opt("slack", "slack (also Mattermost and Rocket.Chat), discord, msteams (Workflows webhook) or "
                      "generic (JSON with every field)", choices=WEBHOOK_FORMATS)
    url: str = opt("", "the webhook URL, http:// or https:// (secret)", secret=True)
    secret: str = opt("", "HMAC-SHA256 key: when set, X-Infersight-Signature: sha256=<hex> signs the exact body "
                      "(secret)", secret=True)
    min_severity: str = opt("warning", "least severity that opens an alert: info, warning or critical",
                            choices=SEVERITIES)
    kinds: tuple[str, ...] = opt((), "event kinds sent (cpu_gpu_gap, util_throughput_mismatch, saturation, "
                                 "regression, xid, ...); empty means every kind")
    gpus: tuple[int, ...] = opt((), "GPU indices whose events are sent; empty means every GPU and host-wide events")

    def __post_init__(self) -> None:
        # messages name the key (build() prefixes the table path) and never echo the URL: it is secret
        if not self.name.strip():
            raise ConfigError("name: required, a unique name for this target")
        try:
            parts = urllib.parse.urlsplit(self.url)
            host = parts.hostname
        except ValueError:
            host = None
        if not host or parts.scheme.lower() not in ("http", "https"):
            raise ConfigError("url: required, an http:// or https:// URL with a host (value not shown: secret)")

    @classmethod
    def example(cls) -> "WebhookConfig":
        """The target config.example.toml shows (commented out)."""
        return cls(name="oncall", format="slack", url="https://hooks.slack.com/services/T000/B000/XXXXXXXX")


@dataclass(frozen=True)
class AlertsConfig:
    """Webhook alerts: findings grouped per (kind, host, GPU), delivered through a DuckDB outbox."""

    cooldown_s: float = opt(300.0, "quiet time after a finding ends before its group resolves; a finding that "
                            "returns within it continues the same alert instead of sending a new one (seconds)",
                            min=0, max=86400)
    max_age_s: float = opt(86400.0, "an undelivered message older than this is given up and recorded (seconds)",
                           min=10)
    backoff_initial_s: float = opt(2.0, "first retry delay after a failed delivery; doubles per attempt, with "
                                   "jitter (seconds)", min=0.05, max=3600)
    backoff_max_s: float = opt(300.0, "longest retry delay, unless the receiver asks for more with Retry-After "
                               "(seconds)", min=0.05, max=86400)
    timeout_s: float = opt(10.0, "time limit of one delivery attempt (seconds)", min=0.1, max=300)
    send_resolved: bool = opt(True, "send a resolved message when an alerted finding has ended")
    webhooks: tuple[WebhookConfig, ...] = opt((), "webhook targets, one [[alerts.webhooks]] table each (see "
                                              "the commented example below; delete this line when you add one)")

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for i, hook in enumerate(self.webhooks):
            if hook.name in seen:
                raise ConfigError(f"webhooks[{i}].name: duplicate name {hook.name!r}")
            seen.add(hook.name)


@dataclass(frozen=True)
class PyroscopeConfig:
    """Pushes each target group's stacks to a Grafana Pyroscope server (its /ingest API)."""

    enabled: bool = opt(False, "push the stacks of every target to a Grafana Pyroscope server every interval_s")
    url: str = opt("http://127.0.0.1:4040", "base URL of the Pyroscope server; /ingest is appended (http or https)")
    interval_s: float = opt(15.0, "length of each pushed profile and how often pushes happen (seconds)", min=1,
                            max=3600)
    lag_s: float = opt(15.0, "push stacks up to this long before now, so late py-spy recordings are in (seconds); "
                       "keep above collectors.stacks.recording_s + storage.flush_interval_s", min=0, max=3600)
    service: str = opt("infersight", "application name and service label of the pushed profiles "
                       "(letters, digits, '_', '-', '.')")
    auth_token: str = opt("", "sent as 'Authorization: Bearer TOKEN' when set (secret)", secret=True)
    tenant_id: str = opt("", "sent as X-Scope-OrgID for a multi-tenant Pyroscope when set")
    max_buffered: int = opt(240, "pushes kept while the server is unreachable; the oldest are dropped beyond this "
                            "(count)", min=1, max=100000)
    timeout_s: float = opt(5.0, "timeout of one push request (seconds)", min=0.1, max=120)
    max_backoff_s: float = opt(300.0, "longest wait between retries while the server fails; the wait doubles from "
                               "interval_s after each failure (seconds)", min=1, max=86400)

    def __post_init__(self) -> None:
        # messages name the key relative to this table; build() prefixes the table path
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"url: expected an http:// or https:// URL with a host, got {shown(self.url)}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.service):
            raise ConfigError(f"service: use letters, digits, '_', '-' and '.', got {shown(self.service)}")


@dataclass(frozen=True)
class ExportConfig:
    """Writes closed hours of every table as Parquet files in a hive-partitioned tree."""

    enabled: bool = opt(False, "write every closed hour of every table as Parquet under directory")
    directory: str = opt("", "root of the tree (table=/host=/date=/hour=); empty means a folder 'export' next to "
                         "storage.path")
    interval_s: float = opt(300.0, "how often closed hours are looked for and written (seconds)", min=1, max=86400)
    settle_s: float = opt(120.0, "an hour is closed, and written, once it ended this long ago (seconds); keep above "
                          "analysis.lag_s + analysis.interval_s so its windows and events are in", min=0, max=86400)
    max_hours_per_run: int = opt(24, "hours written per run at most, so catching up after a long stop stays gentle "
                                 "(count)", min=1, max=10000)


@dataclass(frozen=True)
class Config:
    agent: AgentConfig = field(default_factory=AgentConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    web: WebConfig = field(default_factory=WebConfig)
    targets: TargetsConfig = field(default_factory=TargetsConfig)
    collectors: CollectorsConfig = field(default_factory=CollectorsConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    pyroscope: PyroscopeConfig = field(default_factory=PyroscopeConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)

    @property
    def host(self) -> str:
        return self.agent.host or socket.gethostname()


def load_config(path: str | Path | None) -> Config:
    """Read and validate a TOML file; ``None`` gives the defaults. Raises ConfigError."""
    if path is None:
        return Config()
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return build(Config, raw, "")


def build(cls: type, raw: Any, path: str) -> Any:
    """Turn a TOML table into dataclass ``cls``, validating every key under ``path``."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{path or 'config'}: expected a table, got {shown(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        raise ConfigError(f"{where}: unknown key (known: {', '.join(sorted(fields))})")
    values = {}
    for name, value in raw.items():
        key_path = f"{path}.{name}" if path else name
        values[name] = _convert(hints[name], value, key_path, fields[name].metadata)
    try:
        return cls(**values)
    except ConfigError as exc:  # a check across keys (__post_init__) names keys relative to this table
        raise ConfigError(f"{path}.{exc}" if path else str(exc)) from None


def _convert(hint: Any, value: Any, path: str, meta: typing.Mapping[str, Any]) -> Any:
    if dataclasses.is_dataclass(hint):
        return build(hint, value, path)
    origin = typing.get_origin(hint)
    if origin is tuple:
        (item_hint, _) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {shown(value)}")
        if dataclasses.is_dataclass(item_hint):
            return tuple(build(item_hint, v, f"{path}[{i}]") for i, v in enumerate(value))
        return tuple(check_value(item_hint, v, f"{path}[{i}]", meta) for i, v in enumerate(value))
    if origin in (types.UnionType, typing.Union):
        return value  # not used by the tree today; kept permissive rather than wrong
    return check_value(hint, value, path, meta)


def iter_keys(cls: type = Config, prefix: str = "") -> typing.Iterator[tuple[str, dataclasses.Field]]:
    """Every leaf key path of the tree with its field (for docs and the example-file test)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            yield from iter_keys(hints[f.name], key + ".")
        else:
            yield key, f


def with_overrides(config: Config, **changes: Any) -> Config:
    """A copy with dotted-path overrides, e.g. ``{"storage.path": "x.duckdb"}`` (validated)."""
    for dotted, value in changes.items():
        config = _replace_path(config, dotted.split("."), value, "")
    return config


def _replace_path(obj: Any, parts: list[str], value: Any, done: str) -> Any:
    name = parts[0]
    key_path = f"{done}.{name}" if done else name
    hints = typing.get_type_hints(type(obj))
    if name not in hints:
        raise ConfigError(f"{key_path}: unknown key")
    if len(parts) == 1:
        meta = {f.name: f.metadata for f in dataclasses.fields(obj)}[name]
        if isinstance(value, tuple):
            value = list(value)
        converted = _convert(hints[name], value, key_path, meta)
        try:
            return dataclasses.replace(obj, **{name: converted})
        except ConfigError as exc:
            raise ConfigError(f"{done}.{exc}" if done else str(exc)) from None
    return dataclasses.replace(obj, **{name: _replace_path(getattr(obj, name), parts[1:], value, key_path)})
