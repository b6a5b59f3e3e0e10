"""The attack suite: untrusted tasks try to break out, under every runtime of this host, and must fail.

Each test runs a real task (process runtime: a host process; OCI: runc; Docker: dockerd) that attempts
one attack, and asserts the refusal from the outside where it can (host files, host cgroups, the victim
still running), not only from what the task says. The attack binary's own check (attack.c) reports
"SUCCEEDED" when the kernel let it through; run as host root, every attack there does succeed.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from pathlib import Path

import pytest

from agent.runtime.base import ExitStatus, Runtime
from tests.runtime.contract import wait_exit, wait_for
from tests.security.conftest import Harness


def run(h: Harness, script: str, **kw: object) -> tuple[ExitStatus, str, str]:
    task_id = h.start(script, **kw)  # type: ignore[arg-type]
    status = wait_exit(h.runtime, task_id)
    out = h.runtime.logs(task_id, "stdout").decode(errors="replace")
    err = h.runtime.logs(task_id, "stderr").decode(errors="replace")
    return status, out, err


def _alive(runtime: Runtime, task_id: str) -> bool:
    return runtime.poll(task_id) is None


# --- secrets of other processes, the master and the agent -------------------------------------------------


def test_cannot_read_another_process_environ(h: Harness, host_secret_process: tuple[int, str]) -> None:
    pid, secret = host_secret_process
    assert secret.encode() in Path(f"/proc/{pid}/environ").read_bytes()  # it is there to be stolen
    _, out, _ = run(h, f"cat /proc/{pid}/environ; for f in /proc/[0-9]*/environ; do cat $f; done; env; "
                       "echo END")
    assert out.endswith("END\n")
    assert secret not in out
    assert "TITUS_AGENT_TOKEN" not in out and "TITUS_API_TOKEN" not in out


def test_cannot_read_master_data_and_token_files(h: Harness, tmp_path: Path) -> None:
    """The master's data dir and token files as titus dev lays them out (0700 dir, 0600 files)."""
    from master.server import MasterConfig, MasterServer
    from titus.dev import _token

    data = tmp_path / "cluster"
    data.mkdir(mode=0o700)
    token, _ = _token(data, "api-token", "TITUS_TEST_UNSET_TOKEN")
    server = MasterServer(MasterConfig(host="127.0.0.1", port=0, data_dir=data / "master", api_token=token,
                                       agent_token="agent-" + secrets.token_hex(8), init_cluster=True))
    try:
        db_files = [p for p in (data / "master").rglob("*") if p.is_file()]
        assert db_files, "the master wrote its store"
        for p in [data / "api-token", *db_files]:
            assert p.stat().st_mode & 0o077 == 0, f"{p} is readable by others at rest"
        assert (data / "master").stat().st_mode & 0o077 == 0
        paths = " ".join(str(p) for p in [data / "api-token", *db_files])
        _, out, _ = run(h, f"ls -la {data} {data}/master; cat {paths}; echo END")
    finally:
        server.shutdown()
    assert out.endswith("END\n")
    assert token not in out
    assert "SQLite format" not in out


# --- other tasks -------------------------------------------------------------------------------------


def test_cannot_signal_another_task(h: Harness) -> None:
    victim = h.start("echo up; sleep 300")
    wait_for(lambda: h.runtime.logs(victim, "stdout") == b"up\n", what="the victim to run")
    victim_pid = h.host_pid(victim)
    run(h, f"kill -9 {victim_pid}; kill -9 -1; for p in /proc/[0-9]*; do kill -9 ${{p#/proc/}}; done; "
           "echo END")
    time.sleep(0.3)
    assert _alive(h.runtime, victim), "the victim task was killed by its neighbour"


def test_cannot_ptrace(h: Harness, host_secret_process: tuple[int, str]) -> None:
    pid, _ = host_secret_process
    # A process outside the task (invisible in a container's PID namespace, another uid on the host)...
    _, out, _ = run(h, f"{h.tool} ptrace {pid}")
    assert "REFUSED ptrace" in out, out
    if h.kind == "oci":
        # ...and under the OCI runtime not even its own child: the seccomp profile refuses ptrace.
        _, out, _ = run(h, f"{h.tool} ptrace")
        assert "REFUSED ptrace EPERM" in out, out


# --- cgroups -----------------------------------------------------------------------------------------


def _host_cgroup(pid: int, controller: str) -> str:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return path
    raise AssertionError(f"no {controller} cgroup for pid {pid}")


