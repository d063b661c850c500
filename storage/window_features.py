"""The features of an analysis window as typed columns of the ``windows`` table (schema v4).

A window's ``features`` (storage.model.Window) is a dict. Each known feature has a column of
its own (:data:`FEATURES`, in the order the analysis produces them), which DuckDB compresses
far better than one JSON string per window (0.1 KB each). The dict comes back exactly as it
went in:

- ``present`` is a bit mask of the known keys the dict had (bit i for ``FEATURES[i]``): a key
  present with None and an absent key are different answers;
- a known key whose value has not its column's type (an int where a float is expected, a
  float where an int is) and every unknown key go to ``extra``, JSON text, NULL when there is
  none, so a feature added by a later analysis is kept before it gets a column;
- non-finite floats are stored as NULL: the JSON text they were stored as before wrote them
  as null too.

Bits and columns are only ever appended (a stored mask names columns by position). A rolled
up window (storage/retention.py: the seconds of one class in one bin) holds the mean of each
float over its seconds (rounded: ROLLUP_DECIMALS), the most common value of the others and the
union of the masks.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import orjson

# (name, DuckDB type); never reorder or remove: stored masks name these by position
FEATURES: tuple[tuple[str, str], ...] = (
    ("util_gpu", "DOUBLE"), ("sm_util", "DOUBLE"), ("tensor_util", "DOUBLE"), ("dram_bw_util", "DOUBLE"),
    ("running", "DOUBLE"), ("waiting", "DOUBLE"), ("gen_tokens_s", "DOUBLE"), ("busiest_pid", "INTEGER"),
    ("busiest_role", "VARCHAR"), ("busiest_own_cpu_pct", "DOUBLE"), ("mode", "VARCHAR"),
    ("dram_bw_bytes_s", "DOUBLE"), ("dram_bw_of_peak", "DOUBLE"), ("mbu", "DOUBLE"), ("mfu", "DOUBLE"),
)
NAMES = tuple(name for name, _ in FEATURES)
# decimals a rolled-up mean keeps: far below what a minute's mean can tell, and short decimals
# compress (DuckDB's ALP) to a third of what full doubles take
ROLLUP_DECIMALS = {"dram_bw_bytes_s": 0, "dram_bw_of_peak": 4, "mbu": 4, "mfu": 4, "busiest_own_cpu_pct": 1}
_DEFAULT_DECIMALS = 3
_INDEX = {name: i for i, name in enumerate(NAMES)}
_TYPES = tuple(kind for _, kind in FEATURES)
_INT32 = (-2**31, 2**31 - 1)

# the window's own columns, then present, the features, extra: the order of encode's tuple
BASE_COLUMNS = ("start", "end", "gpu", "klass")
COLUMNS = BASE_COLUMNS + ("present",) + NAMES + ("extra",)


def column_definitions() -> str:
    """The feature columns of CREATE TABLE windows (after start, end, gpu, klass)."""
    return ", ".join(["present UINTEGER"] + [f'"{name}" {kind}' for name, kind in FEATURES] + ["extra VARCHAR"])


def _fits(kind: str, value: Any) -> bool:
    if value is None:
        return True
    if kind == "DOUBLE":
        return isinstance(value, float)
    if kind == "INTEGER":
        return type(value) is int and _INT32[0] <= value <= _INT32[1]
    return isinstance(value, str)


def encode(features: dict[str, Any]) -> tuple:
    """``(present, value of each feature in FEATURES order, extra JSON or None)``."""
    present = 0
    values: list[Any] = [None] * len(FEATURES)
    extra: dict[str, Any] = {}
    for key, value in features.items():
        i = _INDEX.get(key)
        if i is None or not _fits(_TYPES[i], value):
            extra[key] = value
            continue
        present |= 1 << i
        if isinstance(value, float):
            value = float(value) if math.isfinite(value) else None
        values[i] = value
    return (present, *values, orjson.dumps(extra).decode() if extra else None)


def encode_rows(windows: Iterable) -> list[tuple]:
    """Rows in :data:`COLUMNS` order for ``storage.model.Window`` objects."""
    return [(w.start, w.end, w.gpu, w.klass, *encode(w.features)) for w in windows]


class Decoder:
    """Turns ``(present, *values, extra)`` back into the features dict, keys in FEATURES order.

    Keeps the (index, name) pairs of each mask seen: a store holds a handful of masks.
    """

    def __init__(self) -> None:
        self._by_mask: dict[int, tuple[tuple[int, str], ...]] = {}

    def __call__(self, present: int, values: tuple, extra: str | None) -> dict[str, Any]:
        pairs = self._by_mask.get(present)
        if pairs is None:
            pairs = self._by_mask[present] = tuple((i, n) for i, n in enumerate(NAMES) if present >> i & 1)
        out = {name: values[i] for i, name in pairs}
        if extra:
            out.update(orjson.loads(extra))
        return out


def select_sql(alias: str = "") -> str:
    """``present, "feature", ..., extra`` (qualified by ``alias`` when given), for SELECTs."""
    p = f"{alias}." if alias else ""
    return ", ".join([f"{p}present"] + [f'{p}"{n}"' for n in NAMES] + [f"{p}extra"])


def json_sql(alias: str = "") -> str:
    """A SQL expression giving the features dict as JSON text (as the windows API answers it),
    for exports that keep one ``features`` column.

    The known keys come from a map (absent keys filtered out by the mask); ``extra`` is joined
    as text rather than merged (a JSON merge patch would drop its null values).
    """
    p = f"{alias}." if alias else ""
    entries = ", ".join(f"{{'k': '{n}', 'v': to_json({p}\"{n}\"), 'p': ({p}present >> {i}) & 1 = 1}}"
                        for i, n in enumerate(NAMES))
    known = (f"to_json(map_from_entries(list_transform(list_filter([{entries}], lambda e: e.p), "
             f"lambda e: {{'key': e.k, 'value': e.v}})))::VARCHAR")
    return (f"(CASE WHEN {p}extra IS NULL THEN {known} WHEN {p}present = 0 THEN {p}extra "
            f"ELSE left({known}, -1) || ',' || substr({p}extra, 2) END)")


def rollup_aggregates(alias: str = "") -> str:
    """The aggregates of a rolled-up window, named and ordered as :func:`select_sql`: the union
    of the masks, the mean of each float (to ROLLUP_DECIMALS), the most common value of the
    others, one ``extra``."""
    p = f"{alias}." if alias else ""
    aggs = [f"bit_or({p}present) AS present"]
    for name, kind in FEATURES:
        if kind == "DOUBLE":
            aggs.append(f'round(avg({p}"{name}"), {ROLLUP_DECIMALS.get(name, _DEFAULT_DECIMALS)}) AS "{name}"')
        else:
            aggs.append(f'mode({p}"{name}") AS "{name}"')
    aggs.append(f"any_value({p}extra) AS extra")
    return ", ".join(aggs)


def number_sql(name: str, alias: str = "") -> str:
    """A SQL DOUBLE of one feature whether it sits in its column or (an int, say) in ``extra``."""
    p = f"{alias}." if alias else ""
    return f"coalesce({p}\"{name}\"::DOUBLE, TRY_CAST(json_extract_string({p}extra, '$.{name}') AS DOUBLE))"
