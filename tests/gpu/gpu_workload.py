"""GPU load in known phases, for tests/gpu/test_gpu_live.py (run as a subprocess).

usage: gpu_workload.py [--phases idle:3,gemm:3,copy:3,idle:3] [--device 0] [--gemm-n 8192] [--copy-gib 2]

Phases: ``gemm`` runs bf16 N x N x N matrix products (tensor cores, compute-bound), ``copy``
copies a device buffer to another (DRAM-bound, no tensor work), ``idle`` sleeps. Prints
JSON lines on stdout: ``{"event": "ready", "pid", "device", "allocated_bytes"}`` once the
buffers exist and the kernels are warm, ``{"event": "phase", "phase", "t0", "t1"}`` (Unix
seconds) after each phase, then ``{"event": "done"}``. CUDA device numbers follow the PCI
bus order (CUDA_DEVICE_ORDER=PCI_BUS_ID), like NVML's indices.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def emit(record: dict) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--phases", default="idle:3,gemm:3,copy:3,idle:3")
    p.add_argument("--device", type=int, default=0)
    p.add_argument("--gemm-n", type=int, default=8192)
    p.add_argument("--copy-gib", type=float, default=2.0)
    args = p.parse_args()
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    import torch

    dev = torch.device("cuda", args.device)
    n = args.gemm_n
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    c = torch.empty(n, n, device=dev, dtype=torch.bfloat16)
    src = torch.ones(int(args.copy_gib * 2 ** 30), device=dev, dtype=torch.uint8)
    dst = torch.empty_like(src)
    work = {
        "gemm": lambda: torch.matmul(a, b, out=c),
        "copy": lambda: dst.copy_(src),
    }
    for op in work.values():   # load the kernels before anything is measured
        op()
    torch.cuda.synchronize(dev)
    emit({"event": "ready", "pid": os.getpid(), "device": args.device,
          "allocated_bytes": torch.cuda.memory_allocated(dev)})
    for spec in args.phases.split(","):
        name, seconds = spec.split(":")
        t0 = time.time()
        end = t0 + float(seconds)
        if name == "idle":
            time.sleep(float(seconds))
        else:
            op = work[name]
            while time.time() < end:
                for _ in range(10):   # enough queued work that the GPU never waits on Python
                    op()
                torch.cuda.synchronize(dev)
        emit({"event": "phase", "phase": name, "t0": t0, "t1": time.time()})
    emit({"event": "done"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
