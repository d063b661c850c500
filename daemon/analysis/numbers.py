"""None-aware arithmetic for reported figures: a signal an engine or GPU did not report is
None, and stays None through a mean or a rounding instead of turning into 0."""
from __future__ import annotations

from collections.abc import Iterable


def mean_reported(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are not None; None when there are none."""
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def round_reported(value: float | None, digits: int) -> float | None:
    """``round(value, digits)``, None kept as None."""
    return None if value is None else round(value, digits)
