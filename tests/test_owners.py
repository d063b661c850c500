"""Only the operator's processes are profiled (issue 30, item 1).

A real process started under another uid (``nobody``) with a matching command line, next
to the same program under the agent's own uid: discovery finds only the latter, a live agent
samples only the latter, and the stranger's GPU process is at most a neighbour. The allow
lists (users, systemd units, cgroups) are checked on procfs files written for the purpose,
and their config errors name the key.
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from pathlib import Path

import aiohttp
import pytest

from infersight.daemon.check import check_targets
from infersight.daemon.config.fields import ConfigError
from infersight.daemon.config.load import Config, TargetsConfig, with_overrides
from infersight.daemon.runtime import Daemon
from infersight.daemon.sdnotify import Notifier
from infersight.daemon.stacks.discovery import Discovery
from infersight.daemon.stacks.owners import Owner, OwnerPolicy, read_owner, unit_of
from infersight.daemon.stacks.roles import FOREIGN

NOBODY = 65534
# the system Python: the test's own interpreter may live under /root, which nobody cannot read
SLEEPER = ["/usr/bin/python3", "-c", "import time; print('ready', flush=True); time.sleep(300)"]


@pytest.fixture
def twins():
    """(mine, stranger): the same sleeper with 'vllm serve TAG' as root and as nobody."""
    if not Path("/usr/bin/python3").exists():
        pytest.fail("/usr/bin/python3 is needed to run a process as nobody: apt-get install python3")
    tag = f"isight-{uuid.uuid4().hex[:8]}"
    procs = []
    for user in (None, NOBODY):
        kw = {"user": user, "group": user, "cwd": "/"} if user is not None else {}
        proc = subprocess.Popen([*SLEEPER, "vllm", "serve", tag], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True, **kw)
        assert proc.stdout.readline().strip() == "ready"
        procs.append(proc)
    yield tag, procs[0], procs[1]
    for proc in procs:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_another_users_matching_process_is_not_a_target(twins, caplog):
    tag, mine, stranger = twins
    assert read_owner("/proc", stranger.pid).uids == (NOBODY, NOBODY)
    caplog.set_level("INFO", logger="infersight.discovery")
    found = {f.target.pid: f for f in Discovery(TargetsConfig(cmdline_patterns=(tag,)), "h").scan_detailed()}
    assert mine.pid in found and found[mine.pid].sample and found[mine.pid].target.role == "api_server"
    assert stranger.pid not in found
    refused = [r.getMessage() for r in caplog.records if "event=target_refused" in r.getMessage()]
    assert len(refused) == 1 and f"pid={stranger.pid} uid={NOBODY}" in refused[0]


@pytest.mark.parametrize("allowed", [("nobody",), (str(NOBODY),), ("*",)])
def test_widening_the_allow_list_admits_the_user(twins, allowed):
    tag, mine, stranger = twins
    config = TargetsConfig(cmdline_patterns=(tag,), allowed_users=allowed)
    found = {f.target.pid: f for f in Discovery(config, "h").scan_detailed()}
    assert mine.pid in found, "the agent's own user is always allowed"
    assert stranger.pid in found and found[stranger.pid].sample


def test_another_users_gpu_process_is_only_a_neighbour(twins):
    tag, mine, stranger = twins
    # the stranger holds GPU 0 and names itself like an engine; nothing of ours is on GPU 0
    found = {f.target.pid: f for f in Discovery(TargetsConfig(cmdline_patterns=(tag,)), "h",
                                                nvml={stranger.pid: (0,)}).scan_detailed()}
    hit = found[stranger.pid]
    assert hit.target.role == FOREIGN and not hit.sample
    assert found[mine.pid].sample


def test_an_explicit_pid_is_the_operators_choice(twins):
    tag, _, stranger = twins
    found = {f.target.pid: f for f in Discovery(TargetsConfig(cmdline_patterns=(tag,), pids=(stranger.pid,)),
                                                "h").scan_detailed()}
    assert found[stranger.pid].reasons == ("pid",)


async def test_a_live_agent_samples_only_the_allowed_twin(twins, make_config, pyspy):
    tag, mine, stranger = twins
    since = int(time.time()) - 600
    config = make_config(**{"collectors.stacks.enabled": True, "collectors.stacks.recording_s": 2,
                            "collectors.stacks.handover_s": 0.5, "storage.flush_interval_s": 0.2,
                            "analysis.enabled": False, "targets.cmdline_patterns": (tag,),
                            "targets.discovery_interval_s": 0.5})
    daemon = Daemon(config, notifier=Notifier({}))
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.ready.wait(), 60)
        async with aiohttp.ClientSession() as session:
            async def get(path: str) -> dict:
                async with session.get(daemon.site_url + path) as resp:
                    return json.loads(await resp.text())

            for _ in range(300):       # until the allowed twin has stored samples
                threads = (await get(f"/api/threads?from={since}"))["threads"]
                if any(t["pid"] == mine.pid for t in threads):
                    break
                await asyncio.sleep(0.1)
            assert any(t["pid"] == mine.pid for t in threads), "the allowed twin is sampled"
            assert all(t["pid"] != stranger.pid for t in threads)
            processes = (await get("/api/processes?all=1"))["processes"]
            assert mine.pid in {p["pid"] for p in processes} and stranger.pid not in {p["pid"] for p in processes}
            flame = await get(f"/api/flamegraph?from={since}&pid={stranger.pid}")
            assert flame["value"] == 0
            health = await get("/api/health")
            assert stranger.pid not in {t["pid"] for t in health.get("targets", [])}
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0


def test_check_names_the_refused_process_and_the_fix(twins):
    tag, mine, stranger = twins
    config = with_overrides(Config(), **{"targets.cmdline_patterns": (tag,)})
    result = check_targets(config)
    assert result.status == "warn" and f"pid {stranger.pid} (uid {NOBODY}" in result.detail
    assert result.detail.startswith("1 matching process(es) allowed, 1 refused") and "allowed_users" in result.fix
    widened = with_overrides(config, **{"targets.allowed_users": ("root", "nobody")})
    assert check_targets(widened).status == "ok"


@pytest.mark.parametrize("cgroup, unit", [
    ("/system.slice/vllm.service", "vllm.service"), ("/system.slice/vllm.service/payload", "vllm.service"),
    ("/inference.slice/sglang@0.service", "sglang@0.service"), ("/system.slice/docker-ab12.scope", "docker-ab12.scope"),
    ("/user.slice/user-1000.slice/user@1000.service/app.slice/vllm.service", None),
    ("/user.slice/user-1000.slice/session-3.scope", None), ("/", None), ("", None),
])
def test_units_come_from_the_cgroup_path_outside_user_slice(cgroup, unit):
    assert unit_of(cgroup) == unit


@pytest.mark.parametrize("owner, allowed", [
    (Owner((0, 0), "/"), True),                                         # root, the default
    (Owner((1234, 1234), "/"), True),                                   # the agent's own uid (passed below)
    (Owner((NOBODY, NOBODY), "/"), False),
    (Owner((NOBODY, 0), "/"), False),                                   # real and effective uid must both pass
    (Owner(None, ""), False),                                           # unreadable: allowed by nothing
    (Owner((NOBODY, NOBODY), "/system.slice/vllm.service"), True),      # an allowed unit
    (Owner((NOBODY, NOBODY), "/system.slice/other.service"), False),
    (Owner((NOBODY, NOBODY), "/user.slice/user-65534.slice/user@65534.service/app.slice/vllm.service"), False),
    (Owner((NOBODY, NOBODY), "/kubepods.slice/kubepods-pod1.slice/cri-containerd-1.scope"), True),
    (Owner((NOBODY, NOBODY), "/kubepods-besteffort.slice"), False),
])
def test_the_policy(owner, allowed):
    config = TargetsConfig(allowed_units=("vllm*.service",), allowed_cgroups=("/kubepods.slice",))
    assert OwnerPolicy(config, own_uid=1234).allows(owner) is allowed


def test_read_owner_on_procfs_files(tmp_path):
    pid = tmp_path / "42"
    pid.mkdir()
    (pid / "status").write_text("Name:\tpython3\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n")
    (pid / "cgroup").write_text("12:name=systemd:/system.slice/vllm.service\n4:memory:/x\n0::/\n")
    assert read_owner(str(tmp_path), 42) == Owner((1000, 0), "/system.slice/vllm.service")   # hybrid: v1 systemd
    (pid / "cgroup").write_text("0::/system.slice/sglang.service\n")
    assert read_owner(str(tmp_path), 42).cgroup == "/system.slice/sglang.service"
    assert read_owner(str(tmp_path), 43) == Owner(None, "")


@pytest.mark.parametrize("key, value, message", [
    ("targets.allowed_users", ("root", "no-such-user-xyz"), r"^targets\.allowed_users\[1\]: no user named"),
    ("targets.allowed_units", ("a/b.service",), r"^targets\.allowed_units\[0\]: expected a unit name"),
    ("targets.allowed_cgroups", ("kubepods.slice",), r"^targets\.allowed_cgroups\[0\]: expected a cgroup path"),
])
def test_allow_list_errors_name_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message):
        with_overrides(Config(), **{key: value})
