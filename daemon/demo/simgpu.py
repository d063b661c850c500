"""The simulated GPU of ``infersight demo`` on a machine without one.

Reads the demo engine's ``/sim-gpu`` (daemon/demo_metrics.py): finished 100 ms ticks of
its simulated device timeline (daemon/demo_timeline.py). Each tick becomes one
:class:`GpuSample` on GPU 0 with ``source="simulated"`` and the signals the analysis reads
(``util_gpu`` = busy share, GPM-like ``sm_util``, ``tensor_util``, ``dram_bw_util``, and
``util_mem`` = ``dram_bw_util``), timed at the tick's middle so each lands in the second
it describes. The first run after the engine (re)starts also emits a :class:`GpuInfo`
named "simulated GPU (demo, CPU mode)" and the engine as the process on that GPU, so every
view, event and export can say that the GPU is simulated.

The collector is named ``gpu`` (it stands in for the NVML collector, which the demo turns
off in CPU mode), and :meth:`status` says ``"simulated": true`` for /api/gpus and
/api/health. An engine that does not answer fails the run (the runner records and logs it).
"""
from __future__ import annotations

import time
from typing import Any

import aiohttp

from infersight.storage.model import Batch, GpuInfo, GpuProcessSample, GpuSample

SIMULATED_NAME = "simulated GPU (demo, CPU mode)"
SIMULATED_UUID = "GPU-simulated-demo"


class SimulatedGpuCollector:
    """Polls ``url`` (the engine's /sim-gpu) every ``interval_s`` seconds."""

    name = "gpu"

    def __init__(self, url: str, interval_s: float = 0.5, timeout_s: float = 2.0) -> None:
        self.url = url
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._since: float | None = None
        self._engine: tuple[int, float] | None = None    # (pid, timeline start) last announced
        self._last_ok: float | None = None
        self._last_error: str | None = None
        self._ticks = 0

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def collect(self, now: float) -> Batch:
        if self._session is None:
            await self.start()
        assert self._session is not None
        params = {} if self._since is None else {"since": repr(self._since)}
        try:
            async with self._session.get(self.url, params=params) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"demo engine {self.url} answered HTTP {resp.status}")
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._last_error = f"demo engine {self.url} unreachable: {type(exc).__name__}: {exc}"
            raise RuntimeError(self._last_error) from exc
        batch = to_batch(body, now, announce=self._engine != (body.get("pid"), body.get("started")))
        self._engine = (body.get("pid"), body.get("started"))
        ticks = body.get("ticks") or []
        if ticks:
            self._since = float(ticks[-1]["t"]) + float(body.get("tick_s", 0.1)) / 2
        self._ticks += len(ticks)
        self._last_ok, self._last_error = time.time(), None
        return batch

    def status(self) -> dict[str, Any]:
        """For /api/gpus and /api/health: says plainly that the GPU is simulated."""
        return {"state": "ok" if self._last_error is None else "error", "simulated": True,
                "detail": "no GPU on this machine: the demo engine simulates one from its own timing (CPU mode)",
                "source": self.url, "last_ok": self._last_ok, "last_error": self._last_error,
                "ticks_read": self._ticks,
                "gpus": [{"gpu": 0, "uuid": SIMULATED_UUID, "name": SIMULATED_NAME, "state": "ok",
                          "source": "simulated", "gpm": True}]}


def to_batch(body: dict[str, Any], now: float, announce: bool) -> Batch:
    """One /sim-gpu answer as a Batch (``announce``: also the GpuInfo and the engine process)."""
    batch = Batch(collector="gpu", t=now)
    tick_s = float(body.get("tick_s", 0.1))
    for tick in body.get("ticks") or []:
        dram = float(tick["dram"])
        batch.gpu_samples.append(GpuSample(
            t=float(tick["t"]) + tick_s / 2, gpu=0, source="simulated",
            values={"util_gpu": round(100.0 * float(tick["busy"]), 2), "util_mem": dram,
                    "sm_util": float(tick["sm"]), "tensor_util": float(tick["tensor"]), "dram_bw_util": dram}))
    if announce:
        batch.gpu_info.append(GpuInfo(gpu=0, uuid=SIMULATED_UUID, name=str(body.get("device") or SIMULATED_NAME),
                                      driver="simulated", gpm_supported=True))
        if body.get("pid"):
            batch.gpu_processes.append(GpuProcessSample(t=now, gpu=0, pid=int(body["pid"]), used_memory_bytes=None))
    if not batch.gpu_samples and not announce:
        batch.no_data = "no simulated tick finished since the last read"
    return batch
