"""One target's rolling py-spy recordings, as asyncio subprocesses.

Why chrometrace, measured with py-spy 0.4.3 (2-core VM and an H100 host VM):

- No output format carries py-spy's per-sample active flag. ``raw`` has counts, no time;
  ``speedscope`` has each thread's samples in order with weights, no time; ``chrometrace``
  has the time of every stack change per thread (thread ids and names with ``--threads``),
  and with ``--idle`` also the stacks of waiting threads. Only it places samples in time.
- Starting py-spy costs 12-16 ms of CPU (attach plus one sample; ``dump --json`` 11-14 ms
  per call), so a ``raw --duration 1`` recording every second costs 1.2-1.6% of a core in
  launches alone, twice that with a second one for the active flag. ``--duration`` also
  ends after a number of random (exponential) intervals, not at a set time (1 s at 20 Hz:
  sd 0.22 s), so such windows do not line up with seconds.
- Sampling costs the same in every format (within 3%): about 0.3 ms per thread and sample
  at 20 frames on these VMs, so a second concurrent recording doubles the main cost.

So: one ``record --nonblocking --idle --threads --format chrometrace`` at a time per target
(never the pausing mode: it cost inference loops a third of their throughput), rolled every
``recording_s``; per-second counts come from the change times (:mod:`.buckets`), and
active versus idle from the kernel's per-thread CPU time (:mod:`.thread_cpu`). py-spy
writes its file only when a recording ends, so recordings roll: the next one is started
``handover_s`` before the planned end of the current one, and once it has attached (py-spy
prints ``Sampling process`` after the attach succeeded) the current one is stopped with
SIGINT (SIGTERM would lose its output). The two overlap; :mod:`.buckets` uses each
second once. Planned ends fall on whole wall-clock seconds, spread over targets by PID so
that not every attach on a host happens at once. ``--duration`` is set well past the planned
end only as a safety net: py-spy's sampling intervals are random (exponential), so a
``--duration`` recording ends at an unpredictable time, and an orphaned py-spy (agent
killed) still ends by itself.

Wall-clock calibration: chrometrace ``ts`` counts from the moment py-spy created its
recorder, right after exec, before it attaches. The spawn call returns once the exec has
succeeded, so the wall time at that return is taken as ``ts`` 0 (error: a few ms).

Each target's rate is set per recording by :class:`.pyspy_budget.RateGovernor` so that its
py-spy stays within ``cpu_budget_percent`` of a core; the first recording is short (about
``FIRST_RECORDING_S``) so a costly target is slowed down early.

A recording that fails is classified (:func:`classify_failure`) into a message that says
what to do; the runner then retries with exponential backoff (1 s doubling up to
``retry_max_s``) while the target lives, and stops for good when it has exited.
"""
from __future__ import annotations

import asyncio
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from infersight.daemon.stacks.budget import RateGovernor, process_cpu_seconds
from infersight.daemon.stacks.failures import PyspyFailure, classify_failure, first_error, ptrace_scope
from infersight.daemon.stacks.parse import parse_summary
from infersight.storage.model import Target

ATTACH_TIMEOUT_S = 20.0
FIRST_RECORDING_S = 5.0


@dataclass(slots=True)
class Recording:
    """One py-spy run. Times are Unix seconds; ``origin_wall`` is chrometrace ``ts`` 0."""

    seq: int
    path: Path
    launch_wall: float
    origin_wall: float
    planned_end: float
    rate_hz: int = 0
    attached_wall: float | None = None
    attach_cpu_s: float | None = None
    stop_wall: float | None = None
    exit_wall: float | None = None
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    failure: PyspyFailure | None = None
    samples: int | None = None
    errors: int | None = None
    proc: asyncio.subprocess.Process | None = field(default=None, repr=False)
    attached: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    readers: list[asyncio.Task] = field(default_factory=list, repr=False)


