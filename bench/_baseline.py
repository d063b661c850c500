"""Figures from before issue 17's storage and memory work, printed beside the new ones.

They cannot be measured in the same run: the code that made them (analysis windows as JSON
text, no rollup of windows and histogram deltas, an interner that kept every row, the
mismatch detector's 3 h of details) is gone. Two sources, named in the table:

- ``measured``: this bench's store_24h.py at commit 975574a (the commit before the work), on the
  2-core AMD EPYC VM of BENCHMARKS.md, DuckDB 2.0.1, 2026-12-03: ``python bench/store_24h.py
  --rate-hz 1 --repeats 3 --rss-seconds 120`` from a checkout of that commit;
- ``recorded``: BENCHMARKS.md's make bench run of 2026-11-24 (commit 236bb14, DuckDB 2.0.0), for
  the 20 Hz store, which was not rebuilt with the old code.

Keys are figure names as store_24h.py makes them; a figure without an entry has no "before".
"""
from __future__ import annotations

COMMIT = "975574a"

# figure name -> (value, source)
BEFORE: dict[str, tuple[float, str]] = {
    "bytes on disk per stack sample after 24 h, 1 Hz": (14.261, "measured"),
    "  of which stack tables alone after 24 h, 1 Hz": (0.948, "measured"),
    "agent RSS at steady state (max), 24 h 1 Hz store": (322.0, "measured"),
    "agent RSS without analysis (max), 24 h 1 Hz store": (206.2, "measured"),
    "bytes on disk per stack sample after 24 h, 20 Hz": (0.77, "recorded"),
    "agent RSS at steady state (max), 24 h 20 Hz store": (314.0, "recorded"),
    "agent RSS without analysis (max), 24 h 20 Hz store": (223.0, "recorded"),
}


def before(name: str) -> float | None:
    """The earlier value of the figure called ``name`` (None when there is none)."""
    entry = BEFORE.get(name)
    return entry[0] if entry else None


def label() -> str:
    """The title of the "before" column."""
    return f"before {COMMIT}"


def note() -> str:
    """Where the "before" figures come from, in one line."""
    return (f"before {COMMIT}: measured with this bench on a checkout of {COMMIT} (1 Hz store) or recorded in "
            "BENCHMARKS.md's run of 2026-11-24 (20 Hz store); see bench/_baseline.py")
