"""A recording with deep stacks: every stack of a recording under ``depth`` extra frames.

``deepen(src, dst, depth)`` copies a recording in the layout of tests/fixtures/h100-scenario/
and puts ``depth`` synthetic frames (``deep_K (deep/frames.py:K)``) between each stack's
thread label and its first frame, in every ``stacks/*.raw.jsonl.gz`` window (the windows
``infersight replay`` reads). The rest (GPU, engine metrics, labels) is copied as is, so a
replay of the copy has the original's classes and findings, with stacks ``depth`` deeper.
"""
from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path


def deepen(src: Path, dst: Path, depth: int) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    prefix = ";".join(f"deep_{k} (deep/frames.py:{k + 1})" for k in range(depth))
    for path in (dst / "stacks").glob("*.raw.jsonl.gz"):
        out = []
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                w = json.loads(line)
                if w.get("raw"):
                    lines = []
                    for stack in w["raw"].splitlines():
                        if stack.startswith("thread (") and ";" in stack:
                            head, rest = stack.split(";", 1)
                            stack = f"{head};{prefix};{rest}"
                        lines.append(stack)
                    w["raw"] = "\n".join(lines) + "\n"
                out.append(json.dumps(w))
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write("\n".join(out) + "\n")
    return dst
