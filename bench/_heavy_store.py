"""A hostile store for the heavy-query bench: deep stacks and many distinct leaves.

``build(path, t_to)`` makes the schema with ``Store.open`` (so it is the agent's own) and
fills it with DuckDB's bulk SQL, since interning 332,000 distinct 5,000-frame stacks through
the writer would take hours:

- ``CHAINS`` call chains (64) that part after 8 shared frames and run ``DEPTH`` (4,990)
  frames deep, like start-up code under a deep import;
- under each chain's last frame, ``LEAVES_PER_CHAIN`` distinct leaves (5,200): one function
  each, 332,800 leaves in all, so the stack trie holds about 652,000 nodes and a flame graph
  of the whole store has as many distinct call paths as a bound can be hit with;
- one hour of samples ending at ``t_to``: every leaf sampled at least once, plus a hot few,
  spread over 8 threads of one process (about 360,000 rows).

Figures of the store are returned (node, leaf and sample counts, file size).
"""
from __future__ import annotations

import os
from pathlib import Path

import duckdb

from infersight.storage.store import Store

CHAINS = 64
SHARED = 8
DEPTH = 4_990
LEAVES_PER_CHAIN = 5_200
HOUR_S = 3600


def build(path: str, t_to: int, *, chains: int = CHAINS, depth: int = DEPTH, leaves_per_chain: int = LEAVES_PER_CHAIN,
          hot: int = 20) -> dict:
    """The store described in the module docstring at ``path``, its hour ending at ``t_to``
    (the shape is the arguments'; tests/test_heavy_queries.py builds a small one)."""
    for suffix in ("", ".wal"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Store.open(path, host="bench").close()           # the agent's schema, migrations applied
    con = duckdb.connect(path)
    try:
        con.execute("SET threads = 2")
        t0 = t_to - HOUR_S
        con.execute("INSERT INTO targets VALUES (1, 'bench', 4242, 1000.0, 'python -m deep.server', 'engine', "
                    "[0], ?, ?, NULL)", [t0, t_to])
        con.execute("INSERT INTO threads SELECT i, 1, 100 + i, 'worker-' || i FROM range(1, 9) t(i)")
        # frames: 1..SHARED shared, then CHAINS x DEPTH chain frames, then one per leaf
        con.execute(f"""INSERT INTO frames SELECT i, 'boot_' || i, 'boot.py', i, 'boot' FROM range(1, {SHARED + 1}) t(i)""")
        chain_frames = chains * depth
        con.execute(f"""INSERT INTO frames
            SELECT {SHARED} + 1 + c * {depth} + d, 'import_' || c || '_' || d, 'deep/chain_' || c || '.py', d + 1,
                   'deep.chain_' || c
            FROM range({chains}) a(c), range({depth}) b(d)""")
        leaf0 = SHARED + 1 + chain_frames
        leaves = chains * leaves_per_chain
        con.execute(f"""INSERT INTO frames
            SELECT {leaf0} + i, 'leaf_fn_' || i, 'pkg/mod_' || (i % 977) || '.py', 1 + i % 500, 'pkg'
            FROM range({leaves}) t(i)""")
        # nodes: the shared prefix is ids 1..SHARED, a chain's node of depth d the same id as its frame
        con.execute(f"""INSERT INTO stack_nodes SELECT i, i - 1, i, i FROM range(1, {SHARED + 1}) t(i)""")
        con.execute(f"""INSERT INTO stack_nodes
            SELECT {SHARED} + 1 + c * {depth} + d,
                   CASE WHEN d = 0 THEN {SHARED} ELSE {SHARED} + c * {depth} + d END,
                   {SHARED} + 1 + c * {depth} + d, least({SHARED} + 1 + d, 32767)
            FROM range({chains}) a(c), range({depth}) b(d)""")
        con.execute(f"""INSERT INTO stack_nodes
            SELECT {leaf0} + i, {SHARED} + ({depth} * (i // {leaves_per_chain})) + {depth}, {leaf0} + i,
                   least({SHARED} + {depth} + 1, 32767)
            FROM range({leaves}) t(i)""")
        # samples: every leaf once somewhere in the hour, and 20 hot leaves in every second
        con.execute(f"""INSERT INTO stack_samples
            SELECT {t0} + (i % {HOUR_S}), 1, 1 + (i % 8), {leaf0} + i, true, 1 + (i % 3)
            FROM range({leaves}) t(i)""")
        con.execute(f"""INSERT INTO stack_samples
            SELECT {t0} + s, 1, 1 + (h % 8), {leaf0} + h * 16411 % {leaves}, true, 5
            FROM range({HOUR_S}) a(s), range({hot}) b(h)""")
        con.execute("CHECKPOINT")
        counts = {name: con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
                  for name in ("frames", "stack_nodes", "stack_samples")}
    finally:
        con.close()
    counts.update(leaves=leaves, depth=SHARED + depth + 1, t_from=t0, t_to=t_to,
                  file_mb=round(os.path.getsize(path) / 2**20, 1))
    return counts
