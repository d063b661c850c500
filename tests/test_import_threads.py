"""The agent starts no thread by importing its modules: NumPy (DuckDB's bulk-append format in
storage/append.py) would otherwise have OpenBLAS start one idle thread per core."""
from __future__ import annotations

import os
import subprocess
import sys

PROBE = ("import psutil, infersight.daemon.runtime, infersight.web.app; "
         "print(psutil.Process().num_threads())")


def test_importing_the_agent_starts_no_thread():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENBLAS_", "OMP_"))}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120, check=True)
    assert int(out.stdout.strip()) == 1, f"threads after import: {out.stdout.strip()} (cores: {os.cpu_count()})"
