"""The stacks collector: discovery, one rolling py-spy runner per target, per-second stacks.

Background tasks (started by :meth:`StacksCollector.start`, or by the first ``collect``):

- discovery every ``targets.discovery_interval_s``: new targets get a runner, exited ones
  are closed out (their last recording is harvested, their remaining buckets flushed and an
  ``exited_at`` Target is reported);
- per-thread CPU readings of every sampled target a few ms after each whole second
  (:mod:`..thread_cpu`), which split samples into active and idle.

``collect`` harvests the recordings that ended, parses them in a thread and returns the
complete seconds as StackSample and SamplingStat rows, plus Target records when a target
appeared, changed (role, GPUs, command line) or exited. Recordings end every
``recording_s``, so a second's stacks arrive up to ``recording_s + handover_s`` late.
Per-target problems (py-spy cannot attach, target not Python, ...) go to ``Batch.errors``
and :meth:`status`; they never stop the other targets.
"""
from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import orjson

from infersight.daemon.config.load import StacksCollectorConfig, TargetsConfig
from infersight.daemon.stacks.buckets import BucketAccumulator, finalize
from infersight.daemon.stacks.discovery import Discovery, Found, NvmlProcesses
from infersight.daemon.stacks.parse import parse_chrometrace
from infersight.daemon.stacks.pyspy import PyspyRunner, Recording, find_pyspy
from infersight.daemon.stacks.roles import NOT_SERVING
from infersight.daemon.stacks.thread_cpu import ThreadCpuHistory, read_thread_cpu
from infersight.storage.model import Batch, Target

_CPU_READ_OFFSET_S = 0.02       # read just after the second turns, so a reading pair spans one bucket


@dataclass(slots=True)
class _TargetState:
    found: Found
    runner: PyspyRunner | None = None
    acc: BucketAccumulator = field(default_factory=BucketAccumulator)
    cpu: ThreadCpuHistory = field(default_factory=ThreadCpuHistory)
    exited_at: float | None = None
    recordings: int = 0
    failed: int = 0
    samples: int = 0
    errors: int = 0
    covered_s: float = 0.0
    first_used: float | None = None
    last_used: float | None = None
    last_window: dict[str, Any] | None = None


