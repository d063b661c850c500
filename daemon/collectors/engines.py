"""The engine metrics collector: scrapes engines' Prometheus ``/metrics`` endpoints.

Endpoints come from the config (``collectors.engines.endpoints``), the command line
(``--scrape URL``, passed as ``extra_endpoints``) and autodiscovery (:meth:`discover`: the
listening TCP ports of engine processes, each probed once). Every run starts a scrape of each
endpoint that is due, concurrently through one shared aiohttp session, and waits for them at
most ``RUN_WAIT_SHARE`` of the interval, so a run never outlasts its interval. A scrape still
running then is not lost: it keeps its own deadline (``timeout_s``, longer than the interval
by default) and its records go out with the first run after it answered. An endpoint is
never scraped twice at once: while its scrape is in flight it is not due, so scrapes of a
slow endpoint neither overlap nor pile up, and a slow or hung endpoint never delays the
others. An endpoint that fails is retried after 1, 2, 4, ... runs (at most ``MAX_BACKOFF_S``
apart). Parsing and normalization (engines/ingest.py) run in a worker thread.

Time of a sample: when the answer began (its headers arrived), not when the request was sent.
An engine reads its counters when its handler runs, just before it answers; under load its
API server's event loop gets to the request seconds after it was sent (vLLM 0.24 took longer
than 0.8 s on an H200), and stamping the request's start would put the values seconds early.
The time to that first byte is kept per endpoint as the engine signal
``scrape_latency_seconds``: it measures the API server's event-loop lag.

A broken endpoint never breaks the run: its problem goes to ``Batch.errors`` and to
:meth:`endpoint_status` in plain words ("timed out after 0.8 s", "HTTP 500", "not Prometheus
text (got text/html)", "connection refused").
"""
from __future__ import annotations

import asyncio
import errno
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import aiohttp

from infersight.daemon.config.load import EnginesCollectorConfig
from infersight.daemon.engines.discovery import listening_endpoints, normalize_url
from infersight.daemon.engines.ingest import EndpointIngest, Ingested
from infersight.storage.model import Batch, EngineSample

log = logging.getLogger("infersight.engines")

MAX_BODY_BYTES = 16 * 2**20       # a scrape larger than this is refused (bytes)
MAX_BACKOFF_S = 30.0              # longest wait between two attempts on a down endpoint
RUN_WAIT_SHARE = 0.9              # a run waits for its scrapes at most this share of the interval
MAX_PROBE_TIMEOUT_S = 2.0         # discovery probes: a port that does not answer soon is no engine
LATENCY_SIGNAL = "scrape_latency_seconds"
# Prefer the classic text format (what the fixtures are); OpenMetrics is read as well.
# Never ask for OpenMetrics: prometheus_client (what vLLM and SGLang serve with) answers with it
# whenever the Accept header names it, whatever its q, and then escapes "vllm:x" to "vllm_x".
ACCEPT = "text/plain;version=0.0.4;q=1.0,*/*;q=0.1"
TEXT_TYPES = frozenset({"text/plain", "application/openmetrics-text", "application/octet-stream", ""})


@dataclass
class _Endpoint:
    url: str
    origin: str                                   # config, cli, discovered
    ingest: EndpointIngest
    pids: set[int] = field(default_factory=set)   # discovered from these processes
    engines: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    last_success: float | None = None
    last_attempt: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    consecutive_failures: int = 0
    skip_runs: int = 0
    samples: int = 0
    series: int = 0
    bad_lines: int = 0
    bad_lines_total: int = 0
    bad_line_examples: list[str] = field(default_factory=list)
    scrapes_ok: int = 0
    scrapes_failed: int = 0
    scrapes_late: int = 0                         # answered after the run that started them ended
    last_latency_s: float | None = None           # time to the first byte of the last answer
    counters_off: list[str] = field(default_factory=list)   # opt-in signals exported but not counting
    task: asyncio.Task | None = None              # the scrape in flight
    task_run: int = 0                             # the run that started it


class ScrapeError(Exception):
    """A scrape that gave nothing usable; the message is fit to show as is."""


