"""The flame graph's ``waits`` filter (storage/waits.py, /api/flamegraph and /api/diff):
``show`` counts every sample, ``hide`` leaves out the pure waits (idle samples and stacks
whose leaf is a wait), ``only`` keeps nothing else. Checked on literal batches through the
API, and on the replayed H100 recording and the two real vLLM recordings: with waits hidden
no leaf of the tree is a wait."""
from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from infersight.daemon.analysis import threads
from infersight.storage import stacks, waits
from infersight.storage.model import Batch, Frame, GpuSample, StackSample, Target
from infersight.storage.store import Store
from infersight.web.app import create_app

T = 1_790_000_000
SECONDS = 5
MAIN = Frame("main", "/srv/engine.py", 1)
STEP = Frame("step", "/srv/engine.py", 20)
TOKENIZE = Frame("tokenize_slow_python", "/srv/engine.py", 40)
SERVE = Frame("serve_forever", "/usr/lib/python3.11/socketserver.py", 232)
SELECT = Frame("_PollLikeSelector.select", "/usr/lib/python3.11/selectors.py", 415)
SYNC = Frame("synchronize", "/venv/torch/cuda/__init__.py", 792)
FIXTURES = Path(__file__).parent / "fixtures"

# per second: (tid, thread, frames, active, count)
SAMPLES = [
    (1, "MainThread", (MAIN, STEP, TOKENIZE), True, 6),          # own work
    (1, "MainThread", (MAIN, STEP, SYNC), True, 2),              # a GPU wait: shown
    (2, "http", (MAIN, SERVE, SELECT), True, 3),                 # a wait py-spy called active
    (2, "http", (MAIN, SERVE, SELECT), False, 4),                # the same wait, idle
    (1, "MainThread", (MAIN, STEP, TOKENIZE), False, 1),         # idle in own code: a wait too
]


def test_the_patterns_are_the_analysis_patterns():
    """One list of wait leaves: the analysis splits samples with the filter's own patterns."""
    assert threads.WAIT_LEAF is waits.WAIT_LEAF


@pytest.mark.parametrize("path, wait", [
    ((MAIN, SERVE, SELECT), True),
    ((MAIN, STEP, TOKENIZE), False),
    ((MAIN, STEP, SYNC), False),
    ((Frame("sleep", "time", 0),), True),
    ((), False),
])
def test_wait_leaves(path, wait):
    """Stored paths are (function, file, line) tuples."""
    assert waits.is_wait_leaf(tuple((f.function, f.file, f.line) for f in path)) is wait


@pytest.fixture
def filled(store):
    target = Target("h", 100, 1.0, "python -m demo.engine", role="engine")
    for s in range(SECONDS):
        b = Batch("stacks", float(T + s), targets=[target])
        for tid, name, frames, active, n in SAMPLES:
            b.stack_samples.append(StackSample(T + s, 100, 1.0, tid, name, frames, active, n))
        store.submit(b)
    gpu = Batch("gpu", float(T))
    gpu.gpu_samples = [GpuSample(T + s + 0.5, 0, {"sm_util": 20.0}) for s in range(SECONDS)]
    store.submit(gpu)
    store.flush()
    return store


@pytest.fixture
async def client(aiohttp_client, make_config, filled):
    return await aiohttp_client(create_app(make_config(), filled, agent=None))


def expected(keep) -> Counter:
    out: Counter = Counter()
    for _, _, frames, active, n in SAMPLES:
        if keep(frames, active):
            out[tuple(f.function for f in frames)] += n * SECONDS
    return out


def leaf_values(tree) -> Counter:
    out: Counter = Counter()
    stack = [((), tree)]
    while stack:
        path, node = stack.pop()
        here = path + (node["name"],)
        own = node["value"] - sum(c["value"] for c in node["children"])
        if own > 1e-9:
            out[here[1:]] += own
        stack += [(here, c) for c in node["children"]]
    return out


