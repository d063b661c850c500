"""Splits a starved period into episodes: one finding per behaviour, not per stretch of time.

A gap run already ends when its class changes. Within one class, a new episode starts when:

- the culprit changes: another process or thread starves the GPU;
- the culprit's leaf profile moves, second by second: the total-variation distance between
  this second's distribution of own-work leaf frames and the episode's running distribution
  exceeds what sampling noise alone gives (:func:`noise_tv`: 0.22 for 35 samples over 12
  equally likely leaves; 0.4-0.6 measured between seconds of one real vLLM phase, whose
  profiles have long tails of rare leaves, against 0.75-1.0 at its phase changes) by
  ``margin``, for ``confirm_s`` consecutive seconds;
- the culprit's module profile moves, over a few seconds: the last ``window_s`` seconds
  pooled, leaves summed by file, differ from the episode's by-file profile by more than their
  noise plus ``window_margin``, for ``confirm_s`` consecutive seconds. This catches a module
  joining with a share spread over many rare leaves, lost in the per-second noise (tokenizer
  code beside model code in real transformers, tests/fixtures/hf-transformers). At 20 own
  samples a second over a long tail: one false split in 8 simulated hours, a 30 % shift found
  within 3 s (tests/test_analysis_mechanisms.py);
- the load it serves changes by ``load_factor`` or more (requests in flight, e.g. 128
  streams giving way to one: the same code at another scale is another behaviour).

Distributions, not a single top leaf, so two seconds of one workload with different top
leaves stay one episode. A new episode first settles for ``settle_s`` seconds, learning its
profile fast and never splitting, so the seconds of a transition do not each start an
episode of their own. The label it returns (``pid:tid:episode``) is what the run tracker
splits on.
"""
from __future__ import annotations

import math
from collections import deque

MIN_SAMPLES = 8


def noise_tv(profile: dict[str, float], n: int) -> float:
    """Expected total-variation distance between ``profile`` and an ``n``-sample draw from it
    (normal approximation of each leaf's count: E|X - np| = sqrt(2 n p (1 - p) / pi))."""
    total = sum(profile.values())
    if not total or not n:
        return 1.0
    return 0.5 * sum(math.sqrt(2 * (v / total) * (1 - v / total) / (math.pi * n)) for v in profile.values())


def tv_distance(a: dict[str, float], b: dict[str, float]) -> float:
    """Total-variation distance of two distributions given as (unnormalised) weights."""
    sa, sb = sum(a.values()), sum(b.values())
    if not sa or not sb:
        return 0.0
    return 0.5 * sum(abs(a.get(k, 0.0) / sa - b.get(k, 0.0) / sb) for k in a.keys() | b.keys())


def by_file(leaves: dict[str, float]) -> dict[str, float]:
    """Leaf weights (``file:function`` keys) summed by file: the module a sample ran in."""
    out: dict[str, float] = {}
    for key, v in leaves.items():
        f = key.rpartition(":")[0]
        out[f] = out.get(f, 0.0) + v
    return out


