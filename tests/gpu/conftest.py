"""tests/gpu/ needs a real NVIDIA GPU: every test here is marked ``gpu`` and skipped, with the
reason, where NVML finds no GPU or PyTorch with CUDA (the tests make their own GPU load) is
missing. Run them on a GPU host with ``python -m pytest tests/gpu -m gpu``.

Tests append their measured figures to the ``gpu_figures`` list; they are printed in the
terminal summary, so a run shows the numbers without ``-s``.
"""
from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
FIGURES: list[str] = []


@functools.cache
def gpu_problem() -> str | None:
    """Why the GPU tests cannot run here, or None when they can."""
    try:
        import pynvml
    except ImportError:
        return "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return f"no NVIDIA driver or NVML here ({exc})"
    try:
        count = pynvml.nvmlDeviceGetCount()
    finally:
        pynvml.nvmlShutdown()
    if count == 0:
        return "NVML found no GPU"
    # in a subprocess: importing torch here could trip filterwarnings=error on unrelated warnings
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                           capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        return "PyTorch is not installed (the GPU tests create their own load with it)"
    if probe.stdout.strip() != "True":
        return "PyTorch cannot use CUDA here"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ours = [item for item in items if HERE in Path(str(item.path)).parents]
    for item in ours:
        item.add_marker(pytest.mark.gpu)
    if ours and gpu_problem():
        skip = pytest.mark.skip(reason=f"needs an NVIDIA GPU: {gpu_problem()}")
        for item in ours:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def gpu_figures() -> list[str]:
    return FIGURES


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if FIGURES:
        terminalreporter.section("GPU collector figures measured on this host")
        for line in FIGURES:
            terminalreporter.write_line(line)
