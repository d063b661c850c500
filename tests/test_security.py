"""Security: bind address and authentication, response headers, static files, secrets, SQL.

- The default listen address is loopback; a non-loopback one needs ``web.auth_token``
  (compared in constant time) or an explicit ``web.allow_unauthenticated``, which is logged.
- Every response, errors and static files included, carries a restrictive
  Content-Security-Policy and ``X-Content-Type-Options: nosniff``.
- /static/ never serves a file outside web/static, however the path is spelled.
- No secret of the config appears in any API response or log line.
- SQL is parameterised: every ``execute`` in storage/ builds its text from code constants
  only (tests/sql_taint.py; the exceptions are listed with the reason they are safe), and the
  values of a request never reach the SQL text.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import sql_taint
from aiohttp.test_utils import TestClient, TestServer

import infersight.web.app as web_app
from infersight.daemon.config.listen import split_listen
from infersight.daemon.config.load import Config, ConfigError, load_config
from infersight.storage.model import Batch, EngineSample, Event, Frame, GpuSample, StackSample, Target
from infersight.storage.store import Store
from infersight.web.app import create_app

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "web" / "static"
T0 = 1_700_000_000


# -- bind address and authentication -----------------------------------------------------------

def test_default_listen_address_is_loopback():
    host, _ = split_listen(Config().web.listen)
    assert host == "127.0.0.1"
    assert not Config().web.auth_token and not Config().web.allow_unauthenticated


def _quiet_config(path: Path, extra: str = "") -> Path:
    path.write_text("[collectors.gpu]\nenabled = false\n[collectors.stacks]\nenabled = false\n"
                    "[collectors.engines]\nenabled = false\n" + extra)
    return path


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "[::]:0", "192.0.2.10:8321"])
def test_non_loopback_listen_without_token_is_refused(tmp_path, listen):
    done = subprocess.run([sys.executable, "-m", "infersight.daemon.cli", "run", "--config",
                           str(_quiet_config(tmp_path / "c.toml")), "--db", str(tmp_path / "x.duckdb"),
                           "--listen", listen], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "web.listen" in done.stderr and "auth_token" in done.stderr
    assert not (tmp_path / "x.duckdb").exists(), "refused before touching storage"


def test_non_loopback_listen_with_allow_unauthenticated_starts_and_warns(tmp_path, agent_process):
    config = _quiet_config(tmp_path / "c.toml", "[web]\nallow_unauthenticated = true\n")
    agent = agent_process(["--config", str(config), "--db", str(tmp_path / "a.duckdb"), "--listen", "0.0.0.0:0"])
    agent.wait_started()
    line = agent.wait_for_line(r"event=unauthenticated_listen").string
    assert "level=warning" in line and "0.0.0.0" in line
    assert agent.stop() == 0


async def test_bearer_token_is_required_and_compared_in_constant_time(tmp_path, monkeypatch):
    token = "tok-" + "x" * 40
    config = dataclasses.replace(Config(), web=dataclasses.replace(Config().web, auth_token=token))
    compared: list[tuple[bytes, bytes]] = []
    real = web_app.hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(web_app.hmac, "compare_digest", spy)
    store = Store.open(str(tmp_path / "auth.duckdb"), host="h")
    try:
        async with TestClient(TestServer(create_app(config, store))) as client:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token},
                            {"Authorization": f"Bearer {token}x"}, {"Authorization": f"bearer {token[:-1]}"}):
                async with client.get("/api/health", headers=headers) as resp:
                    assert resp.status == 401, headers
                    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
                    _assert_security_headers(resp)
            async with client.get("/api/health", headers={"Authorization": f"Bearer {token}"}) as resp:
                assert resp.status == 200
    finally:
        store.close()
    assert len(compared) == 6
    assert compared[-1] == (f"Bearer {token}".encode(), f"Bearer {token}".encode())


# -- headers on every response -----------------------------------------------------------------

def _assert_security_headers(resp) -> None:
    csp = resp.headers.get("Content-Security-Policy", "")
    directives = {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}
    assert directives.get("default-src") in (["'self'"], ["'none'"]), csp
    assert directives.get("object-src") == ["'none'"], csp
    assert directives.get("frame-ancestors") == ["'none'"], csp
    assert directives.get("base-uri") in (["'none'"], ["'self'"]), csp
    for name, sources in directives.items():
        assert not {"*", "'unsafe-inline'", "'unsafe-eval'", "http:", "https:"} & set(sources), (name, csp)
    assert resp.headers.get("X-Content-Type-Options") == "nosniff"


def _seed(store: Store) -> None:
    frames = tuple(Frame(f"f{i}", "app.py", i) for i in range(4))
    store.submit(Batch("seed", T0, targets=[Target("sec-host", 5, 1.0, "python engine", "engine", (0,))],
                       stack_samples=[StackSample(T0 + s, 5, 1.0, 5, "Main", frames, True, 2) for s in range(30)],
                       gpu_samples=[GpuSample(T0 + s, 0, {"sm_util": 50.0}) for s in range(30)],
                       engine_samples=[EngineSample(T0 + s, "http://127.0.0.1:8000/metrics", "vllm", "m",
                                                    "requests_running", 1.0) for s in range(30)]))
    store.flush()
    from infersight.storage import events as q_events

    store.write_sync(q_events.upsert_events, [Event("ev-sec", "cpu_gpu_gap", T0 + 1, T0 + 9, "sec-host", 0)])


def _example_path(canonical: str) -> str:
    return canonical.replace("{event_id}", "ev-sec").split("{", 1)[0]


async def test_every_response_carries_csp_and_nosniff(tmp_path):
    store = Store.open(str(tmp_path / "headers.duckdb"), host="sec-host")
    _seed(store)
    rng = f"from={T0}&to={T0 + 60}"
    try:
        async with TestClient(TestServer(create_app(Config(), store))) as client:
            paths = {_example_path(r.resource.canonical) + ("" if "{" in r.resource.canonical else f"?{rng}")
                     for r in client.app.router.routes()
                     if r.method == "GET" and not r.resource.canonical.startswith("/static")}
            paths |= {"/api/no-such-route", "/api/flamegraph?from=x", "/api/series?signal=nope",
                      "/api/events/no-such-event", "/static/no-such-file.js"}
            paths |= {f"/static/{p.relative_to(STATIC).as_posix()}" for p in STATIC.rglob("*") if p.is_file()}
            statuses = set()
            for path in sorted(paths):
                async with client.get(path) as resp:
                    statuses.add(resp.status // 100)
                    _assert_security_headers(resp)
            async with client.post("/api/health") as resp:          # 405
                _assert_security_headers(resp)
                statuses.add(resp.status // 100)
    finally:
        store.close()
    assert {2, 4} <= statuses


# -- static files ---------------------------------------------------------------------------

_TRAVERSALS = ["/static/../../etc/passwd", "/static/../app.py", "/static/..%2fapp.py", "/static/%2e%2e/app.py",
               "/static/%2e%2e%2fapp.py", "/static/%252e%252e/app.py", "/static/..%5capp.py", "/static/..\\app.py",
               "/static//etc/passwd", "/static/%2fetc%2fpasswd", "/static/....//app.py", "/static/./../app.py",
               "/static/%c0%ae%c0%ae/app.py", "/static/..;/app.py", "/static/../../../../../../etc/passwd%00.js",
               "/static/index.html/../../app.py"]


async def _raw_get(host: str, port: int, target: str) -> tuple[int, bytes]:
    """One request with the target sent exactly as written (a client library would normalise it)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode("latin-1"))
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_static_never_serves_outside_its_folder(tmp_path):
    store = Store.open(str(tmp_path / "static.duckdb"), host="h")
    secret_markers = [b"root:x:0:0", b"def create_app", b"import hmac"]
    try:
        server = TestServer(create_app(Config(), store))
        async with TestClient(server):
            for target in _TRAVERSALS:
                status, body = await _raw_get(server.host, server.port, target)
                assert status in (400, 403, 404), (target, status)
                assert not any(m in body for m in secret_markers), target
    finally:
        store.close()


