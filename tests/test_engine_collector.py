"""The engine collector against live endpoints served by aiohttp on loopback."""
from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infersight.daemon.collectors.engines import EngineCollector
from infersight.daemon.config.load import EnginesCollectorConfig
from infersight.daemon.engines.discovery import normalize_url

VLLM_TEXT = (Path(__file__).parent / "fixtures" / "engine-metrics" / "vllm.prom").read_text()
PROM = "text/plain"


class Clock:
    """The collector's and the test server's shared notion of now (Unix seconds)."""

    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def config(*urls: str, **kw) -> EnginesCollectorConfig:
    kw.setdefault("interval_s", 1.0)
    kw.setdefault("timeout_s", 0.5)
    kw.setdefault("autodiscover", False)
    return EnginesCollectorConfig(endpoints=tuple(urls), **kw)


async def serve(routes: dict[str, object]) -> TestServer:
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


def text_handler(body: str | bytes, content_type: str = PROM, hits: list | None = None):
    async def handler(request):
        if hits is not None:
            hits.append(request.path)
        return web.Response(body=body.encode() if isinstance(body, str) else body, content_type=content_type)
    return handler


# -- a live engine whose counters advance at a known rate and reset once ---------------

RATE = 250.0           # generated tokens per second
RESET_AT = 6.5         # seconds after start the engine restarts


async def test_live_rate_matches_and_reset_does_not_spike():
    clock = Clock()
    start = clock.t

    async def metrics(request):
        elapsed = clock.t - start
        since = elapsed - RESET_AT if elapsed >= RESET_AT else elapsed
        tokens = RATE * since + (0 if elapsed >= RESET_AT else 12_345.0)   # the old process had a past
        fast = 10 * int(since)          # ten requests per second, all with TTFT in (0.1, 0.25]
        body = (f'vllm:generation_tokens_total{{engine="0",model_name="m"}} {tokens}\n'
                f'vllm:num_requests_running{{engine="0",model_name="m"}} 7\n'
                f'vllm:time_to_first_token_seconds_bucket{{engine="0",le="0.1",model_name="m"}} 0\n'
                f'vllm:time_to_first_token_seconds_bucket{{engine="0",le="0.25",model_name="m"}} {fast}\n'
                f'vllm:time_to_first_token_seconds_bucket{{engine="0",le="+Inf",model_name="m"}} {fast}\n')
        return web.Response(text=body, content_type=PROM)

    server = await serve({"/metrics": metrics})
    collector = EngineCollector(config(str(server.make_url("/metrics"))), "host", clock=clock)
    await collector.start()
    rates, deltas, p50s = [], [], []
    try:
        for _ in range(14):
            clock.t += 1.0
            batch = await collector.collect(clock.t)
            assert not batch.errors
            rates += [(s.t - start, s.value) for s in batch.engine_samples if s.signal == "generation_tokens_per_s"]
            p50s += [s.value for s in batch.engine_samples if s.signal == "ttft_seconds_p50"]
            deltas += batch.histogram_deltas
    finally:
        await collector.close()
        await server.close()
    assert len(rates) == 13
    steady = [v for at, v in rates if not RESET_AT < at < RESET_AT + 1]
    assert len(steady) == 12
    assert all(v == pytest.approx(RATE, rel=0.02) for v in steady)
    [(_, at_reset)] = [(at, v) for at, v in rates if RESET_AT < at < RESET_AT + 1]
    assert 0 <= at_reset <= RATE * 1.02                       # no spike, never negative
    assert all(min(d.counts) >= 0 for d in deltas)
    assert p50s and all(v == pytest.approx(0.175) for v in p50s)
    [status] = collector.endpoint_status()
    assert status["ok"] and status["engine"] == "vllm" and status["models"] == ["m"]


# -- broken endpoints ------------------------------------------------------------------