def test_cannot_raise_own_cgroup_limits(h: Harness) -> None:
    script = (
        "for c in pids memory cpu; do p=$(grep \":$c[:,]\" /proc/self/cgroup | head -1 | cut -d: -f3); "
        "for d in /sys/fs/cgroup/$c$p /sys/fs/cgroup/$c; do "
        "echo max > $d/pids.max; echo 1073741824 > $d/memory.limit_in_bytes; "
        "echo -1 > $d/cpu.cfs_quota_us; done; done 2>/dev/null; echo tried; sleep 300"
    )
    task_id = h.start(script, pids_limit=40, memory_mb=64, cpu=0.5)
    wait_for(lambda: h.runtime.logs(task_id, "stdout") == b"tried\n", what="the attempts")
    pid = h.host_pid(task_id)
    root = Path("/sys/fs/cgroup")
    assert (root / "pids" / _host_cgroup(pid, "pids").lstrip("/") / "pids.max").read_text().strip() == "40"
    memory = root / "memory" / _host_cgroup(pid, "memory").lstrip("/") / "memory.limit_in_bytes"
    assert int(memory.read_text()) == 64 * 2**20
    quota = root / "cpu" / _host_cgroup(pid, "cpu").lstrip("/") / "cpu.cfs_quota_us"
    assert int(quota.read_text()) == 50_000


def test_cannot_join_the_root_cgroup(h: Harness) -> None:
    task_id = h.start("for c in pids memory cpu,cpuacct cpu; do echo $$ > /sys/fs/cgroup/$c/cgroup.procs; "
                      "done 2>/dev/null; echo tried; sleep 300")
    wait_for(lambda: h.runtime.logs(task_id, "stdout") == b"tried\n", what="the attempts")
    pid = h.host_pid(task_id)
    for controller in ("pids", "memory", "cpu"):
        assert _host_cgroup(pid, controller) not in ("/", ""), f"the task escaped to the root {controller}"


# --- kernel ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attack", ["mount", "module", "rawsock"])
def test_privileged_kernel_operations_are_refused(h: Harness, attack: str) -> None:
    status, out, err = run(h, f"{h.tool} {attack}")
    assert f"REFUSED {attack}" in out, out + err
    assert "SUCCEEDED" not in out
    assert status.exit_code == 0
    if h.kind == "oci":
        assert f"REFUSED {attack} EPERM" in out  # seccomp or a missing capability, never the kernel's ENOSYS
    if attack == "mount":
        assert not any("titus-attack-mnt" in line for line in Path("/proc/mounts").read_text().splitlines())


def test_setuid_binary_gives_no_privileges(h: Harness) -> None:
    """A setuid-root binary run by a non-root task: no_new_privs keeps its effective uid."""
    _, out, _ = run(h, f"ls -ln {h.suid_tool}; {h.suid_tool} euid", user="nobody")
    assert "-rwsr-xr-x" in out, out  # the bit is really set
    euid = int(out.split("EUID", 1)[1].split()[0])
    assert euid != 0


# --- resources ---------------------------------------------------------------------------------------


def test_disk_beyond_its_limit_ends_the_task(h: Harness) -> None:
    if h.kind == "docker":
        pytest.skip("Docker's per-container disk quota needs overlay2 on XFS with project quotas, which "
                    "this host's filesystem lacks")
    task_id = h.start("dd if=/dev/zero of=./big bs=1M count=64 2>&1; echo wrote; sleep 300", disk_mb=16,
                      memory_mb=256)
    wait_for(lambda: b"wrote" in h.runtime.logs(task_id, "stdout"), what="the writer")
    status = wait_for(lambda: (h.runtime.usage(task_id), h.runtime.poll(task_id))[1], what="the task to end")
    assert status.reason == "failed"
    assert "disk limit exceeded" in status.message
    assert b"No space left" in h.runtime.logs(task_id, "stdout")


def test_fork_bomb_is_contained(h: Harness) -> None:
    task_id = h.start("while :; do (sleep 60 &) 2>/dev/null; done", pids_limit=32)
    usage = wait_for(lambda: (u := h.runtime.usage(task_id)) and u.processes >= 25 and u, what="the bomb")
    assert usage.processes <= 32
    time.sleep(0.5)
    later = h.runtime.usage(task_id)
    assert later is not None and later.processes <= 32
    assert subprocess.run(["true"], check=False).returncode == 0  # the host still forks


def test_memory_beyond_its_limit_is_an_oom(h: Harness) -> None:
    status, out, _ = run(h, "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived", memory_mb=32)
    assert status.oom_killed and status.reason == "failed"
    assert "out of memory" in status.message
    assert "survived" not in out


@pytest.fixture
def h(harness: Harness) -> Harness:
    return harness
