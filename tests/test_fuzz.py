"""Bad input never crashes anything: property tests with hypothesis.

- the Prometheus text parser never raises on any text, and what it returns is well formed;
- py-spy output parsing (raw lines, chrometrace events, the summary line) never raises;
- config loading (a TOML file, or a decoded table) raises only ConfigError;
- every GET route of the web app answers any query string (reversed, huge, non-numeric
  ranges, injection strings, unknown and repeated parameters) with a status below 500.

``INFERSIGHT_FUZZ_EXAMPLES`` sets the examples per property (default 300, for CI; the
nightly run uses 100000).
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import tempfile
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import MultiDict

from infersight.daemon.config.load import Config, ConfigError, build, iter_keys, load_config
from infersight.daemon.engines import promtext
from infersight.daemon.stacks.parse import (
    parse_chrometrace,
    parse_frame_text,
    parse_raw,
    parse_summary,
    parse_thread_label,
)
from infersight.storage.model import Batch, EngineSample, Event, Frame, GpuSample, StackSample, Target, Window

EXAMPLES = int(os.environ.get("INFERSIGHT_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                derandomize=False)
FIXTURES = Path(__file__).parent / "fixtures"

INJECTIONS = ("' OR '1'='1", "1; DROP TABLE stack_samples; --", "\" OR 1=1 --", "1 UNION SELECT * FROM meta",
              "../../etc/passwd", "%2e%2e%2fetc%2fpasswd", "\x00", "${jndi:ldap://x}", "<script>alert(1)</script>",
              "1e309", "-1e309", "NaN", "inf", "-inf", "0x10", "1_000", " 1", "１２３", "9" * 400, "", "null",
              "[]", "{}", "true", "\\", "'", "\"", ";", "%", "*")

# -- the Prometheus text parser --------------------------------------------------------------

_name = st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,20}", fullmatch=True)
_label_value = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12).map(
    lambda s: s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n"))
_number = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.integers(min_value=-2**70, max_value=2**70).map(str),
                    st.sampled_from(["NaN", "+Inf", "-Inf", "1e400", "0x1F", "", "--1", "1.2.3", "+", "nan"]))


@st.composite
def _exposition_line(draw) -> str:
    kind = draw(st.integers(0, 6))
    name = draw(_name)
    if kind == 0:
        return f"# TYPE {name} {draw(st.sampled_from(['counter', 'gauge', 'histogram', 'summary', 'untyped', 'x', '']))}"
    if kind == 1:
        return f"# HELP {name} {draw(st.text(max_size=20))}"
    if kind == 2:
        labels = draw(st.lists(st.tuples(_name, _label_value), max_size=4))
        body = ",".join(f'{k}="{v}"' for k, v in labels)
        ts = draw(st.sampled_from(["", " 1700000000000", " -1", " x"]))
        return f"{name}{{{body}}} {draw(_number)}{ts}"
    if kind == 3:
        return f"{name} {draw(_number)}"
    if kind == 4:
        return draw(st.sampled_from(["# EOF", "#", "# TYPE", "{}", "}", '{a="b"} 1', f'{name}{{a="b" 1', "  ", "\t"]))
    return draw(st.text(max_size=60))


_expositions = st.one_of(st.text(max_size=400),
                         st.lists(_exposition_line(), max_size=30).map("\n".join),
                         st.lists(_exposition_line(), max_size=30).map("\r\n".join))


@FUZZ
@given(_expositions)
def test_prometheus_parser_never_raises(text):
    out = promtext.parse(text)
    assert isinstance(out, promtext.Exposition)
    assert out.bad_lines >= 0 and out.lines >= out.bad_lines
    for sample in out.samples:
        assert isinstance(sample.name, str) and sample.name
        assert isinstance(sample.value, float)
        assert list(sample.labels) == sorted(sample.labels, key=lambda kv: kv[0])


@FUZZ
@given(st.binary(max_size=300))
def test_prometheus_parser_on_undecodable_bytes(data):
    # a scrape's bytes decoded leniently, as the collector does with an unknown charset
    assert isinstance(promtext.parse(data.decode("utf-8", errors="replace")), promtext.Exposition)


def test_prometheus_parser_on_real_scrapes_with_lines_cut():
    for path in sorted((FIXTURES / "engine-metrics").glob("*.prom")):
        text = path.read_text()
        whole = promtext.parse(text)
        assert whole.samples and not whole.bad_lines
        for cut in range(0, len(text), max(1, len(text) // 200)):
            assert isinstance(promtext.parse(text[:cut]), promtext.Exposition)


# -- py-spy output ---------------------------------------------------------------------------

_frame_text = st.one_of(
    st.builds(lambda f, p, n: f"{f} ({p}:{n})", st.text(max_size=15), st.text(max_size=20),
              st.integers(-5, 10**12)),
    st.builds(lambda f, p: f"{f} ({p})", st.text(max_size=15), st.text(max_size=20)),
    st.builds(lambda t, n: f"thread ({t}): {n}", st.one_of(st.integers(0, 2**64).map(str),
                                                           st.integers(0, 2**64).map(hex)), st.text(max_size=10)),
    st.builds(lambda p, c: f'process {p}:"{c}"', st.integers(0, 2**40), st.text(max_size=20)),
    st.text(max_size=30))
_raw_line = st.builds(lambda frames, count: ";".join(frames) + f" {count}",
                      st.lists(_frame_text, max_size=8), st.one_of(st.integers(-10, 10**9).map(str), st.text(max_size=5)))


@FUZZ
@given(st.one_of(st.lists(_raw_line, max_size=20).map("\n".join), st.text(max_size=300)))
def test_pyspy_raw_parser_never_raises(text):
    out = parse_raw(text)
    for stack in out.stacks:
        assert isinstance(stack.count, int)
        assert all(isinstance(f, Frame) for f in stack.frames)


@FUZZ
@given(st.text(max_size=80))
def test_pyspy_frame_and_label_parsers_never_raise(text):
    assert isinstance(parse_frame_text(text), Frame)
    parse_thread_label(text)
    summary = parse_summary(text)
    assert summary is None or all(isinstance(n, int) for n in summary)


_json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                         st.text(max_size=10))
_json_value = st.recursive(_json_scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                                 st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                           max_leaves=8)


@st.composite
def _chrome_event(draw):
    if draw(st.integers(0, 4)) == 0:
        return draw(_json_value)
    ev = {"ph": draw(st.sampled_from(["B", "E", "M", "X", "", None, 1])),
          "pid": draw(st.one_of(st.integers(0, 5), _json_scalar)),
          "tid": draw(st.one_of(st.integers(0, 5), _json_scalar)),
          "ts": draw(st.one_of(st.integers(0, 10**12), _json_scalar)),
          "name": draw(st.one_of(st.sampled_from(["main", "run", "thread (1): T", 'process 7:"x"']), _json_scalar)),
          "args": draw(st.one_of(st.fixed_dictionaries({"filename": _json_scalar, "line": _json_scalar}),
                                 _json_value))}
    for key in draw(st.sets(st.sampled_from(list(ev)), max_size=2)):
        del ev[key]
    return ev


@FUZZ
@given(st.lists(_chrome_event(), max_size=30))
def test_pyspy_chrometrace_parser_never_raises(events):
    # what json.loads can give for a chrometrace file, including Infinity and NaN
    timeline = parse_chrometrace(events)
    assert timeline.bad >= 0


# -- config ----------------------------------------------------------------------------------

_KEYS = [key for key, _ in iter_keys(Config)]
_config_value = st.one_of(st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                          st.text(max_size=12), st.lists(st.one_of(st.integers(), st.text(max_size=8)), max_size=3),
                          st.dictionaries(st.text(max_size=6), st.integers(), max_size=2), st.none())


def _nest(pairs: list[tuple[str, object]]) -> dict:
    """Dotted keys to nested tables; a key that is both a table and a value keeps the first."""
    root: dict = {}
    for dotted, value in pairs:
        node = root
        parts = dotted.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node.setdefault(parts[-1], value)
    return root


_config_tables = st.lists(st.tuples(st.one_of(st.sampled_from(_KEYS), st.text(max_size=10)), _config_value),
                          max_size=8).map(_nest)


@FUZZ
@given(_config_tables)
def test_config_build_raises_only_config_errors(raw):
    try:
        config = build(Config, raw, "")
    except ConfigError as exc:
        assert str(exc)
    else:
        assert isinstance(config, Config)


def _toml_value(v) -> str:
    return json.dumps(v) if not isinstance(v, float) or math.isfinite(v) else ("nan" if v != v else
                                                                              ("inf" if v > 0 else "-inf"))


@FUZZ
@given(st.one_of(
    st.text(max_size=200),
    st.lists(st.tuples(st.sampled_from(_KEYS), st.one_of(st.booleans(), st.integers(-2**70, 2**70),
                                                         st.floats(allow_nan=True), st.text(max_size=10))),
             max_size=6).map(lambda pairs: "\n".join(f"{k} = {_toml_value(v)}" for k, v in pairs))))
def test_config_file_loading_raises_only_config_errors(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "infersight.toml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            load_config(path)
        except ConfigError as exc:
            assert str(exc)


# -- every HTTP route ------------------------------------------------------------------------

T0 = 1_700_000_000


def _seed(store) -> None:
    """A little of everything, so the queries have rows to work on."""
    frames = tuple(Frame(f"f{i}", "app.py", i) for i in range(6))
    store.submit(Batch("seed", T0, targets=[Target("fuzz-host", 11, 1.0, "python engine", "engine", (0,))],
                       stack_samples=[StackSample(T0 + s, 11, 1.0, 11, "Main", frames[: 2 + s % 4], s % 2 == 0, 3)
                                      for s in range(60)],
                       gpu_samples=[GpuSample(T0 + s / 2, 0, {"sm_util": float(s % 100), "util_gpu": 50.0})
                                    for s in range(120)],
                       engine_samples=[EngineSample(T0 + s, "http://127.0.0.1:8000/metrics", "vllm", "m",
                                                    "generation_tokens_per_s", float(s)) for s in range(60)]))
    store.flush()
    from infersight.storage import events as q_events

    store.write_sync(q_events.upsert_events, [Event("ev-1", "cpu_gpu_gap", T0 + 5, T0 + 20, "fuzz-host", 0)])
    store.write_sync(q_events.replace_windows, 0, float(T0), float(T0 + 60),
                     [Window(float(T0 + s), float(T0 + s + 1), 0, "idle") for s in range(60)])


@pytest.fixture(scope="module")
def web_client(tmp_path_factory):
    """A test client of the real app over a seeded store, on an event loop of its own (the
    property tests are synchronous: hypothesis drives them)."""
    from aiohttp.test_utils import TestClient, TestServer

    from infersight.storage.store import Store
    from infersight.web.app import create_app

    store = Store.open(str(tmp_path_factory.mktemp("fuzz") / "fuzz.duckdb"), host="fuzz-host", flush_interval_s=0.05)
    _seed(store)
    loop = asyncio.new_event_loop()
    client = TestClient(TestServer(create_app(Config(), store)), loop=loop)
    loop.run_until_complete(client.start_server())
    routes = sorted({r.resource.canonical for r in client.app.router.routes()
                     if r.method == "GET" and r.resource is not None and not r.resource.canonical.startswith("/static")})
    try:
        yield loop, client, routes
    finally:
        loop.run_until_complete(client.close())
        loop.close()
        store.close()


_KNOWN_PARAMS = ("from", "to", "a_from", "a_to", "b_from", "b_to", "pid", "tid", "role", "active", "weight",
                 "format", "gpu", "max_nodes", "signal", "step", "model", "endpoint", "kind", "limit", "points",
                 "all", "q", "event")
_param_value = st.one_of(
    st.sampled_from(INJECTIONS),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-2**80, 2**80).map(str),
    st.sampled_from([str(T0), str(T0 + 30), str(T0 + 60), str(T0 - 10**9), "1e11", "1e12", "0", "-1"]),
    st.sampled_from(["json", "folded", "speedscope", "samples", "gpu_idle", "sm_util", "generation_tokens_per_s",
                     "host_cpu_percent", "process_cpu_percent", "true", "false", "all", "engine", "1,2,x"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30))
_query = st.lists(st.tuples(st.one_of(st.sampled_from(_KNOWN_PARAMS), st.text(min_size=1, max_size=8)),
                            _param_value), max_size=8)


@FUZZ
@given(data=st.data())
def test_every_route_answers_any_query_below_500(web_client, data):
    loop, client, routes = web_client
    route = data.draw(st.sampled_from(routes), label="route")
    path = route
    if "{" in route:
        value = data.draw(_param_value, label="path parameter")
        path = route.split("{", 1)[0] + quote(value, safe="") + route.split("}", 1)[1]
    query = MultiDict(data.draw(_query, label="query"))

    async def get():
        async with client.get(path, params=query) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), await resp.read()

    status, content_type, body = loop.run_until_complete(get())
    assert status < 500, f"GET {path}?{query} -> {status}: {body[:300]!r}"
    if 400 <= status < 500 and content_type.startswith("application/json"):
        assert "error" in json.loads(body), body[:300]