class EpisodeTracker:
    def __init__(self, margin: float = 0.3, confirm_s: int = 2, memory: float = 0.8, settle_s: int = 3,
                 load_factor: float = 4.0, window_s: int = 4, window_margin: float = 0.15) -> None:
        self.margin, self.confirm_s, self.memory, self.settle_s = margin, confirm_s, memory, settle_s
        self.load_factor = load_factor
        self.window_s, self.window_margin = window_s, window_margin
        self.window: deque[dict[str, int]] = deque()     # the last seconds' leaves, newest last
        self.files: dict[str, float] = {}                 # by-file profile of the seconds before them
        self.files_n = 0.0
        self.files_seconds = 0
        self.window_moved = 0      # consecutive seconds the window test held
        self.load: float | None = None
        self.settling = 0
        self.who: tuple[int, int] | None = None
        self.profile: dict[str, float] = {}
        self.number = 0
        self.differing = 0
        self.pending: dict[str, float] = {}

    def label(self, pid: int, tid: int, leaves: dict[str, int], load: float | None = None) -> str:
        """The episode label of one culprit second (``leaves``: own-work samples per leaf;
        ``load``: requests in flight, None when the engine says nothing)."""
        if (pid, tid) != self.who:
            self._start((pid, tid), leaves)
            self.load = load
        elif self.settling > 0:
            self.settling -= 1
            self._blend(leaves, memory=0.5)
            self._blend_load(load, 0.5)
        elif self._window_moved(leaves):
            self.window_moved += 1
            if self.window_moved >= self.confirm_s:
                self._start((pid, tid), self._pooled())
                self.load = load
        elif sum(leaves.values()) >= MIN_SAMPLES and self.profile:
            n = sum(leaves.values())
            if (tv_distance(leaves, self.profile) > min(1.0, noise_tv(self.profile, n)) + self.margin
                    or self._load_changed(load)):
                self.differing += 1
                for k, v in leaves.items():
                    self.pending[k] = self.pending.get(k, 0.0) + v
                if self.differing >= self.confirm_s:
                    self._start((pid, tid), self.pending)
                    self.load = load
            else:
                self.differing = 0
                self.pending = {}
                self._blend(leaves)
                self._blend_load(load, self.memory)
        else:
            self._blend(leaves)
            self._blend_load(load, self.memory)
        return f"{pid}:{tid}:{self.number}"

    def _window_moved(self, leaves: dict[str, int]) -> bool:
        """Whether the last ``window_s`` seconds, pooled and summed by file, moved away from the
        episode's by-file profile by more than their sampling noise plus ``window_margin``. A
        shift spread over many rare leaves (tokenizer code joining model code) is lost in the
        per-second noise of a long-tailed leaf profile; by file and over a few seconds the
        noise shrinks while the shift stays. A second leaving the window joins the profile."""
        self.window.append(dict(leaves))
        while len(self.window) > self.window_s:
            self._blend_files(self.window.popleft())
        if len(self.window) < self.window_s or self.files_seconds < self.window_s:
            self.window_moved = 0
            return False
        pooled = by_file(self._pooled())
        n = sum(pooled.values())
        # both sides are samples: the noise of their difference, at the harmonic sample count
        n_eff = 1.0 / (1.0 / n + 1.0 / self.files_n)
        moved = (n >= MIN_SAMPLES * self.window_s
                 and tv_distance(pooled, self.files) > min(1.0, noise_tv(self.files, n_eff)) + self.window_margin)
        if not moved:
            self.window_moved = 0
        return moved

    def _pooled(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for leaves in self.window:
            for k, v in leaves.items():
                out[k] = out.get(k, 0.0) + v
        return out

    def _blend_files(self, leaves: dict[str, int]) -> None:
        files = by_file(leaves)
        total = sum(files.values())
        if not total:
            return
        self.files_seconds += 1
        m = self.memory if self.files else 0.0
        self.files_n = m * self.files_n + total      # the samples the profile stands on (decayed)
        norm = sum(self.files.values()) or 1.0
        self.files = {k: m * self.files.get(k, 0.0) / norm + (1 - m) * files.get(k, 0.0) / total
                      for k in self.files.keys() | files.keys()}

    def _load_changed(self, load: float | None) -> bool:
        if load is None or self.load is None:
            return False
        ratio = (load + 1.0) / (self.load + 1.0)
        return ratio >= self.load_factor or ratio <= 1.0 / self.load_factor

    def _blend_load(self, load: float | None, memory: float) -> None:
        if load is not None:
            self.load = load if self.load is None else memory * self.load + (1 - memory) * load

    def _start(self, who: tuple[int, int], leaves: dict[str, float]) -> None:
        self.who = who
        self.number += 1
        self.profile = {k: float(v) for k, v in leaves.items()}
        self.differing = 0
        self.pending = {}
        self.settling = self.settle_s
        self.window = deque()
        self.files = {}
        self.files_n = 0.0
        self.files_seconds = 0
        self.window_moved = 0      # consecutive seconds the window test held

    def _blend(self, leaves: dict[str, int], memory: float | None = None) -> None:
        total = sum(leaves.values())
        if not total:
            return
        norm = sum(self.profile.values()) or 1.0
        keys = self.profile.keys() | leaves.keys()
        m = self.memory if memory is None else memory
        self.profile = {k: m * self.profile.get(k, 0.0) / norm + (1 - m) * leaves.get(k, 0) / total for k in keys}
