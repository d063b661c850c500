"""Distances between stack profiles (counts of samples per category), and their noise.

A profile here is a distribution of samples over categories: the leaf functions or the
modules (files) of a process's own-work stacks. Two profiles drawn from the same behaviour
still differ by sampling noise, which :func:`noise_tv` estimates, so a change is only called
when the distance exceeds that noise by a margin.
"""
from __future__ import annotations

import math


def noise_tv(profile: dict[str, float], n: float) -> float:
    """Expected total-variation distance between ``profile`` and an ``n``-sample draw from it
    (normal approximation of each category's count: E|X - np| = sqrt(2 n p (1 - p) / pi)).
    For two draws of sizes a and b, pass their harmonic size 1 / (1/a + 1/b)."""
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


def top_categories(counts: dict[str, int], keep: int, other: str = "(other)") -> dict[str, int]:
    """``counts`` with only its ``keep`` largest categories, the rest pooled under ``other``:
    a long tail of rare categories adds noise and work, not evidence."""
    if len(counts) <= keep:
        return dict(counts)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    out = dict(ranked[:keep])
    rest = sum(v for _, v in ranked[keep:])
    if rest:
        out[other] = out.get(other, 0) + rest
    return out
