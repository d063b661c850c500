"""Where the agent listens and whom it answers (issue 30, items 2 and 7).

- ``web.listen`` is parsed: only loopback IP literals and ``localhost`` are loopback, so
  ``127.evil.example`` needs a token like any other name, and a name that does not resolve
  ends ``run`` and ``serve`` with one line, not a traceback.
- Without a token, a request whose ``Host`` is not one of the agent's names nor an IP
  literal gets 421 (DNS rebinding); with a token the token decides.
"""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from aiohttp.test_utils import TestClient, TestServer

from infersight.daemon.config.fields import ConfigError
from infersight.daemon.config.listen import parse_listen, validate_runtime
from infersight.daemon.config.load import Config, with_overrides
from infersight.storage.store import Store
from infersight.web.app import create_app
from infersight.web.hosts import host_name


@pytest.mark.parametrize("listen, host, loopback", [
    ("127.0.0.1:8321", "127.0.0.1", True), ("127.3.2.1:1", "127.3.2.1", True), ("[::1]:80", "::1", True),
    ("localhost:8321", "localhost", True), ("LocalHost:8321", "LocalHost", True), (":8321", "127.0.0.1", True),
    ("[::ffff:127.0.0.1]:1", "::ffff:127.0.0.1", True),
    ("127.evil.example:8321", "127.evil.example", False), ("localhost.evil.example:1", "localhost.evil.example", False),
    ("127.1:8321", "127.1", False), ("0.0.0.0:0", "0.0.0.0", False), ("[::]:0", "::", False),
    ("gpu-node-1:8321", "gpu-node-1", False),
])
def test_listen_addresses_are_parsed_not_prefix_matched(listen, host, loopback):
    addr = parse_listen(listen)
    assert (addr.host, addr.loopback) == (host, loopback)


@pytest.mark.parametrize("listen", ["nonsense", "127.0.0.1:99999", "::1:80", "[127.0.0.1]:80", "a b:80",
                                    "-bad-.example:80", "[::1:80"])
def test_malformed_listen_addresses_are_refused(listen):
    with pytest.raises(ValueError):
        parse_listen(listen)


def test_a_name_starting_with_127_needs_a_token():
    config = with_overrides(Config(), **{"web.listen": "127.evil.example:8321"})
    with pytest.raises(ConfigError, match=r"^web\.listen: 127\.evil\.example is a name"):
        validate_runtime(config)
    validate_runtime(with_overrides(config, **{"web.auth_token": "t"}))


@pytest.mark.parametrize("command", ["run", "serve"])
def test_an_unresolvable_listen_name_ends_with_one_line(tmp_path, command):
    conf = tmp_path / "c.toml"
    conf.write_text('[web]\nauth_token = "t"\n[collectors.gpu]\nenabled = false\n[collectors.stacks]\n'
                    'enabled = false\n[collectors.engines]\nenabled = false\n')
    db = tmp_path / "x.duckdb"
    if command == "serve":
        Store.open(str(db)).close()
    done = subprocess.run([sys.executable, "-m", "infersight.daemon.cli", command, "--config", str(conf),
                           "--db", str(db), "--listen", "no-such-host.invalid:8399"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "no-such-host.invalid:8399" in done.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("header, name", [("evil.example", "evil.example"), ("Evil.Example.:80", "evil.example"),
                                          ("[::1]:8321", "::1"), ("127.0.0.1:1", "127.0.0.1"), ("::1", "::1")])
def test_host_header_names(header, name):
    assert host_name(header) == name


def test_allowed_hosts_are_validated():
    with pytest.raises(ConfigError, match=r"^web\.allowed_hosts\[1\]: expected a host name"):
        with_overrides(Config(), **{"web.allowed_hosts": ("ok.example", "not a name")})
    with_overrides(Config(), **{"web.allowed_hosts": ("ok.example", "10.0.0.1", "[::1]")})


async def _status(config: Config, host: str | None, path: str = "/api/range", token: str | None = None) -> int:
    store = Store.open(":memory:")
    client = TestClient(TestServer(create_app(config, store)))
    await client.start_server()
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if host is not None:
            headers["Host"] = host
        async with client.get(path, headers=headers) as resp:
            await resp.read()
            return resp.status
    finally:
        await client.close()
        store.close()


@pytest.mark.parametrize("host, status", [
    ("evil.example", 421), ("evil.example:8321", 421), ("127.0.0.1.evil.example", 421), ("localhost.evil.example", 421),
    ("127.0.0.1:8321", 200), ("[::1]:8321", 200), ("localhost:8321", 200), ("LOCALHOST", 200),
    ("10.1.2.3:8321", 200),          # an IP literal: a page is same-origin with it only when served from it
    ("ui.example:8321", 200),        # web.external_url's name
    ("alias.example", 200),          # web.allowed_hosts
])
async def test_without_a_token_only_known_hosts_are_answered(host, status):
    config = with_overrides(Config(), **{"web.external_url": "https://ui.example:8321/x",
                                         "web.allowed_hosts": ("alias.example",)})
    assert await _status(config, host) == status


@pytest.mark.parametrize("path", ["/", "/api/health", "/api/processes", "/metrics", "/static/main.js"])
async def test_rebinding_is_refused_on_every_route(path):
    assert await _status(Config(), "evil.example", path) == 421


async def test_the_machines_own_name_is_answered():
    import socket

    assert await _status(Config(), f"{socket.gethostname()}:8321") == 200


async def test_with_a_token_the_token_decides():
    config = dataclasses.replace(Config(), web=dataclasses.replace(Config().web, auth_token="tok"))
    assert await _status(config, "evil.example") == 401
    assert await _status(config, "evil.example", token="tok") == 200
