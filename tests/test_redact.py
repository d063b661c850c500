"""No secret leaves the host: command-line redaction, form by form and end to end.

The forms: ``--api-key K`` and ``--api-key=K`` (any flag whose last word is key, token,
secret, password, ...), env-style ``*_KEY=V`` / ``*_TOKEN=V`` / ``*_SECRET=V``, quoted pairs
in JSON or code, credentials in URLs and query strings, auth headers, and bare tokens of a
known shape. End to end: a real process started with ``--api-key sekrit`` and discovered by
the running agent never shows ``sekrit`` in /api/processes, /api/health or a Parquet export.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infersight.daemon.exporters.parquet import export_range
from infersight.daemon.runtime import Daemon
from infersight.daemon.sdnotify import Notifier
from infersight.daemon.stacks.redact import MASK, is_secret_name, redact_args, redact_cmdline
from infersight.storage.store import Store

PROGRAMS = Path(__file__).parent / "programs"
SECRET = "sekrit-7f3a"


@pytest.mark.parametrize("args, expected", [
    # --flag VALUE and --flag=VALUE
    (["vllm", "serve", "m", "--api-key", SECRET, "--port", "8000"], ["vllm", "serve", "m", "--api-key", MASK,
                                                                   "--port", "8000"]),
    (["vllm", "serve", "m", f"--api-key={SECRET}"], ["vllm", "serve", "m", f"--api-key={MASK}"]),
    (["x", "--hf-token", SECRET], ["x", "--hf-token", MASK]),
    (["x", "--token", SECRET], ["x", "--token", MASK]),
    (["x", f"--password={SECRET}"], ["x", f"--password={MASK}"]),
    (["x", "--client-secret", SECRET, "--db-password", SECRET], ["x", "--client-secret", MASK, "--db-password", MASK]),
    (["x", "--API_KEY", SECRET], ["x", "--API_KEY", MASK]),
    (["x", "-token", SECRET], ["x", "-token", MASK]),
    # env-style NAME=VALUE (env wrappers, docker -e, key=value overrides)
    (["env", f"HF_TOKEN={SECRET}", "python", "serve.py"], ["env", f"HF_TOKEN={MASK}", "python", "serve.py"]),
    (["docker", "run", "-e", f"OPENAI_API_KEY={SECRET}"], ["docker", "run", "-e", f"OPENAI_API_KEY={MASK}"]),
    ([f"AWS_SECRET_ACCESS_KEY={SECRET}"], [f"AWS_SECRET_ACCESS_KEY={MASK}"]),
    ([f"VLLM_API_SECRET={SECRET}"], [f"VLLM_API_SECRET={MASK}"]),
    # quoted pairs in code and JSON
    (["python", "-c", f"from srv import main; main(api_key='{SECRET}', port=1)"],
     ["python", "-c", f"from srv import main; main(api_key='{MASK}', port=1)"]),
    (["x", "--hf-overrides", f'{{"api_key": "{SECRET}", "n": 2}}'], ["x", "--hf-overrides", f'{{"api_key": "{MASK}", "n": 2}}']),
    # credentials in URLs
    (["x", "--db", f"postgres://svc:{SECRET}@db:5432/x"], ["x", "--db", f"postgres://{MASK}@db:5432/x"]),
    (["git", "clone", f"https://{SECRET}@github.com/org/repo"], ["git", "clone", f"https://{MASK}@github.com/org/repo"]),
    (["x", f"https://h/models?token={SECRET}&rev=main"], ["x", f"https://h/models?token={MASK}&rev=main"]),
    (["x", f"https://acct.blob.core.windows.net/c?sv=2024&sig={SECRET}"],
     ["x", f"https://acct.blob.core.windows.net/c?sv=2024&sig={MASK}"]),
    # headers
    (["curl", "-H", f"Authorization: Bearer {SECRET}", "u"], ["curl", "-H", f"Authorization: Bearer {MASK}", "u"]),
    # bare tokens of a known shape
    (["x", "hf_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3"], ["x", MASK]),
    (["x", "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2"], ["x", MASK]),
    (["x", "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4"], ["x", MASK]),
    (["x", "AKIA" + "ABCDEFGHIJKLMNOP"], ["x", MASK]),
    # a setproctitle title holds the whole command line in one argument
    ([f"ray::Serve --api-key {SECRET} --port 1"], [f"ray::Serve --api-key {MASK} --port 1"]),
])
def test_each_secret_form_is_masked(args: list[str], expected: list[str]) -> None:
    assert redact_args(args) == expected
    assert SECRET not in redact_cmdline(" ".join(args))


# The forms issue 30 found leaking (one case each): the tokenizer reads them by structure.
ISSUE_30_FORMS = {
    "camelCase flag": (["vllm", "serve", "m", "--hfToken", SECRET], ["vllm", "serve", "m", "--hfToken", MASK]),
    "plural, comma list": (["vllm", "serve", "--api-keys", f"{SECRET},{SECRET}2", "--port", "8000"],
                           ["vllm", "serve", "--api-keys", MASK, "--port", "8000"]),
    "value starting with a dash": (["vllm", "serve", "--api-key", f"-{SECRET}", "--port", "8000"],
                                   ["vllm", "serve", "--api-key", MASK, "--port", "8000"]),
    "webhook URL": (["bot", "--webhook-url", f"https://hooks.slack.com/services/T0/B0/{SECRET}"],
                    ["bot", "--webhook-url", MASK]),
    "header argument": (["curl", "--header", f"X-Api-Key: {SECRET}", "https://api"],
                        ["curl", "--header", f"X-Api-Key: {MASK}", "https://api"]),
    "--secrets": (["x", "--secrets", SECRET], ["x", "--secrets", MASK]),
    "--bearer": (["x", "--bearer", SECRET], ["x", "--bearer", MASK]),
    "--jwt": (["x", "--jwt", SECRET], ["x", "--jwt", MASK]),
    "--access-key-id": (["x", "--access-key-id", SECRET], ["x", "--access-key-id", MASK]),
    "cookie header": (["curl", "-H", f"Cookie: a=1; session={SECRET}", "https://api"],
                      ["curl", "-H", f"Cookie: {MASK}", "https://api"]),
    "assignment in python -c": (["python", "-c", f"import srv\napi_key = '{SECRET}'\nsrv.run(api_key)"],
                                ["python", "-c", f"import srv\napi_key = '{MASK}'\nsrv.run(api_key)"]),
}


@pytest.mark.parametrize("form", ISSUE_30_FORMS)
def test_issue_30_forms_are_masked(form: str) -> None:
    args, expected = ISSUE_30_FORMS[form]
    assert redact_args(args) == expected
    joined = redact_cmdline(" ".join(args))            # a recording's (or a title's) joined line
    assert SECRET not in joined and MASK in joined


@pytest.mark.parametrize("args, expected", [
    (["x", "--webhook-url=" + SECRET], ["x", f"--webhook-url={MASK}"]),
    (["x", "--apiKey", SECRET], ["x", "--apiKey", MASK]),
    (["x", "--APIKey=" + SECRET], ["x", f"--APIKey={MASK}"]),
    (["x", "--hftoken", SECRET], ["x", "--hftoken", MASK]),
    (["python", "-c", f"import os; os.environ['HF_TOKEN'] = '{SECRET}'"],
     ["python", "-c", f"import os; os.environ['HF_TOKEN'] = '{MASK}'"]),
    (["python", "-c", f"cfg = {{'password': \"{SECRET}\", 'n': 1}}"],
     ["python", "-c", f"cfg = {{'password': \"{MASK}\", 'n': 1}}"]),
    (["x", f"https://discord.com/api/webhooks/123/{SECRET}"], ["x", f"https://discord.com/api/webhooks/{MASK}"]),
    (["x", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlMTIzNDU2"], ["x", MASK]),
    (["x", "--token", f"'{SECRET}'"], ["x", "--token", MASK]),
    ([f"ray::Serve --jwt {SECRET} --port 1"], [f"ray::Serve --jwt {MASK} --port 1"]),
])
def test_more_forms_of_the_same_structures(args: list[str], expected: list[str]) -> None:
    assert redact_args(args) == expected


@pytest.mark.parametrize("args", [
    ["python3", "-m", "vllm.entrypoints.cli.main", "serve", "meta-llama/Llama-3-8B", "--tokenizer", "hf-org/tok",
     "--max-num-batched-tokens", "8192", "--return-tokens-as-token-ids", "--ssl-keyfile", "/etc/k.pem",
     "--tensor-parallel-size", "2", "--port", "8000"],
    ["env", "MAX_TOKENS=5", "TOKENIZERS_PARALLELISM=false", "CUDA_VISIBLE_DEVICES=0,1", "python", "serve.py"],
    ["VLLM::EngineCore"],
    ["python3", "-c", "from multiprocessing.resource_tracker import main;main(25)"],
    ["x", "https://huggingface.co/org/model?revision=main"],
    ["x", "--use-auth-token", "--model", "m"],     # a flag that takes no value, followed by another flag
    ["vllm", "serve", "--return-tokens-as-token-ids", "--port", "1", "--client-id", "abc", "--tokenizer-mode",
     "auto", "--max-model-len", "4096", "--kv-cache-dtype", "fp8", "--served-model-name", "key-model"],
    ["ray::ServeReplica:app:Deployment", "http://127.0.0.1:8000/v1", "host:8000", "a=b", "KEYS_DIR=/k"],
    ["python", "-c", "import x; x.run(tokens=5, max_tokens=7, key_path='/k.pem')"],
])
def test_ordinary_arguments_are_kept(args: list[str]) -> None:
    assert redact_args(args) == args


@pytest.mark.parametrize("name, secret", [
    ("--api-key", True), ("--hf-token", True), ("OPENAI_API_KEY", True), ("db.password", True),
    ("--hfToken", True), ("--api-keys", True), ("--webhook-url", True), ("X-Api-Key", True), ("--secrets", True),
    ("--bearer", True), ("--jwt", True), ("--access-key-id", True), ("Cookie", True), ("Set-Cookie", True),
    ("AWS_ACCESS_KEY_ID", True), ("xApiKey", True), ("authtoken", True),
    ("--tokenizer", False), ("--max-num-batched-tokens", False), ("--ssl-keyfile", False), ("KEY_PATH", False),
    ("--return-tokens-as-token-ids", False), ("--client-id", False), ("--monkey", False), ("max_tokens", False),
])
def test_a_name_is_secret_by_its_words(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_masking_is_idempotent() -> None:
    once = redact_args(["vllm", "serve", "--api-key", SECRET, f"HF_TOKEN={SECRET}", f"https://u:{SECRET}@h"])
    assert redact_args(once) == once and SECRET not in " ".join(once)


async def test_a_discovered_process_never_serves_its_api_key(make_config, spawn, tmp_path):
    tag = f"isight-{uuid.uuid4().hex[:8]}"
    engine = spawn([str(PROGRAMS / "tiny_engine.py"), "0", "100", "4", "0", "vllm", "serve", tag,
                    "--api-key", SECRET, f"--hf-token={SECRET}"])
    port = json.loads(engine.first_line)["port"]
    db = str(tmp_path / "agent.duckdb")
    config = make_config(**{"storage.path": db, "storage.flush_interval_s": 0.2, "analysis.enabled": False,
                            "targets.cmdline_patterns": (tag,), "targets.discovery_interval_s": 0.5,
                            "collectors.stacks.enabled": True, "collectors.engines.enabled": True})
    daemon = Daemon(config, notifier=Notifier({}))
    task = asyncio.create_task(daemon.run())
    bodies: dict[str, str] = {}
    try:
        await asyncio.wait_for(daemon.ready.wait(), 60)
        async with aiohttp.ClientSession() as session:
            for _ in range(300):   # until the target is stored and its endpoint (found on its port) scraped
                for name, path in (("processes", "/api/processes?all=1"), ("engines", "/api/engines")):
                    async with session.get(daemon.site_url + path) as resp:
                        bodies[name] = await resp.text()
                scraped = [e for e in json.loads(bodies["engines"])["endpoints"]
                           if e["url"].endswith(f":{port}/metrics") and e["scrapes_ok"] >= 2]
                if str(engine.pid) in bodies["processes"] and scraped:
                    break
                await asyncio.sleep(0.1)
            async with session.get(daemon.site_url + "/api/health") as resp:
                bodies["health"] = await resp.text()
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0
    (mine,) = [p for p in json.loads(bodies["processes"])["processes"] if p["pid"] == engine.pid]
    assert f"--api-key {MASK}" in mine["cmdline"] and f"--hf-token={MASK}" in mine["cmdline"]
    assert tag in mine["cmdline"] and mine["role"] == "api_server"
    assert f"--api-key {MASK}" in bodies["health"]                # the target is in the health answer, masked
    for name, body in bodies.items():
        assert SECRET not in body, name

    # a Parquet export of everything the agent stored (its endpoint's samples included)
    store = Store.open(db, read_only=True)
    try:
        results = store.read_sync(export_range, tmp_path / "parquet", config.host, time.time() - 7200,
                                  time.time() + 3600)
    finally:
        store.close()
    files = list((tmp_path / "parquet").rglob("*.parquet"))
    assert any("engine_samples" in str(f) for f in files) and sum(r.rows for r in results) > 0
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), path


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.sampled_from(list("ab-_=:'\" \n,&?#[]{}()@/.") + ["token", "key", "K", "--", "***"]),
                         max_size=20).map("".join), max_size=8))
def test_the_tokenizer_takes_any_text_and_masking_is_stable(args: list[str]) -> None:
    once = redact_args(args)
    assert len(once) == len(args)
    assert redact_args(once) == once
    assert redact_cmdline(redact_cmdline(" ".join(args))) == redact_cmdline(" ".join(args))
