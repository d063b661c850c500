"""Where the demo engine's "model" runs: a real GPU through torch, or the CPU with a
simulated GPU timeline.

Both backends offer the same four operations, named after what an inference engine does:
``prefill(tokens)``, ``decode_step(batch)``, ``tiny_op()`` (one small unfused kernel) and
``synchronize()`` (wait for the device). :func:`pick_backend` chooses CUDA when torch
sees a GPU and the CPU otherwise.

On CUDA the work is real bf16 GEMMs (prefill) and GEMV-shaped decode steps against 8192-wide
weights, as in the recording engine behind tests/fixtures/h100-scenario, so NVML/GPM show
their real signatures. On the CPU the work is small numpy matmuls (real, cheap) and each
operation launches a kernel on a :class:`~.demo_timeline.SimTimeline` with a duration from
the cost model below; ``synchronize`` sleeps until the simulated stream drains, as a host
thread waits for a GPU.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from infersight.daemon.demo.timeline import GEMM, GEMV, TINY, SimTimeline

# CPU-mode cost model of the simulated GPU (seconds). Decode is dominated by reading the
# weights once per step (a fixed cost) plus a little per sequence; prefill is per prompt
# token; a tiny kernel runs for microseconds but each launch costs the host more than that
# (the CUDA driver's launch overhead), which is what makes a launch-bound loop starve a GPU.
DECODE_BASE_S = 4e-3
DECODE_PER_SEQ_S = 5e-5
PREFILL_BASE_S = 2e-4
PREFILL_PER_TOKEN_S = 4e-6
TINY_KERNEL_S = 2.5e-6
LAUNCH_COST_S = 8e-6      # host time of one launch; the CPU backend spins this long
CPU_HIDDEN = 128          # width of the CPU backend's real (small) matmuls


class CpuBackend:
    """Small real work on the CPU; device time on a simulated timeline."""

    simulated = True
    kind = "cpu"
    device_name = "simulated GPU (demo, CPU mode)"

    def __init__(self, timeline: SimTimeline | None = None, seed: int = 0) -> None:
        self.timeline = timeline or SimTimeline()
        rng = np.random.default_rng(seed)
        self.weights = (rng.standard_normal((CPU_HIDDEN, CPU_HIDDEN)) / CPU_HIDDEN ** 0.5).astype(np.float32)
        self.small = np.zeros(64, dtype=np.float32)

    def prefill(self, tokens: int) -> np.ndarray:
        x = np.ones((min(max(tokens, 1), 256), CPU_HIDDEN), dtype=np.float32)
        out = np.tanh(x @ self.weights)
        self.timeline.launch(GEMM, PREFILL_BASE_S + PREFILL_PER_TOKEN_S * tokens)
        return out

    def decode_step(self, batch: int) -> np.ndarray:
        x = np.ones((max(batch, 1), CPU_HIDDEN), dtype=np.float32)
        out = np.tanh(x @ self.weights)
        self.timeline.launch(GEMV, DECODE_BASE_S + DECODE_PER_SEQ_S * batch)
        return out

    def tiny_op(self) -> None:
        started = time.perf_counter()
        np.add(self.small, 1.0, out=self.small)
        self.timeline.launch(TINY, TINY_KERNEL_S)
        while time.perf_counter() - started < LAUNCH_COST_S:
            pass

    def synchronize(self) -> None:
        wait = self.timeline.pending_s()
        if wait > 0:
            time.sleep(wait)


class CudaBackend:
    """Real bf16 work on the first CUDA device (needs torch with CUDA)."""

    simulated = False
    kind = "cuda"
    HIDDEN = 8192

    def __init__(self, torch: Any) -> None:
        self.torch = torch
        h, dev = self.HIDDEN, "cuda"
        self.w1 = torch.randn(h, 3 * h, device=dev, dtype=torch.bfloat16) / 90
        self.w2 = torch.randn(h, 3 * h, device=dev, dtype=torch.bfloat16) / 90
        self.small = torch.zeros(64, device=dev)
        self.device_name = torch.cuda.get_device_name(0)

    def _layers(self, rows: int):
        x = self.torch.randn(max(rows, 1), self.HIDDEN, device="cuda", dtype=self.torch.bfloat16)
        for _ in range(4):
            x = (x @ self.w1)[:, :self.HIDDEN]
            x = (x @ self.w2)[:, :self.HIDDEN]
        return x

    def prefill(self, tokens: int):
        return self._layers(tokens)

    def decode_step(self, batch: int):
        return self._layers(batch)

    def tiny_op(self) -> None:
        self.small.add_(1.0)

    def synchronize(self) -> None:
        self.torch.cuda.synchronize()


def pick_backend(device: str = "auto", seed: int = 0) -> CpuBackend | CudaBackend:
    """``device``: auto (CUDA when torch sees a GPU), cuda (fail without one) or cpu."""
    if device in ("auto", "cuda"):
        try:
            import torch
            available = torch.cuda.is_available()
        except ImportError:
            torch, available = None, False
        if available:
            return CudaBackend(torch)
        if device == "cuda":
            raise RuntimeError("--device cuda: torch with a CUDA GPU is not available")
    return CpuBackend(seed=seed)
