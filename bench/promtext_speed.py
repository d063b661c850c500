"""Parse time of the engine fixtures: infersight's promtext against prometheus_client.

Prints per-file milliseconds and the ratio; run ``python bench/promtext_speed.py``.
Both parsers read the same text; the test suite checks that they agree on it.
"""
from __future__ import annotations

import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from infersight.daemon.engines.promtext import parse

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "engine-metrics"


def per_call_s(fn, text: str, repeat: int) -> float:
    best = float("inf")
    for _ in range(5):  # best of five rounds: the least disturbed by other load
        t0 = time.perf_counter()
        for _ in range(repeat):
            fn(text)
        best = min(best, (time.perf_counter() - t0) / repeat)
    return best


def reference(text: str) -> int:
    return sum(len(f.samples) for f in text_string_to_metric_families(text))


def main() -> None:
    print(f"{'fixture':24s} {'lines':>6s} {'promtext ms':>12s} {'prometheus_client ms':>21s} {'ratio':>6s}")
    for path in sorted(FIXTURES.glob("*.prom")):
        text = path.read_text()
        ours = per_call_s(parse, text, 20)
        theirs = per_call_s(reference, text, 20)
        print(f"{path.name:24s} {text.count(chr(10)):6d} {ours * 1e3:12.2f} {theirs * 1e3:21.2f} {theirs / ours:5.1f}x")


if __name__ == "__main__":
    main()
