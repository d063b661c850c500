"""Flame graphs of stacks hundreds of frames deep (vLLM's start-up imports reach 243 frames),
stored through the real Store and read through the real app: every format and the diff answer
200 with the whole chain, the tree's text equals the tree, the budget bounds every format and
says so, and the heavy work runs on the store's reader threads, never on the event loop."""
from __future__ import annotations

import json
import random
import sys
import threading
from collections import Counter

import pytest

from infersight.storage import render
from infersight.storage.model import Batch, Frame, StackSample, Target
from infersight.storage.stacks import Profile
from infersight.web.app import create_app

T = 1_800_000_000
PID = 5151


def import_chain(depth: int, tag: str) -> tuple[Frame, ...]:
    """A start-up-like stack: ``depth`` frames of nested imports, each on its own line."""
    frames = [Frame("<module>", "/srv/vllm/entrypoints/cli/main.py", 1)]
    for i in range(depth - 2):
        frames.append(Frame("_call_with_frames_removed" if i % 2 else "exec_module",
                            f"<frozen importlib._bootstrap{'' if i % 2 else '_external'}>", 200 + i % 7))
    frames.append(Frame(f"leaf_{tag}", f"/srv/pkg/{tag}.py", 9))
    assert len(frames) == depth
    return tuple(frames)


# (frames, samples per second): a 300-deep and a 1000-deep chain sharing their prefix, and a shallow one
STACKS = [(import_chain(300, "three_hundred"), 3), (import_chain(1000, "thousand"), 2),
          ((Frame("main", "/srv/app.py", 3), Frame("serve", "/srv/app.py", 8)), 1)]
SECONDS = 4


@pytest.fixture(autouse=True)
def deep_parsing():
    """Python's json parser recurses once per level: a 1000-frame tree is 2000+ levels."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 10_000))
    yield
    sys.setrecursionlimit(old)


@pytest.fixture
def deep_store(store):
    target = Target("testhost", PID, 1.0, "python -m vllm.entrypoints.cli.main serve", role="api_server")
    for s in range(SECONDS):
        b = Batch("stacks", float(T + s), targets=[target])
        for frames, n in STACKS:
            b.stack_samples.append(StackSample(T + s, PID, 1.0, PID, "MainThread", frames, True, n))
        assert store.submit(b)
    store.flush()
    return store


@pytest.fixture
async def client(aiohttp_client, make_config, deep_store):
    return await aiohttp_client(create_app(make_config(), deep_store, agent=None))


def chain_names(tree: dict, leaf: str) -> list[str]:
    """Names from the root's child down to the frame called ``leaf`` (without recursion)."""
    stack = [(tree, [])]
    while stack:
        node, path = stack.pop()
        if node["name"] == leaf:
            return path[1:] + [leaf]
        stack.extend((c, path + [node["name"]]) for c in node["children"])
    raise AssertionError(f"no frame {leaf}")


async def test_flamegraph_json_of_1000_frame_stacks(client):
    resp = await client.get("/api/flamegraph", params={"from": T, "to": T + SECONDS})
    assert resp.status == 200, await resp.text()
    tree = json.loads(await resp.read())
    assert tree["value"] == tree["total"] == SECONDS * sum(n for _, n in STACKS)
    assert tree["truncated"] is False
    for frames, n in STACKS:
        leaf = frames[-1].function
        assert chain_names(tree, leaf) == [f.function for f in frames]
    # 1000 + 1 (shallow) nodes below the prefix the two deep chains share, plus the root
    assert tree["nodes"] == 1 + 1000 + 1 + 2
    deepest, stack = (0, tree), [(0, tree)]
    while stack:
        depth, node = stack.pop()
        deepest = max(deepest, (depth, node), key=lambda d: d[0])
        stack.extend((depth + 1, c) for c in node["children"])
    assert deepest[0] == 1000 and deepest[1]["name"] == "leaf_thousand" and deepest[1]["value"] == 2 * SECONDS


async def test_folded_and_speedscope_of_deep_stacks(client):
    resp = await client.get("/api/flamegraph", params={"from": T, "to": T + SECONDS, "format": "folded"})
    assert resp.status == 200
    assert resp.headers["X-Infersight-Truncated"] == "false" and resp.headers["X-Infersight-Stacks"] == "3/3"
    lines = (await resp.text()).splitlines()
    parsed = {len(line.rpartition(" ")[0].split(";")): int(line.rpartition(" ")[2]) for line in lines}
    assert parsed == {300: 3 * SECONDS, 1000: 2 * SECONDS, 2: SECONDS}
    resp = await client.get("/api/flamegraph", params={"from": T, "to": T + SECONDS, "format": "speedscope"})
    assert resp.status == 200
    doc = json.loads(await resp.read())
    frames = doc["shared"]["frames"]
    got = Counter()
    for sample, weight in zip(doc["profiles"][0]["samples"], doc["profiles"][0]["weights"]):
        got[tuple(frames[i]["name"] for i in sample)] += weight
    assert got == Counter({tuple(f.function for f in fr): n * SECONDS for fr, n in STACKS})


