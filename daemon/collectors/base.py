"""The collector protocol: one method that returns a Batch.

The runner (daemon/runner.py), not the collector, times each run, records success, duration
and the last error, tells "no data" apart from failure, and isolates exceptions. A collector
never blocks the event loop: blocking work goes through ``asyncio.to_thread`` or an asyncio
subprocess inside ``collect``.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from infersight.storage.model import Batch


@runtime_checkable
class Collector(Protocol):
    """What the runner schedules. ``interval_s`` is how often ``collect`` is called."""

    name: str
    interval_s: float

    async def collect(self, now: float) -> Batch:
        """Gather what is new since the last call. ``now`` is the scheduler's Unix time.

        Raise only for a failure of the whole run; per-item problems go in ``Batch.errors``
        and "nothing to collect here" in ``Batch.no_data``.
        """
        ...


class Lifecycle(Protocol):
    """Optional hooks a collector may add; the runner calls them when present."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...