class EngineCollector:
    """Scrapes engine endpoints; see the module docstring. ``clock`` gives Unix seconds."""

    name = "engines"

    def __init__(self, config: EnginesCollectorConfig, host: str, extra_endpoints: Iterable[str] = (),
                 *, clock: Callable[[], float] = time.time,
                 engine_pids: Callable[[], Iterable[int]] | None = None, discover_every_s: float = 5.0) -> None:
        """``engine_pids`` (the discovered engine processes, called every ``discover_every_s``)
        lets the collector find /metrics endpoints on their listening ports by itself."""
        self.config = config
        self._engine_pids = engine_pids
        self._discover_every_s = discover_every_s
        self._discovered_at: float | None = None
        self.host = host
        self.interval_s = config.interval_s
        # A scrape may outlive its run (see the module docstring); a run never outlives its interval.
        self.timeout_s = config.timeout_s
        self.run_wait_s = RUN_WAIT_SHARE * config.interval_s
        self.probe_timeout_s = min(config.timeout_s, MAX_PROBE_TIMEOUT_S)
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._endpoints: dict[str, _Endpoint] = {}
        self._probed: dict[tuple[int, float, int], str | None] = {}
        self._runs = 0
        for url in config.endpoints:
            self.add_endpoint(url, origin="config")
        for url in extra_endpoints:
            self.add_endpoint(url, origin="cli")

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"Accept": ACCEPT})

    async def close(self) -> None:
        tasks = [ep.task for ep in self._endpoints.values() if ep.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for ep in self._endpoints.values():
            ep.task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- endpoints -----------------------------------------------------------------------
    def add_endpoint(self, url: str, origin: str = "config", pid: int | None = None) -> bool:
        """Scrape ``url`` from now on; False when it was already scraped (the pid is noted)."""
        url = normalize_url(url)
        ep = self._endpoints.get(url)
        if ep is None:
            ep = self._endpoints[url] = _Endpoint(url, origin, EndpointIngest(
                url, self.config.quantile_window_s, self.config.max_series_per_endpoint))
            added = True
        else:
            added = False
        if pid is not None:
            ep.pids.add(pid)
        return added

    def endpoints(self) -> list[str]:
        return list(self._endpoints)

    async def discover(self, pids: Iterable[int]) -> list[str]:
        """Probe ``/metrics`` on the listening TCP ports of ``pids`` (the full current set of
        engine processes) and scrape those that answer with engine metrics. Each (process,
        port) is probed once; answers and non-answers are remembered while the process lives.
        Discovered endpoints whose processes are all gone are dropped. Returns the new URLs.
        """
        if not self.config.autodiscover:
            return []
        current = set(pids)
        for url, ep in list(self._endpoints.items()):
            if ep.origin == "discovered" and not (ep.pids & current):
                log.info("event=engine_endpoint_gone url=%s", url)
                if ep.task is not None:
                    ep.task.cancel()
                del self._endpoints[url]
        found = await asyncio.to_thread(listening_endpoints, current)
        alive = {(pid, ctime) for pid, ctime, _, _ in found}
        self._probed = {k: v for k, v in self._probed.items() if (k[0], k[1]) in alive}
        todo = [(pid, ctime, port, url) for pid, ctime, port, url in found if (pid, ctime, port) not in self._probed]
        if not todo:
            return []
        await self.start()
        answers = await asyncio.gather(*(self._probe(url) for *_, url in todo))
        added = []
        for (pid, ctime, port, url), engines in zip(todo, answers):
            self._probed[(pid, ctime, port)] = url if engines else None
            if engines:
                if self.add_endpoint(url, origin="discovered", pid=pid):
                    added.append(url)
                    log.info("event=engine_endpoint_found url=%s pid=%d engines=%s", url, pid, ",".join(engines))
        return added

    async def _probe(self, url: str) -> list[str]:
        """The engines an endpoint exposes, or [] when it does not answer with engine metrics."""
        try:
            _, _, text = await self._fetch(url, self.probe_timeout_s)
        except ScrapeError:
            return []
        ingest = EndpointIngest(url, self.config.quantile_window_s, self.config.max_series_per_endpoint)
        try:
            return (await asyncio.to_thread(ingest.ingest, self._clock(), text)).engines
        except Exception:  # a parser bug must not stop discovery; the endpoint is just skipped
            log.exception("event=engine_probe_failed url=%s", url)
            return []

    # -- collection ----------------------------------------------------------------------
    async def collect(self, now: float) -> Batch:
        batch = Batch(collector=self.name, t=now)
        if self._engine_pids is not None and self.config.autodiscover and (
                self._discovered_at is None or now - self._discovered_at >= self._discover_every_s):
            self._discovered_at = now
            await self.discover(list(self._engine_pids()))
        if not self._endpoints:
            batch.no_data = "no engine endpoints configured or discovered"
            return batch
        await self.start()
        endpoints = list(self._endpoints.values())
        self._runs += 1
        self._harvest(endpoints, batch)                   # scrapes that answered after their run
        for ep in endpoints:
            if ep.task is not None:
                continue                                  # still in flight: not due
            if ep.skip_runs > 0:
                ep.skip_runs -= 1
            else:
                ep.task = asyncio.create_task(self._scrape(ep), name=f"scrape {ep.url}")
                ep.task_run = self._runs
        flying = [ep.task for ep in endpoints if ep.task is not None]
        if flying:
            await asyncio.wait(flying, timeout=self.run_wait_s)
        self._harvest(endpoints, batch)
        return batch

    def _harvest(self, endpoints: list[_Endpoint], batch: Batch) -> None:
        """Move the records of finished scrapes into ``batch``."""
        for ep in endpoints:
            if ep.task is None or not ep.task.done():
                continue
            task, ep.task = ep.task, None
            if task.cancelled():
                continue
            result, error = task.result()      # _scrape never raises
            if ep.task_run != self._runs and result is not None:
                ep.scrapes_late += 1
            if error is not None:
                batch.errors.append(f"{ep.url}: {error}")
            if result is not None:
                batch.engine_samples.extend(result.engine_samples)
                batch.histogram_deltas.extend(result.histogram_deltas)
                batch.raw_series.extend(result.raw_series)

    async def _scrape(self, ep: _Endpoint) -> tuple[Ingested | None, str | None]:
        """One endpoint's scrape; returns (records, error words), never raises."""
        ep.last_attempt = self._clock()
        try:
            t, latency, text = await self._fetch(ep.url, self.timeout_s)
            result = await asyncio.to_thread(ep.ingest.ingest, t, text)
            if not result.readable:
                raise ScrapeError(f"not Prometheus text (no readable sample in {result.bad_lines} lines)")
        except ScrapeError as exc:
            return None, self._failed(ep, str(exc))
        except Exception as exc:  # a bug in reading one endpoint must not cost the others
            log.exception("event=engine_ingest_failed url=%s", ep.url)
            return None, self._failed(ep, f"internal error reading the scrape: {type(exc).__name__}: {exc}")
        error = None
        if result.bad_lines and not ep.bad_lines:
            error = f"{result.bad_lines} unreadable lines (first: {result.bad_line_examples[0]})"
            log.warning("event=engine_bad_lines url=%s count=%d first=%r", ep.url, result.bad_lines,
                        result.bad_line_examples[0])
        if ep.consecutive_failures:
            log.info("event=engine_endpoint_back url=%s after_failures=%d", ep.url, ep.consecutive_failures)
        ep.last_success = t
        ep.last_latency_s = latency
        result.engine_samples.append(EngineSample(t, ep.url, result.engines[0] if result.engines else "", "",
                                                  LATENCY_SIGNAL, latency))
        ep.consecutive_failures = 0
        ep.scrapes_ok += 1
        ep.engines, ep.models = result.engines, result.models
        if result.off and not ep.counters_off:
            log.info("event=engine_counters_off url=%s signals=%s hint=%r", ep.url, ",".join(result.off),
                     "vLLM and SGLang count FLOPs and bytes (MFU, MBU) only when started with --enable-mfu-metrics")
        ep.counters_off = list(result.off)
        ep.samples, ep.series = result.samples, len(result.raw_series)
        ep.bad_lines = result.bad_lines
        ep.bad_lines_total += result.bad_lines
        if result.bad_lines:
            ep.bad_line_examples = result.bad_line_examples
        return result, error

    def _failed(self, ep: _Endpoint, error: str) -> str:
        ep.consecutive_failures += 1
        ep.scrapes_failed += 1
        ep.last_error, ep.last_error_at = error, self._clock()
        max_skip = max(0, int(MAX_BACKOFF_S / self.interval_s) - 1)
        ep.skip_runs = min(2 ** (ep.consecutive_failures - 1) - 1, max_skip)
        if ep.consecutive_failures == 1:
            log.warning("event=engine_endpoint_down url=%s error=%r", ep.url, error)
        return error

    async def _fetch(self, url: str, timeout_s: float) -> tuple[float, float, str]:
        """GET ``url`` within ``timeout_s``; returns (Unix time the response began, seconds from
        the request to that moment, body text) or raises ScrapeError."""
        assert self._session is not None
        sent = time.monotonic()
        try:
            # Redirects are followed: FastAPI mounts (older vLLM) answer /metrics with 307 -> /metrics/.
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
                t = self._clock()
                latency = time.monotonic() - sent
                if resp.status != 200:
                    raise ScrapeError(f"HTTP {resp.status}" + (f" {resp.reason}" if resp.reason else ""))
                ctype = resp.content_type.lower()
                if ctype not in TEXT_TYPES:
                    raise ScrapeError(f"not Prometheus text (got {ctype})")
                body = bytearray()
                async for chunk in resp.content.iter_chunked(1 << 16):
                    body += chunk
                    if len(body) > MAX_BODY_BYTES:
                        raise ScrapeError(f"response larger than {MAX_BODY_BYTES >> 20} MiB")
                try:
                    return t, latency, body.decode(resp.charset or "utf-8", errors="replace")
                except LookupError:  # a charset Python does not know: read it as UTF-8
                    return t, latency, body.decode("utf-8", errors="replace")
        except ScrapeError:
            raise
        except Exception as exc:
            raise ScrapeError(describe_error(exc, timeout_s)) from None

    # -- status --------------------------------------------------------------------------
    def endpoint_status(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per endpoint (for /api/engines, /api/health and ``check``).

        Times are Unix seconds or None; ``engine`` is the first engine recognised (None before
        a successful scrape); ``series_dropped`` counts raw series refused by the cardinality
        guard at the last scrape, ``series_dropped_total`` since start; ``bad_lines`` is the last
        scrape's count of unreadable lines; ``last_latency_s`` the seconds from the request to
        the first byte of the last answer; ``scrapes_late`` the answers that came after the run
        that asked for them had ended (kept, not lost); ``in_flight`` whether a scrape is running;
        ``counters_off`` the opt-in signals the engine exports without counting them (vLLM's
        FLOP and byte estimates without ``--enable-mfu-metrics``).
        """
        out = []
        for ep in self._endpoints.values():
            guard = ep.ingest.guard
            out.append({
                "url": ep.url,
                "origin": ep.origin,
                "pids": sorted(ep.pids),
                "ok": ep.last_success is not None and ep.consecutive_failures == 0,
                "engine": ep.engines[0] if ep.engines else None,
                "engines": list(ep.engines),
                "models": list(ep.models),
                "last_success": ep.last_success,
                "last_attempt": ep.last_attempt,
                "last_error": ep.last_error,
                "last_error_at": ep.last_error_at,
                "consecutive_failures": ep.consecutive_failures,
                "retry_in_runs": ep.skip_runs,
                "samples": ep.samples,
                "series": ep.series,
                "series_dropped": guard.dropped_last,
                "series_dropped_total": guard.dropped_total,
                "max_series": guard.max_series,
                "bad_lines": ep.bad_lines,
                "bad_lines_total": ep.bad_lines_total,
                "bad_line_examples": list(ep.bad_line_examples),
                "scrapes_ok": ep.scrapes_ok,
                "scrapes_failed": ep.scrapes_failed,
                "scrapes_late": ep.scrapes_late,
                "last_latency_s": None if ep.last_latency_s is None else round(ep.last_latency_s, 6),
                "in_flight": ep.task is not None,
                "counters_off": list(ep.counters_off),
            })
        return out


def describe_error(exc: BaseException, timeout_s: float) -> str:
    """A failed request in plain words."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return f"timed out after {timeout_s:g} s"
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        if isinstance(os_error, ConnectionRefusedError) or getattr(os_error, "errno", None) == errno.ECONNREFUSED:
            return "connection refused"
        if isinstance(exc, getattr(aiohttp, "ClientConnectorDNSError", ())):
            return f"host name not found ({exc.host})"
        return f"cannot connect: {os_error.strerror or os_error}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "connection closed by the endpoint before a full response"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "response cut short or badly encoded"
    if isinstance(exc, aiohttp.InvalidURL):
        return f"invalid URL: {exc}"
    if isinstance(exc, OSError):
        return f"cannot connect: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"