def is_wait(frames, active) -> bool:
    return not active or frames[-1] is SELECT


@pytest.mark.parametrize("mode, keep", [
    (None, lambda f, a: True),
    ("show", lambda f, a: True),
    ("hide", lambda f, a: not is_wait(f, a)),
    ("only", is_wait),
])
async def test_flamegraph_waits_modes(client, mode, keep):
    params = {"from": T, "to": T + SECONDS, **({"waits": mode} if mode else {})}
    tree = await (await client.get("/api/flamegraph", params=params)).json()
    assert leaf_values(tree) == expected(keep)


async def test_waits_combine_with_the_other_filters_and_weights(client):
    tree = await (await client.get("/api/flamegraph", params={
        "from": T, "to": T + SECONDS, "waits": "hide", "tid": 2})).json()
    assert tree["value"] == 0, "the HTTP thread only waits"
    tree = await (await client.get("/api/flamegraph", params={
        "from": T, "to": T + SECONDS, "waits": "hide", "weight": "gpu_idle"})).json()
    assert tree["value"] == pytest.approx(0.8 * sum(expected(lambda f, a: not is_wait(f, a)).values()))
    folded = await (await client.get("/api/flamegraph", params={
        "from": T, "to": T + SECONDS, "waits": "hide", "format": "folded"})).text()
    assert "select" not in folded and "tokenize_slow_python" in folded


async def test_diff_honours_waits(client):
    tree = await (await client.get("/api/diff", params={
        "a_from": T, "a_to": T + 2, "b_from": T + 2, "b_to": T + SECONDS, "waits": "hide"})).json()
    names = {c["name"] for c in tree["children"][0]["children"]}
    assert names == {"step"}, names
    assert tree["a_total"] == 2 * 8 and tree["b_total"] == 3 * 8


async def test_a_bad_waits_value_is_a_400(client):
    resp = await client.get("/api/flamegraph", params={"waits": "maybe"})
    assert resp.status == 400 and (await resp.json())["param"] == "waits"


def test_the_filter_refuses_unknown_modes():
    with pytest.raises(ValueError):
        stacks.ProfileFilter(waits="sometimes")


def _wait_leaves_shown(db: Path, mode: str) -> tuple[float, float]:
    """(value under wait leaves, total) of the whole stored profile with ``waits=mode``."""
    store = Store.open(str(db), read_only=True)
    try:
        prof = store.read_sync(stacks.profile, 0, 4e9, stacks.ProfileFilter(waits=mode))
    finally:
        store.close()
    waited = sum(v for path, v in prof.stacks.items() if waits.is_wait_leaf(path))
    return waited, prof.total


# the least share of each recording's samples that are waits (the scenario engine was
# recorded without py-spy's --idle: only its selector and condition waits count)
@pytest.mark.parametrize("fixture, least", [("h100-scenario", 0.001), ("vllm-small", 0.05)])
def test_real_recordings_hide_their_waits(tmp_path, fixture, least):
    db = tmp_path / "rec.duckdb"
    done = subprocess.run([sys.executable, "-m", "infersight.daemon.cli", "replay", str(FIXTURES / fixture),
                           "--db", str(db)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    _, total = _wait_leaves_shown(db, "show")
    hidden, rest = _wait_leaves_shown(db, "hide")
    waited, only = _wait_leaves_shown(db, "only")
    assert hidden == 0 and waited > 0, "no wait leaf is left when hidden"
    assert rest + only == pytest.approx(total) and only > least * total, (fixture, only, total)
    assert re.search(r"selectors|base_events|threading", "".join(
        f"{fr[1]}:{fr[0]}" for path in _paths(db, "only") for fr in path[-1:])), "the waits are the usual polls"


def _paths(db: Path, mode: str):
    store = Store.open(str(db), read_only=True)
    try:
        return list(store.read_sync(stacks.profile, 0, 4e9, stacks.ProfileFilter(waits=mode)).stacks)
    finally:
        store.close()
