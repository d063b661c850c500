"""The runner: times runs, records outcomes per collector, isolates failures, hands off batches."""
from __future__ import annotations

import asyncio
import logging

import pytest

from infersight.daemon.runner import Runner
from infersight.storage.model import Batch, HostSample


class Scripted:
    """A collector whose runs follow a script: a Batch to return or an exception to raise."""

    def __init__(self, name: str, script, interval_s: float = 1.0) -> None:
        self.name, self.interval_s = name, interval_s
        self._script = list(script)
        self.calls: list[float] = []

    async def collect(self, now: float):
        self.calls.append(now)
        step = self._script.pop(0) if len(self._script) > 1 else self._script[0]
        if isinstance(step, BaseException):
            raise step
        return step(now) if callable(step) else step


def rows(now: float, n: int = 1, errors=()) -> Batch:
    b = Batch("x", now, errors=list(errors))
    b.host_samples = [HostSample(now, 1.0, 1, 1, 2, 0.0, 0.0, 0.0) for _ in range(n)]
    return b


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def runner_log():
    """Records of the infersight.runner logger (its parent may not propagate to caplog)."""
    logger = logging.getLogger("infersight.runner")
    handler = Records()
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler.messages
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def clock(start: float = 1000.0):
    t = [start]

    def now() -> float:
        t[0] += 1.0
        return t[0]

    return now


async def test_success_records_status_and_hands_off_the_batch():
    sunk: list[Batch] = []
    good = Scripted("good", [lambda now: rows(now, 3)])
    runner = Runner([good], lambda b: sunk.append(b) or True, clock=clock())
    batch = await runner.run_once("good")
    st = runner.status["good"]
    assert batch is sunk[0] and batch.row_count() == 3
    assert (st.ok, st.runs, st.failures, st.last_error) == (True, 1, 0, None)
    assert st.last_success == st.last_run == good.calls[0] == 1001.0
    assert st.duration_s is not None and st.duration_s >= 0
    assert runner.healthy()


async def test_one_failing_collector_does_not_stop_the_others(runner_log):
    sunk: list[Batch] = []
    bad = Scripted("bad", [RuntimeError("injected failure")])
    good = Scripted("good", [lambda now: rows(now)])
    runner = Runner([bad, good], lambda b: sunk.append(b) or True, clock=clock())
    for _ in range(3):
        results = await asyncio.gather(runner.run_once("bad"), runner.run_once("good"))
        assert results[0] is None and isinstance(results[1], Batch)
    bad_st, good_st = runner.status["bad"], runner.status["good"]
    assert (bad_st.ok, bad_st.runs, bad_st.failures) == (False, 3, 3)
    assert bad_st.last_error == "RuntimeError: injected failure"
    assert bad_st.last_success is None and bad_st.last_error_at is not None
    assert (good_st.ok, good_st.runs, good_st.failures) == (True, 3, 0)
    assert len(sunk) == 3 and not runner.healthy()
    # logged once per distinct message, not once per run
    failed = [m for m in runner_log if "event=collector_failed" in m]
    assert len(failed) == 1 and "collector=bad" in failed[0] and "injected failure" in failed[0]
    assert runner.status["bad"].as_dict()["last_error"] == "RuntimeError: injected failure"


async def test_new_error_is_logged_and_recovery_is_announced(runner_log):
    flaky = Scripted("flaky", [ValueError("a"), ValueError("a"), OSError("b"), lambda now: rows(now)])
    runner = Runner([flaky], lambda b: True, clock=clock())
    for _ in range(5):
        await runner.run_once("flaky")
    assert [m.split()[0] for m in runner_log] == ["event=collector_failed", "event=collector_failed",
                                                  "event=collector_recovered"]
    st = runner.status["flaky"]
    assert (st.ok, st.runs, st.failures) == (True, 5, 3)
    assert st.last_error == "OSError: b"  # the last error stays visible after recovery
    assert runner.healthy()


async def test_no_data_is_not_a_failure():
    idle = Scripted("gpu", [Batch("gpu", 0.0, no_data="no NVIDIA GPU on this host")])
    sunk: list[Batch] = []
    runner = Runner([idle], lambda b: sunk.append(b) or True)
    await runner.run_once("gpu")
    st = runner.status["gpu"]
    assert st.ok is True and st.no_data == "no NVIDIA GPU on this host"
    assert sunk == []  # an empty batch is not queued
    assert runner.healthy()


async def test_item_errors_are_counted_without_failing_the_run():
    partial = Scripted("host", [lambda now: rows(now, 1, errors=[f"pid {now:.0f}: process exited"])])
    runner = Runner([partial], lambda b: True, clock=clock())
    for _ in range(25):
        await runner.run_once("host")
    st = runner.status["host"]
    assert st.ok is True and st.failures == 0
    assert st.errors_reported == 25
    assert st.last_item_errors[-1] == "pid 1025: process exited"
    assert len(st.last_item_errors) == 20  # bounded
    assert st.as_dict()["recent_item_errors"] == [f"pid {n}: process exited" for n in range(1021, 1026)]


async def test_wrong_return_type_is_a_failure():
    broken = Scripted("broken", [lambda now: {"not": "a batch"}])
    runner = Runner([broken], lambda b: True)
    assert await runner.run_once("broken") is None
    assert runner.status["broken"].last_error == "TypeError: collect() returned dict, not Batch"


async def test_dropped_batches_are_counted_per_collector():
    source = Scripted("host", [lambda now: rows(now)])
    accept = iter([True, False, False, True])
    runner = Runner([source], lambda b: next(accept))
    for _ in range(4):
        await runner.run_once("host")
    assert runner.status["host"].batches_dropped == 2


async def test_a_slow_run_is_never_overlapped():
    gate = asyncio.Event()

    async def slow(now):
        await gate.wait()
        return rows(now)

    class Slow:
        name, interval_s = "slow", 0.1
        calls = 0

        async def collect(self, now):
            Slow.calls += 1
            return await slow(now)

    runner = Runner([Slow()], lambda b: True)
    first = asyncio.create_task(runner.run_once("slow"))
    await asyncio.sleep(0)
    assert await runner.run_once("slow") is None  # busy: skipped, not queued
    gate.set()
    assert isinstance(await first, Batch)
    assert Slow.calls == 1 and runner.status["slow"].runs == 1
    assert isinstance(await runner.run_once("slow"), Batch)  # free again


async def test_cancellation_propagates_and_frees_the_collector():
    class Hang:
        name, interval_s = "hang", 1.0

        async def collect(self, now):
            await asyncio.Event().wait()

    runner = Runner([Hang()], lambda b: True)
    task = asyncio.create_task(runner.run_once("hang"))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert runner.status["hang"].failures == 0  # a shutdown is not a collector failure
    assert "hang" not in runner._running
