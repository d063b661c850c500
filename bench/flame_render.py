"""Flame graph and diff rendering: the current iterative builders against the recursive ones
they replaced (bench/_render_before.py), side by side, on the bench store's stacks.

usage: python bench/flame_render.py [--repeats 10]

The profiles are what /api/flamegraph reads from the bench store (bench/store_24h.py): every
stack of the workload (bench/_workload.py: the H100 recording's py-spy windows plus the idle
threads' waits) weighted as a day of samples; the same stacks under a 240-frame import prefix
(vLLM's start-up stacks reach 243 frames); and a 50,000-node profile (the default
``max_nodes``). Each row is the best of ``repeats`` runs of building the tree and encoding it
to the bytes the route sends, on one thread; "before" on the deep stacks fails as the route
did (orjson: "Recursion limit reached", HTTP 500).
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _render_before as before  # noqa: E402
from _workload import WAIT_STACKS, Workload  # noqa: E402

from infersight.storage import render  # noqa: E402
from infersight.storage.stacks import Profile  # noqa: E402

MAX_NODES = 50_000
SECONDS = 86_400


def workload_profile(extra_depth: int, rate_hz: int = 20, seconds: int = SECONDS) -> Profile:
    """Every stack of the bench workload with a day's worth of samples (see the docstring)."""
    work = Workload(extra_depth=extra_depth)
    stacks: dict = {}
    per_window = seconds / len(work.windows)
    for w in work.windows:
        for frames, p in zip(w.stacks, w.probs):
            key = tuple((f.function, f.file, f.line) for f in frames)
            stacks[key] = stacks.get(key, 0.0) + round(p * rate_hz * w.active_share * per_window)
    for frames in WAIT_STACKS:
        stacks[tuple((f.function, f.file, f.line) for f in frames)] = float(rate_hz * seconds)
    return Profile(0, seconds, {k: v for k, v in stacks.items() if v > 0})


def wide_profile(nodes: int = MAX_NODES, seed: int = 1) -> Profile:
    """A random call tree of about ``nodes`` nodes (8,000 stacks 10-40 frames deep)."""
    rng = random.Random(seed)
    base = [(f"f{i}", f"pkg/mod{i % 50}.py", i) for i in range(2000)]
    stacks: dict = {}
    while True:
        depth = rng.randint(10, 40)
        path = tuple(rng.choice(base[j * 40:(j + 1) * 40]) if rng.random() < 0.3 else base[j * 40] for j in range(depth))
        stacks[path] = stacks.get(path, 0.0) + rng.randint(1, 100)
        if len(stacks) % 500 == 0 and render.flame_tree(Profile(0, 1, stacks), max_nodes=nodes + 1)["nodes"] > nodes:
            return Profile(0, 1, stacks)


def best_ms(fn, repeats: int) -> tuple[float | None, int, str]:
    """(best time in ms or None when it raised, response bytes, error)."""
    best, size = float("inf"), 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        try:
            body = fn()
        except (orjson.JSONEncodeError, RecursionError) as exc:
            return None, 0, f"{type(exc).__name__}: {exc}"
        best = min(best, time.perf_counter() - t0)
        size = len(body)
    return best * 1e3, size, ""


def split(profile: Profile) -> tuple[Profile, Profile]:
    """Two halves of a profile with different weights (a diff's baseline and comparison)."""
    items = list(profile.stacks.items())
    a = {k: v for i, (k, v) in enumerate(items) if i % 3}
    b = {k: v * (1.5 if i % 2 else 0.7) for i, (k, v) in enumerate(items) if i % 4}
    return Profile(0, 1, a), Profile(0, 1, b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    extra = {"from": 0.0, "to": float(SECONDS), "weight": "samples", "total": 0}
    cases = [("bench workload, 24 h", workload_profile(0)),
             ("bench workload under 240 import frames", workload_profile(240)),
             (f"random tree, {MAX_NODES:,} nodes", wide_profile())]
    print(f"{'query':52s} {'stacks':>7s} {'nodes':>7s} {'before ms':>10s} {'now ms':>8s} {'ratio':>6s} "
          f"{'before bytes':>13s} {'now bytes':>11s}")
    for name, prof in cases:
        nodes = render.flame_tree(prof, max_nodes=MAX_NODES)["nodes"]
        rows = [("flame graph, " + name, prof,
                 lambda p=prof: before.flame_body(p, MAX_NODES, extra),
                 lambda p=prof: render.flame_json(p, max_nodes=MAX_NODES, extra=extra))]
        a, b = split(prof)
        dx = {"a_total": render.number(a.total), "b_total": render.number(b.total)}
        rows.append(("diff, " + name, prof,
                     lambda a=a, b=b: before.diff_body(a, b, dx),
                     lambda a=a, b=b: render.diff_json(a, b, max_nodes=MAX_NODES,
                                                       extra={**dx, "top_changes": render.profile_changes(a, b)})))
        for label, p, old, new in rows:
            t_old, b_old, err = best_ms(old, args.repeats)
            t_new, b_new, _ = best_ms(new, args.repeats)
            old_text = f"{t_old:10.1f}" if t_old is not None else f"{'fails':>10s}"
            ratio = f"{t_new / t_old:6.2f}" if t_old else f"{'-':>6s}"
            print(f"{label:52s} {len(p.stacks):7,d} {nodes:7,d} {old_text} {t_new:8.1f} {ratio} "
                  f"{b_old:13,d} {b_new:11,d}" + (f"   (before: {err})" if err else ""))


if __name__ == "__main__":
    main()
