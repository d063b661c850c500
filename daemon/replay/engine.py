"""Replay of a recording's engine scrapes through the live collector's parser and normalizer.

A recording's ``engine_metrics.jsonl.gz`` holds one JSON line per scrape: ``{"t", "text"}``
(raw exposition) or ``{"t", "error"}`` (the recorder's failed scrape), with ``latency_s`` where
the recorder timed the scrape (bench/real_engine/record.py: ``t`` is when it asked). As live,
a timed scrape's records are stamped when the answer came (``t + latency_s``) and the latency
is the ``scrape_latency_seconds`` signal. :func:`replay_engine_lines`
turns those lines into the same records the live :class:`~.collectors.engines.EngineCollector`
would have produced at those times, one :class:`~.model.Batch` per scrape, with the
recording's ``t`` as the clock. It is pure: no I/O, no wall clock.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Iterable, Iterator

from infersight.daemon.engines.ingest import EndpointIngest
from infersight.storage.model import Batch, EngineSample

COLLECTOR = "engines"


def replay_engine_lines(lines: Iterable[str | bytes], *, endpoint: str = "replay", quantile_window_s: float = 10.0,
                        max_series: int = 5000, keep_raw: bool = True) -> Iterator[Batch]:
    """One Batch per recorded scrape, in the order given (the recording's order).

    ``endpoint`` is the name the records carry. Recorded scrape errors, unreadable scrapes and
    bad JSON lines go to ``Batch.errors`` (a bad JSON line to the next scrape's batch, having
    no time of its own). ``keep_raw=False`` leaves the raw series out.
    """
    ingest = EndpointIngest(endpoint, quantile_window_s, max_series)
    pending: list[str] = []
    last_t: float | None = None
    for number, line in enumerate(lines, 1):
        if isinstance(line, bytes):
            line = line.decode("utf-8", errors="replace")
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            t = float(record["t"])
        except (ValueError, TypeError, KeyError):
            pending.append(f"{endpoint}: recording line {number}: not a scrape record")
            continue
        latency = record.get("latency_s")
        if isinstance(latency, (int, float)) and not isinstance(latency, bool) and 0 <= latency < 3600:
            t += latency
        else:
            latency = None
        last_t = t
        batch = Batch(collector=COLLECTOR, t=t, errors=pending)
        pending = []
        text = record.get("text")
        if not isinstance(text, str):
            batch.errors.append(f"{endpoint}: {record.get('error') or 'scrape without text'}")
            yield batch
            continue
        result = ingest.ingest(t, text)
        if not result.readable:
            batch.errors.append(f"{endpoint}: not Prometheus text (no readable sample in {result.bad_lines} lines)")
        elif result.bad_lines:
            batch.errors.append(f"{endpoint}: {result.bad_lines} unreadable lines (first: {result.bad_line_examples[0]})")
        batch.engine_samples = result.engine_samples
        if latency is not None and result.readable:
            batch.engine_samples.append(EngineSample(t, endpoint, result.engines[0] if result.engines else "", "",
                                                     "scrape_latency_seconds", float(latency)))
        batch.histogram_deltas = result.histogram_deltas
        if keep_raw:
            batch.raw_series = result.raw_series
        yield batch
    if pending:
        yield Batch(collector=COLLECTOR, t=last_t if last_t is not None else 0.0, errors=pending,
                    no_data=None if last_t is not None else "no readable scrape in the recording")


def read_lines(path: str | Path) -> Iterator[str]:
    """The lines of a recording file, gzip-compressed (``.gz``) or not."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
        yield from fh
