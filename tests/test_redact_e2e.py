"""Every secret form of issue 30 stays masked end to end, one test per form.

One real process per form (tests/programs/idle.py with the form's arguments on its command
line, each with its own secret) is discovered by a real agent (``infersight run`` as a
subprocess, stacks collector on); then each form's secret must be absent from
``/api/processes``, ``/api/health``, the database (its targets as the storage API reads
them, and the file's bytes) and a Parquet export of everything stored, while the masked
command line is there.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from agent_proc import AgentProcess
from test_redact import ISSUE_30_FORMS, SECRET

from infersight.daemon.exporters.parquet import export_range
from infersight.daemon.stacks.redact import MASK
from infersight.storage import series
from infersight.storage.store import Store

PROGRAMS = Path(__file__).parent / "programs"
FORMS = list(ISSUE_30_FORMS)


def secret_of(i: int) -> str:
    return f"s3kr{i:02d}x{SECRET}"


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.read().decode()


@pytest.fixture(scope="module")
def seen(tmp_path_factory):
    """What the agent served and stored about one process per form."""
    tmp = tmp_path_factory.mktemp("redact-e2e")
    tag = f"isight-{uuid.uuid4().hex[:8]}"
    procs = []
    for i, form in enumerate(FORMS):
        args = [a.replace(SECRET, secret_of(i)) for a in ISSUE_30_FORMS[form][0]]
        procs.append(subprocess.Popen([sys.executable, str(PROGRAMS / "idle.py"), "300", tag, f"form{i:02d}", *args],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    db = tmp / "agent.duckdb"
    conf = tmp / "c.toml"
    conf.write_text(f"""[storage]
flush_interval_s = 0.2
[analysis]
enabled = false
[targets]
cmdline_patterns = ["{tag}"]
discovery_interval_s = 0.5
[collectors.gpu]
enabled = false
[collectors.engines]
enabled = false
""")
    agent = AgentProcess(["--config", str(conf), "--db", str(db), "--listen", "127.0.0.1:0"])
    out: dict = {}
    try:
        url = agent.wait_started()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            out["processes"] = _get(url + "/api/processes?all=1")
            health = _get(url + "/api/health")
            listed = {p["pid"] for p in json.loads(out["processes"])["processes"]}
            if all(p.pid in listed for p in procs) and all(str(p.pid) in health for p in procs):
                break
            time.sleep(0.3)
        out["health"] = _get(url + "/api/health")
        assert agent.stop(timeout=30) == 0
    finally:
        agent.kill()
        for p in procs:
            p.kill()
            p.wait()
    store = Store.open(str(db), read_only=True)
    try:
        out["db_rows"] = json.dumps(store.read_sync(series.all_processes))
        store.read_sync(export_range, tmp / "parquet", "any", time.time() - 7200, time.time() + 3600)
    finally:
        store.close()
    out["db_bytes"] = b"".join(p.read_bytes() for p in tmp.glob("agent.duckdb*") if p.is_file())
    out["parquet"] = b"".join(p.read_bytes() for p in (tmp / "parquet").rglob("*.parquet"))
    out["pids"] = {f"form{i:02d}": p.pid for i, p in enumerate(procs)}
    return out


@pytest.mark.parametrize("i", range(len(FORMS)), ids=FORMS)
def test_the_form_is_masked_everywhere(seen, i):
    secret = secret_of(i)
    marker = f"form{i:02d}"
    (mine,) = [p for p in json.loads(seen["processes"])["processes"] if marker in p["cmdline"]]
    assert mine["pid"] == seen["pids"][marker] and MASK in mine["cmdline"], mine["cmdline"]
    assert marker in seen["health"] and marker in seen["db_rows"]
    for name in ("processes", "health", "db_rows"):
        assert secret not in seen[name], name
    assert secret.encode() not in seen["db_bytes"]
    assert seen["parquet"] and secret.encode() not in seen["parquet"]
