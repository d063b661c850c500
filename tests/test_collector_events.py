"""Findings a collector reports (XID errors, a lost GPU) are stored, never dropped, and alerted."""
from __future__ import annotations

import asyncio
import time

from infersight.daemon.runtime import Daemon
from infersight.storage import events as q_events
from infersight.storage.model import Batch, Event


class XidCollector:
    name = "xid_source"
    interval_s = 0.2

    def __init__(self) -> None:
        self.sent = False

    async def collect(self, now: float) -> Batch:
        batch = Batch(self.name, now)
        if not self.sent:
            self.sent = True
            batch.events.append(Event(id="xid:h:0:79", kind="xid", start=now, end=now, host="h", gpu=0,
                                      severity="critical", summary="GPU 0 XID 79: fallen off the bus"))
        return batch


async def _run(config) -> list[dict]:
    daemon = Daemon(config, extra_collectors=[XidCollector()])
    task = asyncio.create_task(daemon.run())
    await asyncio.wait_for(daemon.ready.wait(), 20)
    deadline = time.time() + 10
    rows: list[dict] = []
    while time.time() < deadline and not rows:
        await asyncio.sleep(0.2)
        rows = await daemon.agent.store.read(q_events.events, 0, time.time() + 60)
    daemon.request_stop()
    await asyncio.wait_for(task, 15)
    return rows


def test_collector_findings_are_stored(make_config):
    rows = asyncio.run(_run(make_config()))
    assert [(r["kind"], r["severity"], r["gpu"]) for r in rows] == [("xid", "critical", 0)]
