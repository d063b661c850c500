"""Stack profiles as counts of samples per category: the leaf functions or the modules
(files) of a process's own-work stacks, and their long tail pooled (the segmenter compares
two sides of a split on them, segment.novel_share)."""
from __future__ import annotations


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