async def test_broken_endpoints_leave_the_agent_healthy_and_say_why():
    hits: list[str] = []
    release = asyncio.Event()

    async def hang(request):
        hits.append(request.path)
        await asyncio.wait_for(release.wait(), 30)
        return web.Response(text="late")

    async def error(request):
        hits.append(request.path)
        return web.Response(status=500, text="boom")

    server = await serve({
        "/metrics": text_handler(VLLM_TEXT),
        "/hang": hang,
        "/err": error,
        "/html": text_handler("<html><body>login</body></html>", "text/html"),
        "/plainhtml": text_handler("<html>\n<body>login</body>\n</html>\n"),
    })
    gone = await serve({"/metrics": text_handler(VLLM_TEXT)})
    urls = {name: str(server.make_url("/" + name)) for name in ("metrics", "hang", "err", "html", "plainhtml")}
    urls["gone"] = str(gone.make_url("/metrics"))
    collector = EngineCollector(config(*urls.values(), timeout_s=0.5), "host")
    await collector.start()
    try:
        first = await collector.collect(0.0)
        await gone.close()              # the engine disappears after one good scrape
        batches = [first] + [await collector.collect(float(i)) for i in range(1, 8)]
        status = {s["url"]: s for s in collector.endpoint_status()}
    finally:
        release.set()
        await collector.close()
        await server.close()
    for b in batches:   # the good endpoint produced records in every run
        assert {s.signal for s in b.engine_samples} >= {"requests_running", "kv_cache_usage"}
    assert status[urls["metrics"]]["ok"] and status[urls["metrics"]]["last_error"] is None
    assert status[urls["hang"]]["last_error"] == "timed out after 0.5 s"
    assert status[urls["err"]]["last_error"] == "HTTP 500 Internal Server Error"
    assert status[urls["html"]]["last_error"] == "not Prometheus text (got text/html)"
    assert status[urls["plainhtml"]]["last_error"] == "not Prometheus text (no readable sample in 3 lines)"
    assert status[urls["gone"]]["last_error"] == "connection refused"
    assert status[urls["gone"]]["last_success"] is not None and not status[urls["gone"]]["ok"]
    for name in ("hang", "err", "html", "plainhtml", "gone"):
        assert not status[urls[name]]["ok"]
    assert any(e.startswith(urls["err"]) and "HTTP 500" in e for e in first.errors)
    # Backoff: failing runs 1, 2, 4 and 8 of 8 (waits of 0, 1, 3 runs).
    assert hits.count("/err") == 4 and status[urls["err"]]["consecutive_failures"] == 4
    assert status[urls["err"]]["retry_in_runs"] == 7


# -- a saturated API server: late answers are samples, hung ones time out alone --------

async def test_a_slow_api_server_loses_no_scrape_and_its_lag_is_a_signal():
    """/metrics answers after 1.5 s, then 0.2 s, ...: longer than the 1 s interval, like vLLM's
    API server under load. Every answer becomes a sample, none overlap, runs stay short."""
    lags = (1.5, 0.2, 1.5, 0.1)
    rate = 400.0
    start = time.time()
    state = {"asked": 0, "answered": 0, "inflight": 0, "max_inflight": 0}

    async def metrics(request):
        lag = lags[state["asked"] % len(lags)]
        state["asked"] += 1
        state["inflight"] += 1
        state["max_inflight"] = max(state["max_inflight"], state["inflight"])
        await asyncio.sleep(lag)                  # the event loop gets to the handler late
        tokens = rate * (time.time() - start)     # the counters are read when the handler runs
        state["inflight"] -= 1
        state["answered"] += 1
        return web.Response(text=f'vllm:generation_tokens_total{{engine="0",model_name="m"}} {tokens}\n',
                            content_type=PROM)

    server = await serve({"/metrics": metrics})
    collector = EngineCollector(config(str(server.make_url("/metrics")), interval_s=1.0, timeout_s=10.0), "host")
    samples, errors, run_s = [], [], []
    try:
        while state["answered"] < 6 or collector.endpoint_status()[0]["in_flight"]:
            t0 = time.monotonic()
            batch = await collector.collect(time.time())
            run_s.append(time.monotonic() - t0)
            samples += batch.engine_samples
            errors += batch.errors
        [status] = collector.endpoint_status()
    finally:
        await collector.close()
        await server.close()
    latencies = [s.value for s in samples if s.signal == "scrape_latency_seconds"]
    rates = [s.value for s in samples if s.signal == "generation_tokens_per_s"]
    assert not errors and status["scrapes_failed"] == 0
    assert len(latencies) == state["answered"] == status["scrapes_ok"]     # no answer lost
    assert state["max_inflight"] == 1                                       # never two at once
    assert status["scrapes_late"] >= 2
    assert sum(v >= 1.5 for v in latencies) == sum(lags[i % 4] == 1.5 for i in range(state["answered"]))
    assert all(v < 3.0 for v in latencies)
    # stamped when answered, the rates stay right although the lag swings between 0.1 and 1.5 s
    assert len(rates) == state["answered"] - 1
    assert all(v == pytest.approx(rate, rel=0.05) for v in rates)
    assert max(run_s) < 0.9 + 0.5                                           # no run waits for a late scrape
    assert {s.engine for s in samples if s.signal == "scrape_latency_seconds"} == {"vllm"}


