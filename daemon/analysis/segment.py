"""Cuts one GPU's timeline into episodes: stretches where the workload stays the same.

Step one of the analysis (segment -> judge -> attribute -> explain). Each second arrives as
an :class:`Observation`: a hard ``key`` (the lifecycle state) and soft features, numeric
(offered load, token mix, GPU activity, which serving processes report and their CPU, a
neighbour's activity) and categorical (each serving process's own-work
samples by module). A change of key ends an episode at once. Soft features end one only
when a change is both material and beyond noise:

- material: the means on the two sides of a split differ by at least the feature's
  ``threshold`` (a factor of ~1.7 in requests in flight, 15 points of SM, ...); for a
  profile, a share of one side's samples runs code the other side hardly runs
  (:func:`novel_share`: new code, not the same code in other proportions);
- beyond noise: the difference is at least ``z`` standard errors of the per-second values
  (their pooled spread over both sides), so one odd second cannot cut an episode;
- a step, not a trend: two flat sides must explain the feature much better than a straight
  line through the stretch (``RAMP_RATIO``), so a queue growing behind a slow engine stays
  one episode.

The split point is where the difference is largest (binary segmentation over the open
episode's seconds), so a boundary lands on the change, not where it was first noticed. A
split needs ``min_len`` seconds on each side: an episode is confirmed ``min_len`` seconds
after its change. The right side stays open and is searched again as seconds arrive; the
left side is searched too (a piece fed at once may hold several changes).

Pure: no storage, no clock. Works on seconds in time order, one GPU per instance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from infersight.daemon.analysis.profiles import top_categories

PROFILE_CATEGORIES = 12      # the categories a profile is compared on; the rest is one
SCORE_CAP = 4.0              # one feature's weight in placing a split, at most
# a step must leave at most this share of the squared residual a straight line leaves: a
# queue that grows second by second (requests piling up behind a slow engine) is one
# workload with a trend, not a series of steps
RAMP_RATIO = 0.5
NOVEL_RATIO = 0.1            # code another side runs at most a tenth as much is new to it
NOVEL_MIN_SAMPLES = 10       # a category needs this many samples to count as new code
OTHER = "(other)"


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """How one soft feature ends an episode. ``threshold`` is in the feature's unit (for a
    profile: total-variation distance above the sampling noise); ``min_count`` is how many
    seconds (numeric) or samples (profile) each side needs before the feature may split."""

    threshold: float
    min_count: int = 2
    absent: float | None = None      # the value of a second that lacks the feature (None: skip it)


@dataclass(frozen=True, slots=True)
class Observation:
    """One second of one GPU as the segmenter sees it. ``numeric`` and ``profiles`` hold
    only the features present that second; a feature's spec is looked up by its name's
    prefix up to ``:`` (``cpu:1234`` -> ``cpu``)."""

    t: int
    key: tuple
    numeric: dict[str, float] = field(default_factory=dict)
    profiles: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Split:
    """Where an episode ends: the first second of the next, and the feature that decided."""

    t: int
    reason: str
    score: float


def spec_for(name: str, specs: dict[str, FeatureSpec]) -> FeatureSpec | None:
    return specs.get(name.split(":", 1)[0])


class Segmenter:
    """Online segmentation of one GPU's seconds (module docstring).

    ``feed`` takes the seconds of a tick in time order and returns the splits confirmed by
    them, oldest first; ``open_since`` is the first second of the episode still open. Seconds
    older than the open episode are forgotten; at most ``max_len`` seconds are kept open (a
    longer stretch is closed there with reason ``length``: it bounds memory and work)."""

    def __init__(self, specs: dict[str, FeatureSpec], *, min_len: int = 3, z: float = 4.0,
                 max_len: int = 600) -> None:
        self.specs = specs
        self.min_len = min_len
        self.z = z
        self.max_len = max_len
        self.buffer: list[Observation] = []

    def open_since(self) -> int | None:
        return self.buffer[0].t if self.buffer else None

    def feed(self, seconds: list[Observation]) -> list[Split]:
        splits: list[Split] = []
        for obs in seconds:
            if self.buffer and obs.key != self.buffer[-1].key:
                splits += self._settle(self.buffer)
                splits.append(Split(obs.t, "key", math.inf))
                self.buffer = []
            self.buffer.append(obs)
        splits += self._settle(self.buffer, keep_open=True)
        if len(self.buffer) > self.max_len:
            # close all but the newest seconds: the next episode starts with a few to judge
            cut = self.buffer[-self.min_len]
            splits.append(Split(cut.t, "length", 0.0))
            self.buffer = self.buffer[-self.min_len:]
        return splits

    def _settle(self, seconds: list[Observation], keep_open: bool = False) -> list[Split]:
        """The confirmed splits inside ``seconds`` (recursively); with ``keep_open`` the
        buffer is cut to the last piece."""
        found = sorted(self._search(seconds), key=lambda s: s.t)
        if keep_open and found:
            last = found[-1].t
            self.buffer = [o for o in self.buffer if o.t >= last]
        return found

    def _search(self, seconds: list[Observation]) -> list[Split]:
        if len(seconds) < 2 * self.min_len:
            return []
        best = best_split(seconds, self.specs, self.min_len, self.z)
        if best is None:
            return []
        k, split = best
        return self._search(seconds[:k]) + [split] + self._search(seconds[k:])


def best_split(seconds: list[Observation], specs: dict[str, FeatureSpec], min_len: int,
               z: float) -> tuple[int, Split] | None:
    """The index and Split of the strongest material, significant change in ``seconds``, or
    None. Each side keeps at least ``min_len`` seconds. A split point qualifies when one
    feature scores at least 1 there; among those, the point where the features together
    score most wins (each capped at ``SCORE_CAP``): a transition second goes to the side the
    most features put it on, not to the side of the one feature that moved most."""
    n = len(seconds)
    total = [0.0] * (n + 1)
    top = [0.0] * (n + 1)
    reasons = [""] * (n + 1)
    scorers = []
    for name, (values, present) in _numeric_series(seconds, specs).items():
        spec = spec_for(name, specs)
        if spec is not None:
            scorers.append((name, _score_numeric(values, present, spec, min_len, z)))
    for name, series in _profile_series(seconds).items():
        spec = spec_for(name, specs)
        if spec is not None:
            scorers.append((name, _score_profile(series, spec, min_len)))
    # candidates run to the last second but one: a change seen only in the newest seconds must
    # not be placed early just because its true place leaves the right side short; then it waits
    for name, scores in scorers:
        for k, score in scores.items():
            total[k] += min(score, SCORE_CAP)
            if score > top[k]:
                top[k], reasons[k] = score, name
    candidates = [k for k in range(min_len, n - 1) if top[k] >= 1.0]
    if not candidates:
        return None
    k = max(candidates, key=lambda i: (total[i], -i))
    if k > n - min_len:
        return None          # not confirmed yet: fewer than min_len seconds after it
    return k, Split(seconds[k].t, reasons[k], round(top[k], 3))


def _numeric_series(seconds: list[Observation],
                    specs: dict[str, FeatureSpec]) -> dict[str, tuple[list[float], list[bool]]]:
    names = sorted({name for o in seconds for name in o.numeric})
    out = {}
    for name in names:
        spec = spec_for(name, specs)
        absent = spec.absent if spec is not None else None
        if absent is None:
            values = [o.numeric.get(name, 0.0) for o in seconds]
            present = [name in o.numeric for o in seconds]
        else:
            values = [o.numeric.get(name, absent) for o in seconds]
            present = [True] * len(seconds)
        out[name] = (values, present)
    return out


def _score_numeric(values: list[float], present: list[bool], spec: FeatureSpec, min_len: int,
                   z: float) -> dict[int, float]:
    """Split index k (before second k) -> |mean left - mean right| / threshold, where the
    difference is material and significant."""
    n = len(values)
    c = [0] * (n + 1)
    s = [0.0] * (n + 1)
    q = [0.0] * (n + 1)
    for i, (v, p) in enumerate(zip(values, present)):
        c[i + 1] = c[i] + (1 if p else 0)
        s[i + 1] = s[i] + (v if p else 0.0)
        q[i + 1] = q[i] + (v * v if p else 0.0)
    # the spread floor: a flat signal is still read to a few hundredths of its threshold
    floor = spec.threshold / 20.0
    scores: dict[int, float] = {}
    ramp = _ramp_residual(values, present) + c[n] * floor * floor
    for k in range(min_len, n - 1):
        cl, cr = c[k], c[n] - c[k]
        if cl < spec.min_count or cr < spec.min_count:
            continue
        sl, sr = s[k], s[n] - s[k]
        ml, mr = sl / cl, sr / cr
        diff = abs(ml - mr)
        if diff < spec.threshold:
            continue
        ssq = (q[k] - cl * ml * ml) + ((q[n] - q[k]) - cr * mr * mr)
        sd = max(math.sqrt(max(ssq, 0.0) / max(cl + cr - 2, 1)), floor)
        if diff < z * sd * math.sqrt(1.0 / cl + 1.0 / cr):
            continue
        if ssq + c[n] * floor * floor > RAMP_RATIO * ramp:
            continue   # a trend explains the stretch as well as a step: a queue growing, not a new load
        scores[k] = diff / spec.threshold
    return scores


def _ramp_residual(values: list[float], present: list[bool]) -> float:
    """The squared residual of a least-squares line through the present values."""
    pts = [(i, v) for i, (v, p) in enumerate(zip(values, present)) if p]
    n = len(pts)
    if n < 3:
        return 0.0
    mi = sum(i for i, _ in pts) / n
    mv = sum(v for _, v in pts) / n
    sii = sum((i - mi) ** 2 for i, _ in pts)
    siv = sum((i - mi) * (v - mv) for i, v in pts)
    svv = sum((v - mv) ** 2 for _, v in pts)
    return max(0.0, svv - (siv * siv / sii if sii else 0.0))


def _profile_series(seconds: list[Observation]) -> dict[str, list[dict[str, int]]]:
    names = sorted({name for o in seconds for name in o.profiles})
    return {name: [o.profiles.get(name, {}) for o in seconds] for name in names}


def _score_profile(series: list[dict[str, int]], spec: FeatureSpec, min_len: int) -> dict[int, float]:
    """Split index k -> the share of one side's samples in code the other side hardly runs
    (:func:`novel_share`), in units of ``threshold``; only where it reaches half of it."""
    n = len(series)
    total: dict[str, int] = {}
    for counts in series:
        for key, v in counts.items():
            total[key] = total.get(key, 0) + v
    # the categories of the whole stretch, its long tail pooled (the same for every second)
    keep = set(top_categories(total, PROFILE_CATEGORIES)) - {OTHER}
    if len(keep) < len(total):
        series = [_fold(counts, keep) for counts in series]
        total = _fold(total, keep)
    grand = sum(total.values())
    scores: dict[int, float] = {}
    if grand < 2 * spec.min_count:
        return scores
    left: dict[str, int] = {}
    left_n = 0
    for k in range(1, n):
        for key, v in series[k - 1].items():
            left[key] = left.get(key, 0) + v
            left_n += v
        if k < min_len or k > n - 2:
            continue
        right_n = grand - left_n
        if left_n < spec.min_count or right_n < spec.min_count:
            continue
        right = {key: total[key] - left.get(key, 0) for key in total}
        novel = max(novel_share(right, left), novel_share(left, right))
        if novel >= 0.5 * spec.threshold:
            scores[k] = novel / spec.threshold
    return scores


def novel_share(new: dict[str, int], old: dict[str, int]) -> float:
    """The share of ``new``'s samples in categories that ``old`` runs at most a tenth as much
    (by share), counting only categories with ``NOVEL_MIN_SAMPLES`` samples in ``new``: new
    code running (a tokenizer beside the model, detokenizing logprobs in an API server), not
    the same code in other proportions (a forward pass whose attention warms up first)."""
    n_new, n_old = sum(new.values()), sum(old.values())
    if not n_new or not n_old:
        return 0.0
    hit = 0
    for key, v in new.items():
        if key == OTHER or v < NOVEL_MIN_SAMPLES:
            continue
        if old.get(key, 0) / n_old <= NOVEL_RATIO * v / n_new:
            hit += v
    return hit / n_new


def _fold(counts: dict[str, int], keep: set[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, v in counts.items():
        k = key if key in keep else OTHER
        out[k] = out.get(k, 0) + v
    return out
