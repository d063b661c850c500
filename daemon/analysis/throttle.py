"""Which serving process throttles a starved GPU: decided from where the requests queue.

Step three of the analysis (segment -> judge -> attribute -> explain), for starved episodes.
A process at 100 % of a core is not the throttle by itself: an engine core spinning in a
CUDA sync or waiting on a slow front end also reads 100 %. Where the work waits says which
stage of the pipeline is short of capacity:

- the front end (API server) holds the requests it accepted but has not handed to the
  engine yet, or whose answers it has not sent: ``http_in_flight - engine_held`` (Little's
  law on the HTTP middleware's latency sum minus the engine's own queue and inference
  times, engines/specs.py);
- the engine holds the requests it runs and queues.

When the front end holds at least ``throttle_front_share`` of the requests in flight, the
front end is the throttle (many clients, few requests in the engine); otherwise the engine
side is (every request admitted). The busy processes of the throttling stage come first,
the other busy ones after them. Without the pipeline figures (an engine that does not
export them, a single-process engine) the order is by own-work CPU alone, and the evidence
says so (``decided_by: cpu``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infersight.daemon.analysis.judge import ProcessSummary, Verdict
from infersight.daemon.config.load import AnalysisConfig

FRONT_END_ROLES = ("api_server", "frontend", "router", "tokenizer")
# requests in flight below which the pipeline figures are not read (one request's noise)
MIN_IN_FLIGHT = 1.0


@dataclass(frozen=True)
class Throttle:
    """The busy processes, the throttling one first; how that was decided, and the figures."""

    order: tuple[ProcessSummary, ...]
    decided_by: str                     # "queueing" or "cpu"
    front_share: float | None           # share of the requests in flight the front end holds
    http_in_flight: float | None
    engine_held: float | None

    @property
    def first(self) -> ProcessSummary:
        return self.order[0]

    def evidence(self) -> dict[str, Any]:
        return {"decided_by": self.decided_by,
                "front_end_share": None if self.front_share is None else round(self.front_share, 3),
                "requests_at_front_end": _r(self.http_in_flight), "requests_in_engine": _r(self.engine_held),
                "order": [{"pid": p.pid, "role": p.role, "own_cpu_pct": _r(p.own_cpu)} for p in self.order]}


def front_share(verdict: Verdict) -> tuple[float | None, float | None, float | None]:
    """(share of in-flight requests held by the front end, requests at the front end, requests
    in the engine); None where the figures are missing."""
    http = verdict.means.get("http_in_flight")
    engine = verdict.means.get("engine_held")
    if engine is None:
        engine = verdict.means.get("in_flight")
    if http is None or engine is None or http < MIN_IN_FLIGHT:
        return None, http, engine
    return max(0.0, http - engine) / http, http, engine


def find_throttle(verdict: Verdict, cfg: AnalysisConfig) -> Throttle | None:
    """The throttle of a starved episode (module docstring); None when no serving process
    is busy on its own work (then the GPU waits on something else: a stall)."""
    busy = sorted((p for p in verdict.procs if p.own_cpu is not None and p.own_cpu >= cfg.cpu_busy_pct),
                  key=lambda p: (-(p.own_cpu or 0.0), p.pid))
    if not busy:
        return None
    share, http, engine = front_share(verdict)
    roles = {p.role for p in verdict.procs}
    pipeline = any(r in FRONT_END_ROLES for r in roles) and any(r not in FRONT_END_ROLES for r in roles)
    if share is None or not pipeline:
        return Throttle(tuple(busy), "cpu", share, http, engine)
    front = share >= cfg.throttle_front_share
    stage = [p for p in busy if (p.role in FRONT_END_ROLES) == front]
    if not stage:
        return Throttle(tuple(busy), "cpu", share, http, engine)
    return Throttle(tuple(stage + [p for p in busy if p not in stage]), "queueing", share, http, engine)


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 1)