async def test_a_hung_endpoint_times_out_alone_and_is_asked_once():
    release = asyncio.Event()
    hung: list[float] = []

    async def hang(request):
        hung.append(time.monotonic())
        await release.wait()
        return web.Response(text="too late")

    server = await serve({"/metrics": text_handler(VLLM_TEXT), "/hang": hang})
    good, bad = str(server.make_url("/metrics")), str(server.make_url("/hang"))
    collector = EngineCollector(config(good, bad, interval_s=0.5, timeout_s=2.0), "host")
    batches, run_s = [], []
    try:
        deadline = time.monotonic() + 3.2
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            batches.append(await collector.collect(time.time()))
            run_s.append(time.monotonic() - t0)
            await asyncio.sleep(0.05)
        status = {s["url"]: s for s in collector.endpoint_status()}
    finally:
        release.set()
        await collector.close()
        await server.close()
    # the good endpoint gave records in every run while the hung one was in flight
    assert all(any(s.signal == "requests_running" for s in b.engine_samples) for b in batches)
    assert len(batches) >= 5 and max(run_s) < 0.45 + 0.3
    # one request until its 2 s deadline (no pile-up), then the error, then backoff
    assert hung and hung[0] - min(hung) == 0 and (len(hung) == 1 or hung[1] - hung[0] >= 2.0)
    assert status[bad]["last_error"] == "timed out after 2 s" and status[bad]["scrapes_failed"] >= 1
    assert sum(e.startswith(bad) for b in batches for e in b.errors) == status[bad]["scrapes_failed"]
    assert status[good]["ok"] and status[good]["last_latency_s"] < 0.5


async def test_redirect_to_metrics_slash_is_followed():
    async def redirect(request):
        raise web.HTTPTemporaryRedirect("/metrics/")

    server = await serve({"/metrics": redirect, "/metrics/": text_handler(VLLM_TEXT)})
    collector = EngineCollector(config(str(server.make_url("/metrics"))), "host")
    try:
        batch = await collector.collect(0.0)
    finally:
        await collector.close()
        await server.close()
    assert not batch.errors and {s.engine for s in batch.engine_samples} == {"vllm"}


async def test_oversized_scrape_is_refused():
    async def huge(request):
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        line = b'vllm:num_requests_running{model_name="m"} 1\n' * 1000
        for _ in range(400):   # about 43 MB, more than the 16 MiB allowed
            await response.write(line)
        return response

    server = await serve({"/metrics": huge})
    collector = EngineCollector(config(str(server.make_url("/metrics")), interval_s=10.0, timeout_s=5.0), "host")
    try:
        batch = await collector.collect(0.0)
        [status] = collector.endpoint_status()
    finally:
        await collector.close()
        await server.close()
    assert status["last_error"] == "response larger than 16 MiB" and not batch.raw_series