async def test_diff_of_deep_stacks(client):
    resp = await client.get("/api/diff", params={"a_from": T, "a_to": T + 2, "b_from": T + 2, "b_to": T + SECONDS})
    assert resp.status == 200, await resp.text()
    diff = json.loads(await resp.read())
    assert diff["a_total"] == diff["b_total"] == 2 * sum(n for _, n in STACKS)
    assert chain_names(diff, "leaf_thousand") == [f.function for f in STACKS[1][0]]
    assert diff["truncated"] is False and diff["nodes"] == 1 + 1000 + 1 + 2
    assert {r["name"] for r in diff["top_changes"]} == {"leaf_three_hundred", "leaf_thousand", "serve"}


async def test_max_nodes_bounds_every_format_and_says_so(client):
    q = {"from": T, "to": T + SECONDS, "max_nodes": 500}
    tree = json.loads(await (await client.get("/api/flamegraph", params=q)).read())
    assert tree["truncated"] is True and tree["nodes"] == 500
    count, stack = 0, [tree]
    while stack:
        node = stack.pop()
        count += 1
        stack.extend(node["children"])
        assert node["value"] >= sum(c["value"] for c in node["children"])
    assert count == 500
    resp = await client.get("/api/flamegraph", params={**q, "format": "folded"})
    # the 1000-frame stack needs 1000 distinct paths: the heaviest (300 frames) and the shallow one fit
    assert resp.headers["X-Infersight-Truncated"] == "true" and resp.headers["X-Infersight-Stacks"] == "1/3"
    assert resp.headers["X-Infersight-Omitted-Value"] == str(3 * SECONDS)
    assert [len(line.split(";")) for line in (await resp.text()).splitlines()] == [300]
    resp = await client.get("/api/flamegraph", params={**q, "format": "speedscope"})
    assert resp.headers["X-Infersight-Truncated"] == "true"
    assert [len(s) for s in json.loads(await resp.read())["profiles"][0]["samples"]] == [300]
    diff = json.loads(await (await client.get("/api/diff", params={
        "a_from": T, "a_to": T + 2, "b_from": T + 2, "b_to": T + SECONDS, "max_nodes": 500})).read())
    assert diff["truncated"] is True and diff["nodes"] == 500
    assert diff["top_changes"][0]["name"] in {"leaf_three_hundred", "leaf_thousand", "serve"}


async def test_trees_are_built_and_encoded_off_the_event_loop(client, monkeypatch):
    loop_thread = threading.get_ident()
    seen: dict[str, int] = {}

    def recording(name, fn):
        def wrapper(*args, **kwargs):
            seen[name] = threading.get_ident()
            return fn(*args, **kwargs)
        return wrapper

    # the renderers the API uses (web/heavy.py builds trees from the stack trie, then these encode)
    for name in ("flame_json_root", "diff_json_roots", "folded", "speedscope"):
        monkeypatch.setattr(render, name, recording(name, getattr(render, name)))
    for fmt in ("json", "folded", "speedscope"):
        assert (await client.get("/api/flamegraph", params={"from": T, "to": T + SECONDS, "format": fmt})).status == 200
    assert (await client.get("/api/diff", params={"a_from": T, "a_to": T + 2, "b_from": T + 2,
                                                  "b_to": T + SECONDS})).status == 200
    assert set(seen) == {"flame_json_root", "diff_json_roots", "folded", "speedscope"}
    assert all(ident != loop_thread for ident in seen.values()), seen


def random_profile(rng: random.Random, stacks: int, deep: bool) -> Profile:
    names = [(f"fn{i}", f"/m{i % 7}.py") for i in range(40)]
    out: dict = {}
    for _ in range(stacks):
        depth = rng.randint(1, 400 if deep else 12)
        path = tuple((*rng.choice(names[:4] if k < depth - 3 else names), rng.randint(1, 3)) for k in range(depth))
        out[path] = out.get(path, 0.0) + rng.choice([1.0, 2.0, 0.25, 7.0])
    return Profile(0, 1, out)


@pytest.mark.parametrize("seed", range(6))
def test_the_tree_text_is_the_tree(seed):
    """flame_json/diff_json write exactly the dicts flame_tree/diff_tree build, budget or not."""
    rng = random.Random(seed)
    deep = seed % 2 == 0
    a, b = random_profile(rng, 40 if deep else 300, deep), random_profile(rng, 30 if deep else 200, deep)
    extra = {"from": 1.5, "note": "x"}
    for max_nodes in (None, 1, 2, 37, 800):
        tree = render.flame_tree(a, max_nodes=max_nodes, min_share=0.001 * seed)
        assert json.loads(render.flame_json(a, max_nodes=max_nodes, min_share=0.001 * seed, extra=extra)) == {
            **tree, **extra}
        diff = render.diff_tree(a, b, max_nodes=max_nodes)
        assert json.loads(render.diff_json(a, b, max_nodes=max_nodes, extra=extra)) == {**diff, **extra}
        if max_nodes is not None:
            assert tree["nodes"] <= max_nodes and diff["nodes"] <= max_nodes


def test_top_changes_from_profiles_match_the_whole_tree():
    rng = random.Random(11)
    a, b = random_profile(rng, 300, False), random_profile(rng, 300, False)
    by_tree = {(r["name"], r["file"]): r["delta_share"] for r in render.top_changes(render.diff_tree(a, b), 1000)}
    by_profile = {(r["name"], r["file"]): r["delta_share"] for r in render.profile_changes(a, b, 1000)}
    assert by_tree.keys() == by_profile.keys()
    for key, delta in by_tree.items():
        assert by_profile[key] == pytest.approx(delta, abs=1e-4)
