"""The segmenter on simulated seconds: noise never cuts an episode, a step does, where it happened.

Each test feeds seconds the way the analyzer does (a few at a time, as ticks arrive) and
reads back the confirmed splits. The noise levels come from the real recordings: SM within
one vLLM phase wanders 15-27 % second to second, the running-requests gauge dips from 128 to
7 when a batch of requests ends together, own-work samples arrive 20-50 a second.
"""
from __future__ import annotations

import math
import random

from infersight.daemon.analysis.observe import feature_specs
from infersight.daemon.analysis.profiles import by_file
from infersight.daemon.analysis.segment import Observation, Segmenter, novel_share
from infersight.daemon.config.load import Config

SPECS = feature_specs(Config().analysis)


def _feed(seg: Segmenter, seconds: list[Observation], tick: int = 5) -> list:
    splits = []
    for i in range(0, len(seconds), tick):
        splits += seg.feed(seconds[i:i + tick])
    return splits


def _obs(t: int, **numeric: float) -> Observation:
    return Observation(t, ("serving",), dict(numeric))


def _draw(rng: random.Random, profile: dict[str, float], n: int) -> dict[str, int]:
    keys = list(profile)
    out: dict[str, int] = {}
    for k in rng.choices(keys, weights=[profile[k] for k in keys], k=n):
        out[k] = out.get(k, 0) + 1
    return out


def test_noise_of_a_steady_phase_never_splits():
    rng = random.Random(1)
    for _ in range(20):
        seg = Segmenter(SPECS, min_len=5)
        seconds = []
        for t in range(300):
            running = 128.0 if rng.random() > 0.1 else rng.choice([7.0, 28.0, 44.0])   # gauge dips
            seconds.append(_obs(t, sm=rng.uniform(15, 27), dram=rng.uniform(7, 14), load=math.log2(1 + running),
                                **{"cpu:1": rng.uniform(95, 105), "cpu:2": rng.uniform(25, 45)}))
        assert _feed(seg, seconds) == []


def test_a_step_splits_where_it_happened():
    rng = random.Random(2)
    seg = Segmenter(SPECS, min_len=5)
    seconds = [_obs(t, sm=rng.uniform(90, 95), load=math.log2(25)) for t in range(40)]
    seconds += [_obs(t, sm=rng.uniform(15, 27), load=math.log2(129)) for t in range(40, 80)]
    splits = _feed(seg, seconds)
    assert [s.t for s in splits] == [40]
    assert seg.open_since() == 40


def test_a_transition_second_goes_where_most_features_put_it():
    seg = Segmenter(SPECS, min_len=5)
    seconds = [_obs(t, sm=0.0, load=0.0) for t in range(20)]
    # the first second of prefill: requests already in, the GPU only partly busy
    seconds.append(_obs(20, sm=38.0, load=math.log2(25)))
    seconds += [_obs(t, sm=94.5, load=math.log2(25)) for t in range(21, 40)]
    assert [s.t for s in _feed(seg, seconds)] == [20]


def test_a_queue_growing_behind_a_slow_engine_is_one_episode():
    rng = random.Random(3)
    seg = Segmenter(SPECS, min_len=5)
    seconds = [_obs(t, load=math.log2(1 + 20 + 25 * t + rng.uniform(-10, 10)), sm=rng.uniform(1, 3))
               for t in range(12)]
    assert _feed(seg, seconds) == []


def test_a_neighbour_starting_splits_within_the_confirmation_time():
    seg = Segmenter(SPECS, min_len=5)
    seconds = [_obs(t, sm=55.0, tensor=8.0, foreign=0.0, load=math.log2(49)) for t in range(30)]
    seconds += [_obs(t, sm=69.0, tensor=41.0, foreign=1.0, load=math.log2(49)) for t in range(30, 40)]
    splits = []
    for t, obs in enumerate(seconds):
        got = seg.feed([obs])
        splits += [(s.t, t) for s in got]
    assert splits and splits[0][0] == 30 and splits[0][1] - 30 <= 5


def test_a_start_up_is_one_episode_and_its_end_a_hard_boundary():
    seg = Segmenter(SPECS, min_len=5)
    seconds = [Observation(t, ("starting",)) for t in range(50)]
    seconds += [_obs(t, sm=20.0) for t in range(50, 60)]
    assert [(s.t, s.reason) for s in _feed(seg, seconds)] == [(50, "key")]


def test_new_code_splits_the_same_code_in_other_proportions_does_not():
    rng = random.Random(5)
    model = {f"modeling.py:f{i}": 1.0 / (i + 1) for i in range(5)} | {"sdpa.py:attn": 3.0}
    warm = {"modeling.py:f0": 0.2, "sdpa.py:attn": 3.0}        # attention warming up first
    tokenizer = {"tokenization.py:encode": 1.0, "tokenizers.py:batch": 0.5}

    def prof(profile, t, n=30):
        return Observation(t, ("serving",), {}, {"prof:1": {f: int(v) for f, v in by_file(_draw(rng, profile, n)).items()}})

    seg = Segmenter(SPECS, min_len=5)
    seconds = [prof(warm, t) for t in range(6)] + [prof(model, t) for t in range(6, 40)]
    assert _feed(seg, seconds) == []
    seg = Segmenter(SPECS, min_len=5)
    mixed = {**model, **{k: v * 3 for k, v in tokenizer.items()}}
    seconds = [prof(model, t) for t in range(30)] + [prof(mixed, t) for t in range(30, 50)]
    assert [s.t for s in _feed(seg, seconds)] == [30]
    assert novel_share({"a": 50, "tok": 50}, {"a": 100}) == 0.5
    assert novel_share({"a": 50, "b": 50}, {"a": 90, "b": 10}) == 0.0


def test_a_serving_process_that_appears_splits_and_one_missing_second_does_not():
    seg = Segmenter(SPECS, min_len=5)
    seconds = [Observation(t, ("serving",), {"proc:1": 1.0, **({"proc:2": 1.0} if t % 17 else {})})
               for t in range(40)]
    assert _feed(seg, seconds) == []
    seconds = [Observation(t, ("serving",), {"proc:1": 1.0, "proc:2": 1.0, **({"proc:3": 1.0} if t >= 50 else {})})
               for t in range(40, 70)]
    assert [s.t for s in _feed(seg, seconds)] == [50]


def test_a_stretch_longer_than_max_len_is_cut_for_length():
    seg = Segmenter(SPECS, min_len=5, max_len=60)
    splits = _feed(seg, [_obs(t, sm=50.0) for t in range(130)])
    assert [s.reason for s in splits] == ["length", "length"]
    assert len(seg.buffer) <= 60