async def test_no_endpoints_is_no_data_not_an_error():
    collector = EngineCollector(config(), "host")
    batch = await collector.collect(0.0)
    await collector.close()
    assert batch.no_data and not batch.errors and collector.endpoint_status() == []


def test_urls_are_normalized_and_cli_endpoints_kept_apart():
    assert normalize_url("127.0.0.1:8000") == "http://127.0.0.1:8000/metrics"
    assert normalize_url(" http://h:1/ ") == "http://h:1/metrics"
    assert normalize_url("https://h/custom/path?x=1") == "https://h/custom/path?x=1"
    collector = EngineCollector(config("h:1"), "host", extra_endpoints=["h:2", "http://h:1/metrics"])
    assert {(s["url"], s["origin"]) for s in collector.endpoint_status()} == {
        ("http://h:1/metrics", "config"), ("http://h:2/metrics", "cli")}


# -- the cardinality guard -------------------------------------------------------------

async def test_series_cap_counts_and_logs_once(caplog):
    state = {"prefix": "a"}

    async def many(request):
        lines = [f'vllm:num_requests_running{{model_name="m"}} 1']
        lines += [f'churn{{id="{state["prefix"]}{i}"}} {i}' for i in range(60)]
        return web.Response(text="\n".join(lines), content_type=PROM)

    server = await serve({"/metrics": many})
    collector = EngineCollector(config(str(server.make_url("/metrics")), max_series_per_endpoint=10), "host")
    caplog.set_level(logging.WARNING, logger="infersight.engines")
    try:
        first = await collector.collect(0.0)
        second = await collector.collect(1.0)
        state["prefix"] = "b"           # every label value changes: old places free up
        third = await collector.collect(2.0)
        [status] = collector.endpoint_status()
    finally:
        await collector.close()
        await server.close()
    assert len(first.raw_series) == len(second.raw_series) == len(third.raw_series) == 10
    assert {(r.name, r.labels) for r in first.raw_series} == {(r.name, r.labels) for r in second.raw_series}
    assert all(r.labels[0][1].startswith("b") for r in third.raw_series if r.name == "churn")
    assert status["series_dropped"] == 51 and status["series_dropped_total"] == 51 * 3
    assert sum("engine_series_capped" in r.getMessage() for r in caplog.records) == 1
    # signals do not depend on the cap
    assert [s.signal for s in third.engine_samples] == ["requests_running", "scrape_latency_seconds"]


# -- autodiscovery ---------------------------------------------------------------------

async def test_discovery_probes_each_port_once_and_forgets_gone_processes():
    engine_hits: list[str] = []
    other_hits: list[str] = []
    engine = await serve({"/metrics": text_handler(VLLM_TEXT, hits=engine_hits)})
    other = await serve({"/metrics": text_handler("process_cpu_seconds_total 1.5\n", hits=other_hits)})
    url = f"http://127.0.0.1:{engine.port}/metrics"
    collector = EngineCollector(config(autodiscover=True), "host")
    try:
        found = await collector.discover([os.getpid()])
        again = await collector.discover([os.getpid()])
        listed = collector.endpoints()
        batch = await collector.collect(0.0)
        gone = await collector.discover([])
        after = collector.endpoints()
    finally:
        await collector.close()
        await engine.close()
        await other.close()
    assert found == [url] and again == [] and listed == [url]
    assert len(other_hits) == 1 and len(engine_hits) == 2       # one probe each, then one scrape
    assert {s.engine for s in batch.engine_samples} == {"vllm"}
    assert gone == [] and after == []


