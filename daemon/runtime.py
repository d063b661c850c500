"""The daemon: one asyncio process running collectors, storage, analysis and the web server.

Start-up order: open the store (migrations), build collectors, start their lifecycles,
schedule each at its interval on an APScheduler AsyncIOScheduler, start the HTTP server,
then tell systemd READY=1. SIGTERM/SIGINT stop the scheduler, close collectors, flush and
close the store, and return within a few seconds.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from infersight.daemon.collectors import build_collectors
from infersight.daemon.collectors.base import Collector
from infersight.daemon.config.listen import split_listen
from infersight.daemon.config.load import Config, store_options
from infersight.daemon.heap import MMAP_THRESHOLD_BYTES, fix_mmap_threshold
from infersight.daemon.logfmt import kv
from infersight.daemon.runner import Runner
from infersight.daemon.sdnotify import Notifier
from infersight.storage import retention
from infersight.storage.events import upsert_events
from infersight.storage.model import Batch
from infersight.storage.store import Store

log = logging.getLogger("infersight.runtime")

SHUTDOWN_BUDGET_S = 4.0  # stop within systemd's and the 5 s
RUNS_IN_FLIGHT_S = 1.0   # part of that budget given to collector runs already started


@dataclass
class Agent:
    """Everything the web layer may ask about the running daemon."""

    config: Config
    store: Store
    runner: Runner
    started_at: float = field(default_factory=time.time)
    extras: dict[str, Any] = field(default_factory=dict)   # named components: "analysis", "alerts", ...

    def collector(self, name: str) -> Any:
        return self.runner.collectors.get(name)


class Daemon:
    """Builds and runs the agent. ``extra_collectors`` are added to the configured ones."""

    def __init__(self, config: Config, *, extra_collectors: list[Collector] | None = None,
                 notifier: Notifier | None = None, components: list[Callable[["Daemon"], Any]] | None = None):
        self.config = config
        self.notifier = notifier or Notifier()
        self._extra_collectors = extra_collectors or []
        self._component_factories = components or []
        self._stop = asyncio.Event()
        self.agent: Agent | None = None
        self.site_url: str | None = None
        self.ready = asyncio.Event()
        self._event_tasks: set[asyncio.Task] = set()
        self._stopping = False
        self._inflight: set[asyncio.Task] = set()
        self._running: set[str] = set()          # collectors with a run in progress
        self._maintenance_errors: set[str] = set()   # error kinds logged since maintenance last succeeded

    def request_stop(self) -> None:
        self._stop.set()

    def _sink(self, batch: Batch) -> bool:
        """Store a collector batch. Its findings (XID, lost GPU) take the never-dropped write
        path and go to the alerts; the samples may be dropped under pressure."""
        if batch.events:
            events, batch.events = batch.events, []
            task = asyncio.get_running_loop().create_task(self._store_events(events))
            self._event_tasks.add(task)
            task.add_done_callback(self._event_tasks.discard)
        return self.agent.store.submit(batch) if batch.row_count() else True

    async def _store_events(self, events: list) -> None:
        try:
            await self.agent.store.write(upsert_events, events)
        except Exception as exc:
            log.error("event=events_write_failed count=%d error=%s", len(events), kv(exc))
            return
        alerts = self.agent.extras.get("alerts")
        if alerts is not None:
            await alerts.submit(events)

    async def run(self) -> int:
        """Run until a stop signal; returns the process exit code."""
        cfg = self.config
        if fix_mmap_threshold():
            log.debug("event=heap mmap_threshold_bytes=%d", MMAP_THRESHOLD_BYTES)
        store = Store.open(cfg.storage.path, host=cfg.host, **store_options(cfg.storage))
        collectors = build_collectors(cfg) + self._extra_collectors
        runner = Runner(collectors, self._sink)
        self.agent = agent = Agent(cfg, store, runner)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.request_stop)
            except (NotImplementedError, RuntimeError):
                pass  # not the main thread (tests run the daemon in a thread)
        started = []
        scheduler = AsyncIOScheduler(event_loop=loop)
        runner_site = None
        try:
            for c in collectors:
                if hasattr(c, "start"):
                    try:
                        await c.start()
                        started.append(c)
                    except Exception as exc:
                        runner.status[c.name].ok = False
                        runner.status[c.name].last_error = f"start failed: {type(exc).__name__}: {exc}"
                        log.error("event=collector_start_failed collector=%s error=%s", c.name, kv(exc))
                        continue
                else:
                    started.append(c)
            for c in started:
                # two instances allowed so a run that is still going at its next slot is seen by
                # _paced (counted as an overrun, never run twice at once) instead of the scheduler
                # logging a warning per slot on a host whose cores are all busy
                scheduler.add_job(self._paced, "interval", args=[runner, c.name], seconds=c.interval_s,
                                  id=f"collector:{c.name}", max_instances=2, coalesce=True,
                                  misfire_grace_time=max(1, int(c.interval_s * 2)),
                                  next_run_time=_now_dt())
            for factory in default_components(cfg) + self._component_factories:
                component = factory(self)
                if component is not None:
                    agent.extras[component.name] = component
                    if hasattr(component, "start"):
                        await component.start()
                    if getattr(component, "interval_s", None) and not getattr(component, "self_paced", False):
                        scheduler.add_job(self._guarded, "interval", args=[component.tick], seconds=component.interval_s,
                                          id=f"component:{component.name}", max_instances=1, coalesce=True)
            policy = retention.RetentionPolicy(
                retention_s=cfg.storage.retention_hours * 3600, max_bytes=cfg.storage.max_size_mb * 2**20,
                rollup_after_s=cfg.storage.rollup_after_hours * 3600, rollup_bucket_s=cfg.storage.rollup_bucket_s)
            scheduler.add_job(self._guarded, "interval", args=[self._maintenance, store, policy],
                              seconds=cfg.storage.maintenance_interval_s, id="maintenance", max_instances=1,
                              coalesce=True)
            scheduler.start()
            runner_site = await self._start_web(agent)
            warn_short_lag(cfg)
            self.notifier.ready()
            if self.notifier.watchdog_interval_s:  # after READY=1, as systemd expects
                scheduler.add_job(self._guarded, "interval", args=[self._watchdog, store],
                                  seconds=self.notifier.watchdog_interval_s, id="watchdog")
            log.info("event=started listen=%s db=%s collectors=%s", self.site_url, kv(cfg.storage.path),
                     ",".join(c.name for c in started))
            self.ready.set()
            await self._stop.wait()
        finally:
            await self._shutdown(scheduler, started, runner_site, store)
        return 0

    async def _start_web(self, agent: Agent) -> web.AppRunner:
        from infersight.web.app import create_app

        host, port = split_listen(self.config.web.listen)
        app = create_app(self.config, agent.store, agent=agent)
        app_runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await app_runner.setup()
        site = web.TCPSite(app_runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:  # a name that does not resolve, an address not on this host, a port in use
            await app_runner.cleanup()
            raise OSError(exc.errno, f"web.listen {self.config.web.listen}: {exc.strerror or exc}") from None
        bound = app_runner.addresses[0] if app_runner.addresses else (host, port)
        shown_host = f"[{bound[0]}]" if ":" in str(bound[0]) else bound[0]
        self.site_url = f"http://{shown_host}:{bound[1]}"
        return app_runner

    async def _shutdown(self, scheduler, collectors, app_runner, store: Store) -> None:
        self.notifier.stopping()
        self._stopping = True
        deadline = time.monotonic() + SHUTDOWN_BUDGET_S
        if scheduler.running:
            scheduler.pause()
            # let runs in flight finish (their batches get flushed); cancel what is left
            if self._inflight:
                await asyncio.wait(set(self._inflight), timeout=RUNS_IN_FLIGHT_S)
            scheduler.shutdown(wait=False)
        if app_runner is not None:
            await _bounded(app_runner.cleanup(), deadline)
        for c in collectors:
            if hasattr(c, "close"):
                try:
                    await _bounded(c.close(), deadline)
                except Exception as exc:
                    log.warning("event=collector_close_failed collector=%s error=%s", c.name, kv(exc))
        for component in (self.agent.extras.values() if self.agent else []):
            if hasattr(component, "close"):
                try:
                    await _bounded(component.close(), deadline)
                except Exception as exc:
                    log.warning("event=component_close_failed component=%s error=%s", component.name, kv(exc))
        if self._event_tasks:  # findings handed over by collectors are written before closing
            await asyncio.wait(set(self._event_tasks), timeout=max(0.1, deadline - time.monotonic()))
        await asyncio.to_thread(store.close)
        log.info("event=stopped")

    async def _guarded(self, fn, *args) -> None:
        """Every scheduled job runs through here. A run cancelled by the shutdown ends quietly:
        APScheduler would log the CancelledError as a job failure with a multi-line traceback."""
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            await fn(*args)
        except asyncio.CancelledError:
            if not self._stopping:
                raise
        finally:
            self._inflight.discard(task)

    async def _paced(self, runner: Runner, name: str) -> None:
        """One collector run, unless the previous one is still going: then count an overrun."""
        if name in self._running:
            runner.status[name].overruns += 1
            return
        self._running.add(name)
        try:
            await self._guarded(runner.run_once, name)
        finally:
            self._running.discard(name)

    async def _maintenance(self, store: Store, policy: retention.RetentionPolicy) -> None:
        try:
            report = await store.write(retention.run_maintenance, policy, time.time())
            if any(report.values()):
                log.info("event=maintenance %s", " ".join(f"{k}={v}" for k, v in report.items()))
        except Exception as exc:
            # once per kind of error until a run succeeds: a full disk fails every run
            kind = type(exc).__name__
            if kind not in self._maintenance_errors:
                self._maintenance_errors.add(kind)
                log.error("event=maintenance_failed error=%s note=\"further failures of this kind are not logged "
                          "until maintenance succeeds\"", kv(exc))
            return
        if self._maintenance_errors:
            self._maintenance_errors.clear()
            log.info("event=maintenance_recovered")

    async def _watchdog(self, store: Store) -> None:
        # only pet the watchdog while the writer thread lives: a dead writer should restart us
        if store.writer_alive:
            self.notifier.watchdog()


def warn_short_lag(config: Config) -> bool:
    """Log when the analysis would run ahead of the stacks it needs (they arrive late)."""
    stacks = config.collectors.stacks
    late = stacks.recording_s + stacks.handover_s + config.storage.flush_interval_s
    if config.analysis.enabled and stacks.enabled and config.analysis.lag_s <= late:
        log.warning("event=analysis_lag_short lag_s=%g stacks_late_s=%g note=\"gaps are analysed before their stacks "
                    "arrive; raise analysis.lag_s above collectors.stacks.recording_s + handover_s + "
                    "storage.flush_interval_s\"", config.analysis.lag_s, late)
        return True
    return False


def default_components(config: Config) -> list[Callable[["Daemon"], Any]]:
    """Components every daemon runs: analysis (when enabled), alerts (when webhooks are
    configured). Each factory gets the daemon
    and returns an object with ``name`` and optionally ``interval_s``+``tick``, ``start``,
    ``close`` and ``health``; its health shows under its name in /api/health."""
    factories: list[Callable[[Daemon], Any]] = []
    if config.analysis.enabled:
        def analysis(daemon: "Daemon"):
            from infersight.daemon.analysis.analyzer import Analyzer
            from infersight.daemon.collectors import engine_gpu_map

            # each GPU's seconds read its own engines' signals (endpoint -> process -> GPUs)
            return Analyzer(daemon.config, daemon.agent.store,
                            endpoint_gpus=engine_gpu_map(daemon.agent.runner.collectors.values()))

        factories.append(analysis)
    if config.pyroscope.enabled:
        def pyroscope(daemon: "Daemon"):
            from infersight.daemon.exporters.pyroscope import PyroscopePusher

            return PyroscopePusher(daemon.config, daemon.agent.store)

        factories.append(pyroscope)
    if config.export.enabled:
        def export(daemon: "Daemon"):
            from infersight.daemon.exporters.parquet import Exporter

            return Exporter(daemon.config, daemon.agent.store)

        factories.append(export)
    if config.alerts.webhooks:
        def alerts(daemon: "Daemon"):
            # created after the analysis component, so it can follow the analyzer's findings
            from infersight.daemon.alerts import AlertsComponent

            return AlertsComponent.for_daemon(daemon)

        factories.append(alerts)
    return factories


async def _bounded(coro, deadline: float) -> None:
    try:
        await asyncio.wait_for(coro, timeout=max(0.1, deadline - time.monotonic()))
    except asyncio.TimeoutError:
        log.warning("event=shutdown_step_timeout")


def _now_dt():
    from datetime import datetime, timezone
    return datetime.now(timezone.utc)


