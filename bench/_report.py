"""Figures with their targets, printed side by side, and optionally saved as JSON for run_all.

A :class:`Figure` is one measured number with its unit and, where the issue sets one, a
target: ``at_most`` (lower is better) or ``at_least``. ``ratio`` is measured / target, so a
ratio of 0.25 on an ``at_most`` target means a quarter of the budget is used. ``before`` is the
same figure from an earlier run, printed beside it (bench/_baseline.py says which run).
"""
from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    target: float | None = None
    kind: str = "at_most"            # at_most or at_least
    note: str = ""
    before: float | None = None      # the same figure measured before (bench/_baseline.py)

    @property
    def ratio(self) -> float | None:
        if self.target is None or self.target == 0:
            return None
        return self.value / self.target

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.value <= self.target if self.kind == "at_most" else self.value >= self.target

    def row(self) -> tuple[str, str, str, str, str]:
        target = "" if self.target is None else f"{'<=' if self.kind == 'at_most' else '>='} {_num(self.target)} {self.unit}"
        ratio = "" if self.ratio is None else f"{self.ratio:.3g}x"
        verdict = "" if self.met is None else ("met" if self.met else "MISSED")
        return self.name, f"{_num(self.value)} {self.unit}", target, ratio, verdict


def _num(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def print_table(figures: list[Figure], title: str = "", before_label: str = "before", before_note: str = "") -> None:
    """The figures as a table; a ``before_label`` column (explained by ``before_note``) when
    any figure has a ``before``."""
    with_before = any(f.before is not None for f in figures)
    head = ("figure", "measured", "target", "ratio", "verdict")
    rows = [head] + [f.row() for f in figures]
    if with_before:
        rows = [head[:2] + (before_label,) + head[2:]] + [
            r[:2] + ("" if f.before is None else f"{_num(f.before)} {f.unit}",) + r[2:] for r, f in zip(rows[1:], figures)]
    n = len(rows[0])
    widths = [max(len(r[i]) for r in rows) for i in range(n)]
    if title:
        print(title)
    for i, r in enumerate(rows):
        print("  " + "  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))
    if with_before and before_note:
        print(f"  {before_note}")
    for f in figures:
        if f.note:
            print(f"  note ({f.name}): {f.note}")


def save_json(path: str | None, script: str, figures: list[Figure], extra: dict | None = None) -> None:
    if not path:
        return
    Path(path).write_text(json.dumps({"script": script, "figures": [asdict(f) for f in figures],
                                      "extra": extra or {}}, indent=1))


def machine() -> str:
    """One line naming the machine: CPU model, cores usable, memory, OS, Python, DuckDB."""
    import duckdb

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (f"{cpu}, {len(os.sched_getaffinity(0))} cores usable{mem}, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, DuckDB {duckdb.__version__}")
