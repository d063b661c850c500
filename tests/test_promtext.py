"""The tolerant exposition parser: literal traps, real scrapes, and hypothesis-made input."""
from __future__ import annotations

import gzip
import json
import math
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from infersight.daemon.engines.promtext import family_of, parse

FIXTURES = Path(__file__).parent / "fixtures"
PROM_FILES = sorted((FIXTURES / "engine-metrics").glob("*.prom"))
RECORDINGS = ("h100-scenario", "h100-scenario-split")


def recorded_texts() -> list[tuple[str, str]]:
    out = []
    for rec in RECORDINGS:
        with gzip.open(FIXTURES / rec / "engine_metrics.jsonl.gz", "rt") as fh:
            for i, line in enumerate(fh):
                out.append((f"{rec}#{i}", json.loads(line)["text"]))
    return out


def reference(text: str) -> list[tuple]:
    """prometheus_client's reading, as comparable tuples (NaN made comparable)."""
    out = []
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.append(comparable(s.name, tuple(sorted(s.labels.items())), float(s.value)))
    return sorted(out)


def comparable(name, labels, value):
    # NaN never equals itself: compared as a flag, and sortable beside numbers (a sample named
    # the same with NaN and with a number must still sort)
    return (name, labels, (1, 0.0) if math.isnan(value) else (0, value))


def ours(text: str) -> list[tuple]:
    return sorted(comparable(*s) for s in parse(text).samples)


# -- literal traps ---------------------------------------------------------------------

def test_created_families_count_before_sum_and_le_in_the_middle():
    text = """\
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="m"} 66.0
# HELP vllm:prompt_tokens_created Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_created gauge
vllm:prompt_tokens_created{engine="0",model_name="m"} 1.768264339889982e+09
# TYPE vllm:ttft histogram
vllm:ttft_bucket{engine="0",le="0.5",model_name="m"} 1.0
vllm:ttft_bucket{engine="0",le="+Inf",model_name="m"} 2.0
vllm:ttft_count{engine="0",model_name="m"} 2.0
vllm:ttft_sum{engine="0",model_name="m"} 1.25
"""
    exp = parse(text)
    assert exp.bad_lines == 0
    by = exp.by_name()
    assert by["vllm:prompt_tokens_total"][0].value == 66.0
    assert by["vllm:prompt_tokens_created"][0].value == pytest.approx(1.768264339889982e9)
    assert by["vllm:ttft_count"][0].value == 2.0 and by["vllm:ttft_sum"][0].value == 1.25
    # le sits in the middle of the text; labels come out sorted by name either way
    assert by["vllm:ttft_bucket"][0].labels == (("engine", "0"), ("le", "0.5"), ("model_name", "m"))
    assert exp.types["vllm:prompt_tokens_total"] == "counter"
    assert exp.types["vllm:prompt_tokens_created"] == "gauge"
    assert exp.family_type("vllm:ttft_bucket") == "histogram"
    assert exp.family_type("vllm:ttft_count") == "histogram"


def test_counters_with_and_without_total():
    text = "# TYPE tgi_request_count counter\ntgi_request_count 7\n# TYPE foo counter\nfoo_total 3\nfoo_created 1.7e9\n"
    exp = parse(text)
    assert [(s.name, s.value) for s in exp.samples] == [("tgi_request_count", 7.0), ("foo_total", 3.0),
                                                        ("foo_created", 1.7e9)]
    assert exp.family_type("tgi_request_count") == "counter"
    assert exp.family_type("foo_total") == "counter"
    assert exp.family_type("foo_created") == "counter"
    assert family_of("foo_total", exp.types) == "foo"


def test_escaped_label_values_and_special_characters_inside_quotes():
    text = r'm{a="x\"y\\z\nw",b="{},=# }",c="ünï",d="\q"} 1' + "\n"
    [s] = parse(text).samples
    assert dict(s.labels) == {"a": 'x"y\\z\nw', "b": "{},=# }", "c": "ünï", "d": "\\q"}
    assert ours(text) == reference(text)


def test_nan_and_infinities():
    text = "a NaN\nb +Inf\nc -Inf\nd Inf\ne 1e-3\nf .5\ng -0\n"
    values = {s.name: s.value for s in parse(text).samples}
    assert math.isnan(values["a"])
    assert values["b"] == math.inf and values["c"] == -math.inf and values["d"] == math.inf
    assert values["e"] == 0.001 and values["f"] == 0.5 and values["g"] == 0.0