class PyspyRunner:
    """Rolling recordings of one target; finished ones are taken with :meth:`harvest`.

    ``alive()`` says whether the target (pid and start time) still exists; it is called from
    the event loop and must be cheap (one procfs read).
    """

    def __init__(self, target: Target, *, pyspy: str, rate_hz: int, recording_s: int, handover_s: float,
                 workdir: Path, alive: Callable[[], bool], retry_max_s: float = 60.0,
                 cpu_budget_percent: float = 0.0) -> None:
        self.target = target
        self.pyspy = pyspy
        self.governor = RateGovernor(rate_hz, cpu_budget_percent)
        self.recording_s = recording_s
        self.handover_s = handover_s
        self.workdir = workdir
        self.alive = alive
        self.retry_max_s = retry_max_s
        self.state = "starting"            # starting, sampling, backoff, exited, closed
        self.failures: dict[str, int] = {}
        self.last_failure: PyspyFailure | None = None
        self.last_failure_at: float | None = None
        self.next_retry_at: float | None = None
        self.started_wall = time.time()
        self._seq = 0
        self._finished: list[Recording] = []
        self._live: list[Recording] = []
        self._task: asyncio.Task | None = None
        self._closing = False
        self._offset = target.pid % max(1, recording_s)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._main(), name=f"pyspy-{self.target.pid}")

    @property
    def rate_hz(self) -> int:
        """The rate the next recording will use."""
        return self.governor.rate

    @property
    def done(self) -> bool:
        """True once sampling has ended for good and every recording has been handed over."""
        return self._task is not None and self._task.done() and not self._live

    def harvest(self) -> list[Recording]:
        """Recordings that ended since the last call, in launch order."""
        out, self._finished = sorted(self._finished, key=lambda r: r.seq), []
        return out

    async def close(self) -> None:
        """Stop sampling: SIGINT the live recordings and wait for them (their data stays harvestable)."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for rec in list(self._live):
            await self._stop(rec)
        if self.state != "exited":
            self.state = "closed"

    # -- the loop ---------------------------------------------------------------------------

    async def _main(self) -> None:
        backoff = 1.0
        while not self._closing:
            # The first recording is short, so the rate adapts to this target's cost early.
            rec = await self._launch(float(math.ceil(time.time() + min(FIRST_RECORDING_S, self.recording_s))))
            if rec.failure is not None:
                if not self.alive() or rec.failure.kind == "exited":
                    self.state = "exited"
                    return
                await self._back_off(backoff)
                backoff = min(backoff * 2, self.retry_max_s)
                continue
            self.state = "sampling"
            self.next_retry_at = None
            began = time.time()
            last = await self._chain(rec)
            if not self.alive():
                self.state = "exited"
                return
            if time.time() - began < self.recording_s:
                # py-spy ended on its own soon after attaching while the target lives on (its
                # data is kept): count it and wait before the next attempt rather than spin.
                reason = first_error(last.stderr) or _last_line(last.stdout) or f"exit status {last.returncode}"
                self._record_failure(PyspyFailure("failed", f"py-spy stopped sampling PID {self.target.pid} "
                                                            f"after {time.time() - began:.1f} s: {reason}"))
                await self._back_off(backoff)
                backoff = min(backoff * 2, self.retry_max_s)
            else:
                backoff = 1.0

    async def _chain(self, cur: Recording) -> Recording:
        """Hand over from recording to recording until one ends on its own; returns that one."""
        while True:
            if await self._wait_until(cur.planned_end - self.handover_s, cur):
                await self._finish(cur)
                return cur
            self._measure(cur)
            nxt = await self._launch(self._boundary_after(cur.planned_end + self.recording_s / 2))
            if nxt.failure is not None:
                if not self.alive():
                    await self._stop(cur)
                    return cur
                # Keep the current recording going and try the hand-over again later.
                cur.planned_end += self.recording_s
                continue
            # The new one has attached; the old one stops at the planned end (or now, if the
            # attach took longer). Its file closes every slice at its stop, so it covers up
            # to there and the new one is used from there on.
            await self._wait_until(cur.planned_end, cur)
            await self._stop(cur)
            cur = nxt

    def _measure(self, rec: Recording) -> None:
        """Feed the governor with ``rec``'s CPU so far (one procfs read)."""
        if rec.proc is None or rec.attached_wall is None or rec.attach_cpu_s is None:
            return
        cpu = process_cpu_seconds(rec.proc.pid)
        if cpu is None:
            return
        self.governor.observe(rec.rate_hz, cpu - rec.attach_cpu_s, time.time() - rec.attached_wall,
                              rec.attach_cpu_s, self.recording_s, self.handover_s)

    async def _back_off(self, delay: float) -> None:
        self.state = "backoff"
        self.next_retry_at = time.time() + delay
        await asyncio.sleep(delay)

    def _boundary_after(self, t: float) -> float:
        """The first whole second >= t that is this target's hand-over phase."""
        step = self.recording_s
        base = (int(t) // step) * step + self._offset
        while base < t:
            base += step
        return float(base)

    async def _wait_until(self, t: float, rec: Recording) -> bool:
        """Sleep until wall time ``t``; True if ``rec``'s py-spy exited first."""
        assert rec.proc is not None
        delay = t - time.time()
        if delay <= 0:
            return rec.proc.returncode is not None
        waiter = asyncio.create_task(rec.proc.wait())
        try:
            done, _ = await asyncio.wait({waiter}, timeout=delay)
        finally:
            if not waiter.done():
                waiter.cancel()
        return bool(done)

    # -- one recording ----------------------------------------------------------------------

    async def _launch(self, planned_end: float) -> Recording:
        self._seq += 1
        path = self.workdir / f"{self.target.pid}-{int(self.target.start_time * 100)}-{self._seq}.json"
        cap = int(planned_end - time.time()) + 3 * self.recording_s + 10
        rate = self.governor.rate
        args = [self.pyspy, "record", "--pid", str(self.target.pid), "--nonblocking", "--idle", "--threads",
                "--rate", str(rate), "--format", "chrometrace", "--duration", str(cap), "--output", str(path)]
        launch = time.time()
        rec = Recording(seq=self._seq, path=path, launch_wall=launch, origin_wall=launch, planned_end=planned_end,
                        rate_hz=rate)
        try:
            # A session of its own: a terminal's Ctrl-C must not end recordings behind our back.
            rec.proc = await asyncio.create_subprocess_exec(
                *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            rec.failure = PyspyFailure("failed", f"cannot start py-spy ({self.pyspy}): {exc}")
            self._record_failure(rec.failure)
            self._finished.append(rec)
            return rec
        rec.origin_wall = time.time()
        self._live.append(rec)
        rec.readers = [asyncio.create_task(self._read_stdout(rec)), asyncio.create_task(self._read_stderr(rec))]
        waiter = asyncio.create_task(rec.proc.wait())
        attached = asyncio.create_task(rec.attached.wait())
        try:
            await asyncio.wait({waiter, attached}, timeout=ATTACH_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, attached):
                if not task.done():
                    task.cancel()
        if not rec.attached.is_set():
            hung = rec.proc.returncode is None
            if hung:
                await self._stop(rec)       # records its own failure if it has to kill py-spy
            else:
                await self._finish(rec)
            if rec.failure is None:
                rec.failure = (PyspyFailure("stuck", f"py-spy did not attach to PID {self.target.pid} within "
                                                     f"{ATTACH_TIMEOUT_S:.0f} s") if hung else
                               classify_failure(self.target.pid, rec.returncode, rec.stderr, self.alive(),
                                                ptrace_scope()))
                self._record_failure(rec.failure)
        return rec

    async def _read_stdout(self, rec: Recording) -> None:
        assert rec.proc is not None and rec.proc.stdout is not None
        chunks: list[str] = []
        async for raw in rec.proc.stdout:
            line = raw.decode("utf-8", "replace")
            chunks.append(line)
            if "Sampling process" in line and not rec.attached.is_set():
                rec.attached_wall = time.time()
                rec.attach_cpu_s = process_cpu_seconds(rec.proc.pid)
                rec.attached.set()
        rec.stdout = "".join(chunks)

    async def _read_stderr(self, rec: Recording) -> None:
        assert rec.proc is not None and rec.proc.stderr is not None
        rec.stderr = (await rec.proc.stderr.read()).decode("utf-8", "replace")

    async def _stop(self, rec: Recording) -> None:
        """SIGINT (py-spy then writes its file), wait; SIGKILL only if it will not end."""
        assert rec.proc is not None
        if rec.proc.returncode is None:
            rec.stop_wall = time.time()
            try:
                rec.proc.send_signal(signal.SIGINT)
            except ProcessLookupError:
                pass
            # py-spy notices the signal at its next sample (exponential gaps, mean 1/rate).
            try:
                await asyncio.wait_for(rec.proc.wait(), timeout=10.0 / max(1, rec.rate_hz) + 10.0)
            except asyncio.TimeoutError:
                rec.proc.kill()
                await rec.proc.wait()
                rec.failure = PyspyFailure("stuck", f"py-spy on PID {self.target.pid} ignored SIGINT and was killed")
                self._record_failure(rec.failure)
        await self._finish(rec)

    async def _finish(self, rec: Recording) -> None:
        assert rec.proc is not None
        if rec not in self._live:
            return
        await rec.proc.wait()
        rec.exit_wall = time.time()
        rec.returncode = rec.proc.returncode
        await asyncio.gather(*rec.readers, return_exceptions=True)
        summary = parse_summary(rec.stdout)
        if summary is not None:
            rec.samples, rec.errors = summary
        if rec.failure is None and rec.attached.is_set() and not rec.path.exists():
            rec.failure = classify_failure(self.target.pid, rec.returncode, rec.stderr, self.alive(), ptrace_scope())
            self._record_failure(rec.failure)
        self._live.remove(rec)
        self._finished.append(rec)

    def _record_failure(self, failure: PyspyFailure) -> None:
        self.failures[failure.kind] = self.failures.get(failure.kind, 0) + 1
        self.last_failure = failure
        self.last_failure_at = time.time()


def _last_line(text: str) -> str:
    lines = [ln.replace("py-spy>", "").strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def find_pyspy(configured: str = "") -> str | None:
    """The py-spy binary: the configured path, else the wheel's (next to this Python), else PATH."""
    import shutil
    import sys

    if configured:
        return configured if os.access(configured, os.X_OK) else None
    beside = Path(sys.executable).parent / "py-spy"
    if os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("py-spy")
