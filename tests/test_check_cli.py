"""``infersight check``: one line per capability with its status (and the fix under a failing
one), a summary, and exit 0 exactly when the daemon can run."""
from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_check(tmp_path: Path, toml: str, *extra: str) -> tuple[int, list[tuple[str, str, str]], list[str], str]:
    """Run the real CLI; returns (exit code, [(status, name, detail)], fix lines, summary)."""
    cfg = tmp_path / "check.toml"
    cfg.write_text(toml, encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "infersight.daemon.cli", "check", "--config", str(cfg), *extra],
                          capture_output=True, text=True, timeout=120)
    assert proc.stderr == "", proc.stderr
    lines = proc.stdout.splitlines()
    checks, fixes = [], []
    for line in lines[:-1]:
        if line.startswith("      fix: "):
            assert checks and checks[-1][0] != "OK", "a fix line follows a failing or warning check"
            fixes.append(line.strip())
            continue
        status, rest = line[:4].strip(), line[6:]
        assert status in ("OK", "WARN", "FAIL"), line
        if rest.startswith("engine "):  # "engine URL" may overflow the 22-character name column
            kind, url, detail = rest.split(" ", 2)
            name, detail = f"{kind} {url}", detail.strip()
        else:
            name, detail = rest[:22].strip(), rest[22:].strip()
        assert name and detail, line
        checks.append((status, name, detail))
    return proc.returncode, checks, fixes, lines[-1]


def base_toml(tmp_path: Path, port: int | None = None, gpu: bool = True, endpoints=()) -> str:
    eps = ", ".join(f'"{e}"' for e in endpoints)
    return (f'[storage]\npath = "{tmp_path / "db" / "agent.duckdb"}"\n'
            f'[web]\nlisten = "127.0.0.1:{port or free_port()}"\n'
            f'[collectors.gpu]\nenabled = {"true" if gpu else "false"}\n'
            f'[collectors.engines]\nendpoints = [{eps}]\ntimeout_s = 2.0\n')


def test_check_passes_here_with_one_line_per_capability(tmp_path):
    code, checks, fixes, summary = run_check(tmp_path, base_toml(tmp_path))
    names = [name for _, name, _ in checks]
    assert names == ["storage", "web port", "ptrace", "py-spy", "targets", "NVML", "GPM"]
    assert code == 0
    counts = [sum(st == k for st, _, _ in checks) for k in ("OK", "WARN")]
    verdict = "can run with less (see WARN)" if counts[1] else "can run"
    assert summary == f"{verdict}: {counts[0]} passed, {counts[1]} warned, 0 failed", "a WARN is not a pass"
    assert all(status != "FAIL" for status, _, _ in checks)
    by_name = {name: (status, detail) for status, name, detail in checks}
    assert by_name["storage"][0] == "OK" and str(tmp_path) in by_name["storage"][1]
    assert by_name["py-spy"][0] == "OK" and "py-spy" in by_name["py-spy"][1]  # a dependency: always present
    not_ok = [status for status, _, _ in checks if status != "OK"]
    assert len(fixes) <= len(not_ok) and bool(fixes) == bool(not_ok)  # fixes only under WARN/FAIL lines
    assert not (tmp_path / "db").exists()  # check probes, it does not create the store


def test_gpu_disabled_skips_nvml(tmp_path):
    code, checks, _, _ = run_check(tmp_path, base_toml(tmp_path, gpu=False))
    assert code == 0 and [n for _, n, _ in checks] == ["storage", "web port", "ptrace", "py-spy", "targets"]


def test_busy_port_fails_and_exits_1(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code, checks, fixes, summary = run_check(tmp_path, base_toml(tmp_path, port=busy.getsockname()[1], gpu=False))
    assert code == 1
    assert ("FAIL", "web port") == checks[1][:2] and "cannot be bound" in checks[1][2]
    assert any("web.listen" in f for f in fixes)
    assert summary.startswith("cannot run: ") and summary.endswith(", 1 failed")
    assert sum(int(n) for n in summary.split(": ")[1].replace(",", "").split()[::2]) == 5


def test_unusable_storage_folder_fails(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    toml = base_toml(tmp_path, gpu=False).replace(str(tmp_path / "db" / "agent.duckdb"), str(blocker / "a.duckdb"))
    code, checks, fixes, _ = run_check(tmp_path, toml)
    assert code == 1
    assert checks[0][:2] == ("FAIL", "storage") and "not writable" in checks[0][2]
    assert any("storage.path" in f for f in fixes)


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[str, bytes]] = {}

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path not in self.routes:
            self.send_error(404)
            return
        ctype, body = self.routes[self.path]
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def metrics_server():
    _Handler.routes = {
        "/metrics": ("text/plain; version=0.0.4", (FIXTURES / "engine-metrics" / "vllm.prom").read_bytes()),
        "/ui": ("text/html", b"<html><body>dashboard</body></html>"),
    }
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_engine_endpoints_get_a_line_each(tmp_path, metrics_server):
    dead = f"http://127.0.0.1:{free_port()}/metrics"
    endpoints = [metrics_server + "/metrics", metrics_server + "/ui", metrics_server + "/missing", dead]
    code, checks, _, _ = run_check(tmp_path, base_toml(tmp_path, gpu=False, endpoints=endpoints))
    engines = {name: (status, detail) for status, name, detail in checks if name.startswith("engine ")}
    assert list(engines) == [f"engine {e}" for e in endpoints]
    lines = (FIXTURES / "engine-metrics" / "vllm.prom").read_bytes().count(b"\n")
    assert engines[f"engine {endpoints[0]}"] == ("OK", f"Prometheus text, {lines} lines")
    assert engines[f"engine {endpoints[1]}"][0] == "WARN" and "not with Prometheus text" in engines[
        f"engine {endpoints[1]}"][1]
    assert engines[f"engine {endpoints[2]}"] == ("WARN", "HTTP 404")
    assert engines[f"engine {dead}"][0] == "WARN" and "unreachable" in engines[f"engine {dead}"][1]
    assert code == 0  # engines that are down do not stop the agent from running


def test_check_names_the_bad_key_and_exits_2(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[web]\nlisten = "everywhere"\n', encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "infersight.daemon.cli", "check", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == ["infersight: config error: web.listen: expected HOST:PORT, got 'everywhere'"]