def test_openmetrics_eof_exemplars_timestamps():
    text = """\
# TYPE foo counter
# UNIT foo seconds
foo_total{a="1"} 17 1520879607.789 # {trace_id="KOO5S4vxi0o"} 0.67
foo_created{a="1"} 1520430000.123
bar_bucket{le="0.5"} 3 # {id="x"} 0.2 1520879607.7
baz 4 1395066363000
# EOF
late 1
"""
    exp = parse(text)
    assert exp.eof
    assert [(s.name, s.value) for s in exp.samples] == [
        ("foo_total", 17.0), ("foo_created", 1520430000.123), ("bar_bucket", 3.0), ("baz", 4.0)]
    assert exp.bad_lines == 1 and "after # EOF" in exp.errors[0]


def test_bad_lines_are_counted_and_good_ones_kept():
    text = "\r\n".join([
        "good_one 1",
        'broken{a="unterminated} 2',
        "bad_value 1x",
        "5starts_with_digit 3",
        'dup{a="1",a="2"} 4',
        "novalue",
        "# TYPE t notatype",
        'good_two{a="b",} 5',
        "  good_three  6  ",
        '{"utf8.name",x="y"} 7',
        "underscores 1_000",
    ])
    exp = parse(text)
    assert [(s.name, s.value) for s in exp.samples] == [
        ("good_one", 1.0), ("good_two", 5.0), ("good_three", 6.0), ("utf8.name", 7.0)]
    assert exp.bad_lines == 7
    assert exp.errors[0].startswith("line 2:") and len(exp.errors) == 5


def test_nothing_to_read():
    assert parse("").samples == [] and parse("").bad_lines == 0
    html = "<!doctype html>\n<html><body>Not found</body></html>\n"
    exp = parse(html)
    assert exp.samples == [] and exp.bad_lines == 2


# -- real scrapes ----------------------------------------------------------------------

@pytest.mark.parametrize("path", PROM_FILES, ids=lambda p: p.name)
def test_engine_fixture_matches_prometheus_client(path):
    text = path.read_text()
    exp = parse(text)
    assert exp.bad_lines == 0
    assert len(exp.samples) > 50
    assert ours(text) == reference(text)


def test_recorded_scrapes_match_prometheus_client():
    texts = recorded_texts()
    assert len(texts) > 150
    for key, text in texts:
        exp = parse(text)
        assert exp.bad_lines == 0, key
        assert ours(text) == reference(text), key


# -- hypothesis ------------------------------------------------------------------------

names = st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,12}", fullmatch=True)
label_names = st.from_regex(r"[a-zA-Z][a-zA-Z0-9_]{0,8}", fullmatch=True)
label_values = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
values = st.floats(allow_nan=True, allow_infinity=True)


def render_value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v)


def escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@st.composite
def valid_lines(draw):
    name = draw(names)
    labels = draw(st.dictionaries(label_names, label_values, max_size=4))
    value = draw(values)
    body = ",".join(f'{k}="{escape(v)}"' for k, v in labels.items())
    line = f"{name}{{{body}}} {render_value(value)}" if labels or draw(st.booleans()) else f"{name} {render_value(value)}"
    return line, (name, tuple(sorted(labels.items())), value)


garbage_lines = st.one_of(
    st.tuples(st.sampled_from("0123456789!$%&()*+-./;<>?@[]^`|~}="), st.text(max_size=30)).map("".join),
    st.tuples(names, st.sampled_from(['{a="', "{a=b}", '{a="x"', " 1x", " ", ' {a="1",a="2"} 1', " 1 2 3"])).map(
        "".join),
).map(lambda s: s.replace("\n", " ").replace("\r", " ")).filter(lambda s: s.strip() != "")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(valid_lines(), max_size=20))
def test_valid_text_reads_exactly_what_was_written(items):
    text = "\n".join(line for line, _ in items) + "\n"
    exp = parse(text)
    assert exp.bad_lines == 0
    assert sorted(comparable(*s) for s in exp.samples) == sorted(comparable(*want) for _, want in items)
    assert ours(text) == reference(text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(valid_lines(), garbage_lines), max_size=25))
def test_garbage_lines_cost_only_themselves(items):
    text = "\n".join(i[0] if isinstance(i, tuple) else i for i in items)
    exp = parse(text)
    wanted = [i[1] for i in items if isinstance(i, tuple)]
    assert sorted(comparable(*s) for s in exp.samples) == sorted(comparable(*w) for w in wanted)
    assert exp.bad_lines == sum(1 for i in items if not isinstance(i, tuple))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(string.printable + '{}="\\#ü\x00'), max_size=300))
def test_any_text_parses_without_raising(text):
    exp = parse(text)
    nonblank = sum(1 for line in text.split("\n") if line.strip(" \t\r"))
    assert exp.lines == nonblank
    assert len(exp.samples) + exp.bad_lines <= nonblank