# -- secrets ------------------------------------------------------------------------------------

def _secret_fields(cls: type, prefix: str = "") -> list[str]:
    """Every field marked secret, as a dotted path (``[]`` for items of a list of tables)."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint, path = hints[f.name], f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hint):
            out += _secret_fields(hint, path + ".")
        elif typing.get_origin(hint) is tuple and dataclasses.is_dataclass(typing.get_args(hint)[0]):
            out += _secret_fields(typing.get_args(hint)[0], path + "[].")
        elif f.metadata.get("secret"):
            out.append(path)
    return out


SECRETS = {"web.auth_token": "SECRET-web-token-5f1c", "alerts.webhooks[].url": "SECRET-hook-path-9a7e",
           "alerts.webhooks[].secret": "SECRET-hmac-key-2b44", "pyroscope.auth_token": "SECRET-pyro-token-c3d0"}


def _secret_config(tmp_path: Path) -> Path:
    text = f"""
[web]
auth_token = "{SECRETS['web.auth_token']}"
[collectors.gpu]
enabled = false
[collectors.stacks]
enabled = false
[collectors.engines]
enabled = false
[pyroscope]
auth_token = "{SECRETS['pyroscope.auth_token']}"
[[alerts.webhooks]]
name = "oncall"
url = "https://hooks.example.invalid/services/{SECRETS['alerts.webhooks[].url']}"
secret = "{SECRETS['alerts.webhooks[].secret']}"
"""
    path = tmp_path / "secret.toml"
    path.write_text(text)
    return path


def test_the_secret_list_covers_every_secret_key():
    # a new secret key fails here until this file sets it and checks it does not leak
    assert sorted(_secret_fields(Config)) == sorted(SECRETS)


async def test_no_secret_in_any_response_or_log_line(tmp_path, caplog, monkeypatch):
    from infersight.daemon.runtime import Daemon
    from infersight.daemon.sdnotify import Notifier

    # the CLI's logging setup stops propagation; here every record must reach caplog
    monkeypatch.setattr(logging.getLogger("infersight"), "propagate", True)

    config = load_config(_secret_config(tmp_path))
    config = dataclasses.replace(config, storage=dataclasses.replace(config.storage, path=str(tmp_path / "s.duckdb")),
                                 web=dataclasses.replace(config.web, listen="127.0.0.1:0"))
    caplog.set_level(logging.DEBUG)
    daemon = Daemon(config, notifier=Notifier({}))
    task = asyncio.create_task(daemon.run())
    bodies: list[str] = []
    try:
        await asyncio.wait_for(daemon.ready.wait(), 60)
        assert "alerts" in daemon.agent.extras, "the webhook config is not in use; the test would show little"
        _seed(daemon.agent.store)
        import aiohttp

        headers = {"Authorization": f"Bearer {SECRETS['web.auth_token']}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.get(daemon.site_url + "/api/health") as resp:
                assert resp.status == 200
            # every GET route of the app (the daemon's own app object is not exposed: the
            # routes of one built from the same config), errors included
            paths = {_example_path(r.resource.canonical) for r in create_app(config, daemon.agent.store).router.routes()
                     if r.method == "GET" and not r.resource.canonical.startswith("/static")}
            for path in sorted(paths) + ["/api/nope", "/api/flamegraph?from=bad"]:
                sep = "&" if "?" in path else "?"
                async with session.get(f"{daemon.site_url}{path}{sep}from={T0}&to={T0 + 60}") as resp:
                    bodies.append(await resp.text())
                    assert resp.status < 500, path
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 30)
    logged = [r.getMessage() for r in caplog.records]
    assert any("event=started" in m for m in logged), "the daemon's log lines were not captured"
    text = "\n".join(bodies) + "\n" + "\n".join(logged)
    for key, value in SECRETS.items():
        assert value not in text, f"{key} leaked"


def test_config_errors_never_echo_a_secret(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(f'[[alerts.webhooks]]\nname = "x"\nurl = "ftp://{SECRETS["alerts.webhooks[].url"]}"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert SECRETS["alerts.webhooks[].url"] not in str(err.value)


# -- SQL ----------------------------------------------------------------------------------------

# execute() calls whose SQL text takes a value the static check cannot follow, and why it is
# safe. An entry no longer needed fails the test too, so the list stays exact.
ALLOWED_SQL = {
    ("append.py", "insert_columns", "data <- defaultdict(lambda: defaultdict(list))"):
        "column names: append_batches fills that dict with the literal table and column names of its own code",
    ("export.py", "copy_hour", "path.replace(\"'\", \"''\")"):
        "a file path the Parquet export builds from its config folder, table and hour (no request value); "
        "COPY takes no parameter for its target, so it is a SQL string literal with quotes doubled",
    ("retention.py", "rollup", "select(bin_expr)"):
        "the rollup's SELECT built by the table's own policy from its literal column names and an integer "
        "from the config (storage.rollup_bucket_s, validated 2..3600), not a request value",
    ("analysis.py", "windows_range", "wf.select_sql()"):
        "the typed window feature columns: window_features.NAMES, a tuple literal of the code",
    ("events.py", "windows", "wf.select_sql()"):
        "the typed window feature columns: window_features.NAMES, a tuple literal of the code",
    ("flame_query.py", "_execute", "sql <- stacks.leaf_query(t_from, t_to, flt, weight=weight, gpu=gpu)"):
        "stacks.leaf_query (the same text stacks.profile runs) joins literal SQL and _filter_sql's literal "
        "clauses; every value of the request goes in as a ? parameter",
    ("intern.py", "next_id", "table <- table"):
        "an interned table's name, passed by intern.py's own callers as a literal (frames, stack_nodes, ...)",
}


def test_storage_builds_sql_text_from_code_constants_only():
    found = {(f.file, f.function, name): f.line for f in sql_taint.findings(ROOT / "storage") for name in f.names}
    unexpected = {k: v for k, v in found.items() if k not in ALLOWED_SQL}
    assert not unexpected, "SQL text built from values the code does not fix (use ? parameters): " + json.dumps(
        [f"{file}:{line} {func}: {name}" for (file, func, name), line in unexpected.items()], indent=1)
    stale = set(ALLOWED_SQL) - set(found)
    assert not stale, f"allowed exceptions no longer needed, remove them: {sorted(stale)}"


def test_only_storage_talks_to_duckdb():
    for folder in ("daemon", "web"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            assert not re.search(r"^\s*(import duckdb|from duckdb)", text, re.M), path
            assert ".execute(" not in text, path


def test_the_sql_check_reports_interpolated_request_values(tmp_path):
    (tmp_path / "queries.py").write_text('''
TABLES = {"a": "x_a"}
COLS = ("c1", "c2")

def bad_fstring(cur, name):
    return cur.execute(f"SELECT * FROM t WHERE name = '{name}'")

def bad_concat(cur, where):
    sql = "SELECT * FROM t WHERE " + where
    return cur.execute(sql)

def bad_format(cur, x):
    return cur.execute("SELECT {}".format(x))

def bad_row_value(cur):
    name = cur.execute("SELECT name FROM t").fetchone()[0]
    return cur.execute(f"SELECT * FROM {name}")

def good(cur, table, value, limit):
    if table not in TABLES:
        raise ValueError(table)
    cols = ", ".join(f'"{c}"' for c in COLS)
    extra = ""
    if value is not None:
        extra += " AND v = ?"
    return cur.execute(f"SELECT {cols} FROM {TABLES[table]} WHERE k = ?{extra} LIMIT {int(limit)}", [value])

def helper(cur, inner):
    return cur.execute(f"SELECT avg(v) FROM ({inner})")

def calls_helper_well(cur):
    return helper(cur, f"SELECT {COLS[0]} AS v FROM t")

def calls_helper_badly(cur, request_value):
    return helper(cur, f"SELECT {request_value} AS v FROM t")
''')
    found = {f.function: f.names for f in sql_taint.findings(tmp_path)}
    assert set(found) == {"bad_fstring", "bad_concat", "bad_format", "bad_row_value", "helper"}, found
    assert found["bad_fstring"] == ("name",) and found["bad_concat"] == ("where",)
    # the helper is reported for the one caller that passes a parameter, not the one passing constants
    assert found["helper"] == ("inner <- calls_helper_badly(request_value)",)


class _RecordingCursor:
    """A reader cursor that remembers every SQL text it runs."""

    def __init__(self, cursor, log: list[str]) -> None:
        self._cursor, self._log = cursor, log

    def execute(self, sql, *args, **kwargs):
        self._log.append(sql)
        self._cursor.execute(sql, *args, **kwargs)
        return self

    def __getattr__(self, name):
        return getattr(self._cursor, name)


class _RecordingConnection:
    def __init__(self, con, log: list[str]) -> None:
        self._con, self._log = con, log

    def cursor(self):
        return _RecordingCursor(self._con.cursor(), self._log)

    def __getattr__(self, name):
        return getattr(self._con, name)


async def test_request_values_never_reach_the_sql_text(tmp_path):
    store = Store.open(str(tmp_path / "sql.duckdb"), host="sec-host")
    _seed(store)
    sql: list[str] = []
    store._con = _RecordingConnection(store._con, sql)   # reader cursors come from here
    marker = "zq9x"
    strings = {"role": f"{marker}role') OR 1=1 --", "kind": f"{marker}kind' --", "model": f"{marker}model\"",
               "endpoint": f"{marker}endpoint;", "q": f"{marker}q"}
    numbers = {"from": f"{T0}.987654", "to": f"{T0 + 60}.123457", "pid": "424242", "tid": "434343"}
    try:
        async with TestClient(TestServer(create_app(Config(), store))) as client:
            routes = sorted({r.resource.canonical for r in client.app.router.routes()
                             if r.method == "GET" and r.resource.canonical.startswith("/api/")})
            for route in routes:
                path = route.replace("{event_id}", f"{marker}event' OR '1'='1")
                for signal in ("sm_util", "requests_running", "host_cpu_percent", "process_cpu_percent"):
                    params = {**strings, **numbers, "signal": signal,
                              "a_from": numbers["from"], "a_to": numbers["to"],
                              "b_from": numbers["from"], "b_to": numbers["to"]}
                    async with client.get(path, params=params) as resp:
                        assert resp.status < 500, (path, await resp.text())
    finally:
        store.close()
    assert sql, "no query was recorded"
    for text in sql:
        assert marker not in text, text
        for value in ("987654", "123457", "424242", "434343"):
            assert value not in text, text