class StacksCollector:
    """Continuous py-spy sampling of every discovered target (see the module docstring)."""

    name = "stacks"

    def __init__(self, config: StacksCollectorConfig, targets_config: TargetsConfig, host: str,
                 nvml_pids: Callable[[], Mapping[int, Iterable[int]]] | None = None,
                 extra_pids: Iterable[int] = ()) -> None:
        self.config = config
        self.targets_config = targets_config
        self.host = host
        self.interval_s = 1.0
        nvml = nvml_pids if nvml_pids is not None else NvmlProcesses()
        self.discovery = Discovery(targets_config, host, nvml=nvml, extra_pids=extra_pids)
        self.pyspy = find_pyspy(config.pyspy_path)
        self._states: dict[tuple, _TargetState] = {}
        self._report_targets: list[Target] = []
        self._errors: list[str] = []
        self._tasks: list[asyncio.Task] = []
        self._workdir: Path | None = None
        self._lock = asyncio.Lock()
        self._started = False
        self._first_scan = asyncio.Event()

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._workdir = Path(tempfile.mkdtemp(prefix="infersight-pyspy-"))
        if self.pyspy is None:
            where = self.config.pyspy_path or "next to the agent's Python or on PATH"
            self._errors.append(f"py-spy not found ({where}): install the py-spy wheel or set "
                                "collectors.stacks.pyspy_path; stacks are not sampled")
        self._tasks = [asyncio.create_task(self._discover_loop(), name="stacks-discovery"),
                       asyncio.create_task(self._cpu_loop(), name="stacks-thread-cpu")]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(s.runner.close() for s in self._states.values() if s.runner is not None),
                             return_exceptions=True)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)

    async def wait_first_scan(self) -> None:
        """Returns once discovery has run once (for callers that want targets at once)."""
        await self._first_scan.wait()

    # -- collect ----------------------------------------------------------------------------

    async def collect(self, now: float) -> Batch:
        await self.start()
        async with self._lock:
            work = []
            for key, state in list(self._states.items()):
                recs = state.runner.harvest() if state.runner is not None else []
                finished = state.exited_at is not None and (state.runner is None or state.runner.done)
                if recs or finished:
                    cpu = ThreadCpuHistory(keep_s=state.cpu.keep_s, times=list(state.cpu.times),
                                           readings=list(state.cpu.readings))
                    work.append((key, state, recs, cpu, finished))
            results = await asyncio.to_thread(self._process, work) if work else []
            batch = Batch(collector=self.name, t=now)
            for key, state, finished, samples, stats, errors in results:
                batch.stack_samples.extend(samples)
                batch.sampling_stats.extend(stats)
                batch.errors.extend(errors)
                if finished:
                    self._states.pop(key, None)
            batch.targets, self._report_targets = self._report_targets, []
            batch.errors[:0], self._errors = self._errors, []
            if not self._states and not batch.targets and not batch.stack_samples:
                batch.no_data = "no target processes (no NVML process, pattern match or configured PID)"
            return batch

    def _process(self, work: list) -> list:
        """Parse harvested recordings and release complete buckets (runs in a thread)."""
        out = []
        for key, state, recs, cpu, finished in work:
            errors: list[str] = []
            for rec in recs:
                errors.extend(self._take_recording(state, rec, cpu))
            buckets = state.acc.take_all() if finished else state.acc.take_complete()
            target = state.found.target
            samples, stats = finalize(buckets, state.acc, target.pid, target.start_time, share=cpu.share,
                                      include_idle=self.config.include_idle)
            state.samples += sum(s.samples for s in stats)
            state.errors += sum(s.errors for s in stats)
            out.append((key, state, finished, samples, stats, errors))
        return out

    def _take_recording(self, state: _TargetState, rec: Recording, cpu: ThreadCpuHistory) -> list[str]:
        target = state.found.target
        who = f"PID {target.pid} ({target.role})"
        if rec.failure is not None:
            state.failed += 1
            return [f"{who}: {rec.failure.message}"]
        try:
            events = orjson.loads(rec.path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            state.failed += 1
            return [f"{who}: py-spy output unreadable ({exc}); recording {rec.seq} lost"]
        finally:
            rec.path.unlink(missing_ok=True)
        timeline = parse_chrometrace(events if isinstance(events, list) else [])
        use = state.acc.add_recording(timeline, rec.origin_wall, samples=rec.samples, errors=rec.errors,
                                      rate_hz=rec.rate_hz, gone_at=cpu.gone_at)
        state.recordings += 1
        problems = [f"{who}: {timeline.bad} malformed py-spy events skipped"] if timeline.bad else []
        if use.used_from is not None and use.used_to is not None:
            state.covered_s += use.used_to - use.used_from
            state.first_used = use.used_from if state.first_used is None else state.first_used
            state.last_used = use.used_to
        state.last_window = {"from": use.used_from, "to": use.used_to, "rate_hz": rec.rate_hz,
                             "samples": rec.samples, "errors": rec.errors, "threads": len(timeline.tracks)}
        return problems

    # -- background loops -------------------------------------------------------------------

    async def _discover_loop(self) -> None:
        last_problem: str | None = None
        while True:
            problem = None
            try:
                found = await asyncio.to_thread(self.discovery.scan_detailed)
                self._apply_scan(found)
            except Exception as exc:  # one bad scan must not end discovery; it is reported
                problem = f"process discovery failed: {exc!r}"
            if problem and problem != last_problem:
                self._errors.append(problem)      # once per new problem, not every scan
            last_problem = problem
            self._first_scan.set()
            await asyncio.sleep(self.targets_config.discovery_interval_s)

    def _apply_scan(self, found: list[Found]) -> None:
        now = time.time()
        seen = {f.target.key: f for f in found}
        for key, f in seen.items():
            state = self._states.get(key)
            if state is None:
                state = self._states[key] = _TargetState(found=f)
                self._report_targets.append(f.target)
            elif state.exited_at is None and f != state.found:
                if f.target != state.found.target:
                    self._report_targets.append(f.target)
                state.found = f
            if state.exited_at is not None:
                continue
            # discovery decides who is sampled: a roleless child once it outlives the helper
            # grace, never a helper or a neighbour (a process can turn into one)
            if f.sample and state.runner is None and self.pyspy is not None and self._workdir is not None:
                state.runner = self._new_runner(f.target)
                state.runner.start()
            elif not f.sample and state.runner is not None and not state.runner.done:
                asyncio.create_task(state.runner.close())
        for key, state in self._states.items():
            if key not in seen and state.exited_at is None:
                state.exited_at = now
                self._report_targets.append(replace(state.found.target, exited_at=now))
                if state.runner is not None and not state.runner.done:
                    asyncio.create_task(state.runner.close())

    def _new_runner(self, target: Target) -> PyspyRunner:
        assert self.pyspy is not None and self._workdir is not None
        return PyspyRunner(target, pyspy=self.pyspy, rate_hz=self.config.rate_hz,
                           recording_s=self.config.recording_s, handover_s=self.config.handover_s,
                           workdir=self._workdir, alive=lambda: self.discovery.alive(target),
                           retry_max_s=self.config.retry_max_s, cpu_budget_percent=self.config.cpu_budget_percent)

    async def _cpu_loop(self) -> None:
        while True:
            now = time.time()
            await asyncio.sleep(max(0.0, (int(now) + 1 + _CPU_READ_OFFSET_S) - now))
            sampled = [(k, s) for k, s in self._states.items() if s.runner is not None and s.exited_at is None]
            if not sampled:
                continue
            t = time.time()
            readings = await asyncio.to_thread(lambda: [read_thread_cpu(s.found.target.pid) for _, s in sampled])
            for (_, state), cpu in zip(sampled, readings):
                if cpu is not None:
                    state.cpu.add(t, cpu)

    # -- health -----------------------------------------------------------------------------

    def targets(self) -> list[Target]:
        """The targets discovered and not exited, as last seen (for the other collectors)."""
        return [s.found.target for s in self._states.values() if s.exited_at is None]

    def status(self) -> list[dict[str, Any]]:
        """One dict per target for /api/health and `infersight check` (plain JSON types)."""
        out = []
        for state in self._states.values():
            t = state.found.target
            runner = state.runner
            if runner is None:
                sampling = ("not sampled: not a Python process" if not state.found.python else
                            "not sampled: no py-spy" if self.pyspy is None else
                            f"not sampled: {state.found.target.role}" if state.found.target.role in NOT_SERVING else
                            "not sampled yet: a new child process (short-lived helpers are never sampled)")
            else:
                sampling = runner.state
            span = (state.last_used - runner.started_wall) if (runner and state.last_used) else None
            out.append({
                "pid": t.pid, "start_time": t.start_time, "role": t.role, "cmdline": t.cmdline[:200],
                "gpus": list(t.gpus), "python": state.found.python, "reasons": list(state.found.reasons),
                "state": sampling, "exited_at": state.exited_at,
                "rate_hz": runner.rate_hz if runner else None,
                "pyspy_cpu_percent": (round(runner.governor.cost_percent, 3)
                                      if runner and runner.governor.cost_percent is not None else None),
                "recordings": state.recordings, "failed_recordings": state.failed,
                "samples": state.samples, "sampling_errors": state.errors,
                "coverage": round(state.covered_s / span, 4) if span and span > 0 else None,
                "last_window": state.last_window,
                "failures": dict(runner.failures) if runner else {},
                "last_error": runner.last_failure.message if runner and runner.last_failure else None,
                "last_error_kind": runner.last_failure.kind if runner and runner.last_failure else None,
                "last_error_at": runner.last_failure_at if runner else None,
                "next_retry_at": runner.next_retry_at if runner else None,
            })
        return out