async def test_collect_discovers_endpoints_of_the_engine_processes_it_is_given():
    engine = await serve({"/metrics": text_handler(VLLM_TEXT)})
    url = f"http://127.0.0.1:{engine.port}/metrics"
    pids: list[int] = []
    collector = EngineCollector(config(autodiscover=True), "host", engine_pids=lambda: pids, discover_every_s=5)
    try:
        empty = await collector.collect(0.0)
        pids.append(os.getpid())
        soon = await collector.collect(1.0)          # within discover_every_s: not probed yet
        later = await collector.collect(6.0)
    finally:
        await collector.close()
        await engine.close()
    assert empty.no_data and soon.no_data
    assert collector.endpoints() == [url]
    assert {s.engine for s in later.engine_samples} == {"vllm"}


async def test_a_real_prometheus_client_server_keeps_its_metric_names():
    """prometheus_client escapes ':' to '_' when asked for OpenMetrics; vLLM serves through it."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    program = Path(__file__).parent / "programs" / "fake_engine.py"
    status = Path(f"/tmp/infersight-test-{port}.status")
    proc = subprocess.Popen([sys.executable, str(program), str(port), str(status), "5", "1"])
    collector = EngineCollector(config(f"http://127.0.0.1:{port}/metrics"), "host")
    try:
        for _ in range(100):
            if status.exists():
                break
            await asyncio.sleep(0.1)
        # a rate needs two good scrapes; on a loaded machine one may time out, so keep going (bounded)
        signals: dict[str, float] = {}
        for i in range(12):
            batch = await collector.collect(1.1 * i)
            signals.update({s.signal: s.value for s in batch.engine_samples})
            if "generation_tokens_per_s" in signals:
                break
            await asyncio.sleep(1.1)
    finally:
        await collector.close()
        proc.terminate()
        proc.wait(10)
        status.unlink(missing_ok=True)
    assert collector.endpoint_status()[0]["engine"] == "vllm"
    assert signals["requests_running"] == 8 and signals["requests_waiting"] == 4
    assert signals["generation_tokens_per_s"] > 0


# -- adversarial bodies through the whole collector ------------------------------------

LABEL_CHOICES = [(), (("model_name", "m"),), (("le", "0.5"), ("model_name", "m")), (("a", '"q\\'),)]
good_lines = st.tuples(
    st.sampled_from(["vllm:num_requests_running", "vllm:generation_tokens_total", "sglang:token_usage", "x_total"]),
    st.sampled_from(LABEL_CHOICES),
    st.integers(0, 1000),
)
bad_lines = st.text(min_size=1, max_size=40).map(lambda s: "9" + s.replace("\n", " "))


def render(name, labels, value) -> str:
    if not labels:
        return f"{name} {value}"
    inner = ",".join(f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"' for k, v in labels)
    return f"{name}{{{inner}}} {value}"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(good_lines, bad_lines), max_size=30), st.binary(max_size=40))
def test_no_exception_escapes_the_collector(lines, noise):
    # The noise (any bytes, invalid UTF-8 included) ends one more bad line.
    text = "\n".join(render(*line) if isinstance(line, tuple) else line for line in lines)
    body = text.encode() + b"\n9" + noise.replace(b"\n", b" ")
    wanted = {(name, labels) for name, labels, _ in (line for line in lines if isinstance(line, tuple))}
    n_bad = sum(1 for line in lines if not isinstance(line, tuple)) + 1

    async def scenario():
        server = await serve({"/metrics": text_handler(body)})
        collector = EngineCollector(config(str(server.make_url("/metrics"))), "host")
        try:
            batches = [await collector.collect(float(i)) for i in range(2)]
            [status] = collector.endpoint_status()
        finally:
            await collector.close()
            await server.close()
        return batches, status

    batches, status = asyncio.run(scenario())
    for batch in batches:
        assert {(r.name, r.labels) for r in batch.raw_series} == wanted
    if wanted:
        assert status["bad_lines"] == n_bad and status["scrapes_ok"] == 2 and status["ok"]
    else:   # nothing readable at all: the endpoint is reported, not half-read
        assert status["last_error"] == f"not Prometheus text (no readable sample in {n_bad} lines)"
        assert all(e.endswith(status["last_error"]) for e in batches[0].errors)
