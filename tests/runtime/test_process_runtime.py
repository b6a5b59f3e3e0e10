"""Checks only the process runtime can answer: real cgroup v1 files, supervisors, restarts, isolation."""

from __future__ import annotations

import os
import shutil
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.runtime import mounts
from agent.runtime.base import LaunchError, TaskSpec
from agent.runtime.process import ProcessRuntime, supervisor_running, wait_for_supervisor
from tests.runtime.conftest import CGROUP_ROOT
from tests.runtime.contract import wait_exit, wait_for

V1 = ("memory", "cpu", "cpuacct", "pids")


def _spec(script: str, **overrides: object) -> TaskSpec:
    task_id = str(overrides.pop("task_id", f"task-{uuid.uuid4().hex[:12]}"))
    return TaskSpec(task_id=task_id, job_id="job-proc", image="host", entry_point=("sh", "-c"),
                    command=(script,), **overrides)  # type: ignore[arg-type]


def _cg(controller: str, agent_id: str, task_id: str) -> Path:
    return Path(CGROUP_ROOT) / controller / "titus" / agent_id / task_id


@pytest.fixture(autouse=True)
def _v1_only(runtime: ProcessRuntime) -> None:
    if runtime.cgroups.version != 1:
        pytest.skip("these checks read cgroup v1 files")


def test_limits_are_written_to_every_controller(runtime: ProcessRuntime, agent_id: str) -> None:
    spec = _spec("sleep 300", cpu=0.5, memory_mb=64, pids_limit=50)
    runtime.start(spec)
    mem = _cg("memory", agent_id, spec.task_id)
    assert (mem / "memory.limit_in_bytes").read_text().strip() == str(64 * 2**20)
    if (mem / "memory.memsw.limit_in_bytes").exists():
        assert (mem / "memory.memsw.limit_in_bytes").read_text().strip() == str(64 * 2**20)
    cpu = _cg("cpu", agent_id, spec.task_id)
    assert (cpu / "cpu.cfs_period_us").read_text().strip() == "100000"
    assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
    assert (cpu / "cpu.shares").read_text().strip() == "512"
    assert (_cg("pids", agent_id, spec.task_id) / "pids.max").read_text().strip() == "50"
    runtime.kill(spec.task_id, 0)
    wait_exit(runtime, spec.task_id)
    runtime.cleanup(spec.task_id)
    for controller in V1:
        assert not _cg(controller, agent_id, spec.task_id).exists()


def test_a_small_quota_is_lifted_only_while_the_task_starts(runtime: ProcessRuntime, agent_id: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The setup before the program (the supervisor, runc's init for containers) runs in the task's
    cgroup: at 0.1 core it would be throttled to 10 ms per 100 ms. It gets START_CPU meanwhile; the
    task's own quota is in place by the time start() returns."""
    from agent.runtime.process import START_CPU

    spec = _spec("sleep 300", cpu=0.1)
    quota = _cg("cpu", agent_id, spec.task_id) / "cpu.cfs_quota_us"
    during: list[str] = []
    request = runtime._spawner.request

    def spying(req: dict[str, object], started: Path) -> dict[str, object]:
        during.append(quota.read_text().strip())
        return request(req, started)  # type: ignore[arg-type]

    monkeypatch.setattr(runtime._spawner, "request", spying)
    runtime.start(spec)
    assert during == [str(round(START_CPU * 100_000))]
    assert quota.read_text().strip() == "10000"
    assert (_cg("cpu", agent_id, spec.task_id) / "cpu.shares").read_text().strip() == "102"  # 0.1's, always
    runtime.kill(spec.task_id, 0)
    wait_exit(runtime, spec.task_id)
    runtime.cleanup(spec.task_id)


def test_the_program_runs_inside_its_cgroups_from_its_first_instruction(
    runtime: ProcessRuntime, agent_id: str
) -> None:
    spec = TaskSpec(task_id=f"task-{uuid.uuid4().hex[:12]}", job_id="j", image="host",
                    command=("cat", "/proc/self/cgroup"))
    runtime.start(spec)
    assert wait_exit(runtime, spec.task_id).reason == "normal"
    lines = runtime.logs(spec.task_id, "stdout").decode().splitlines()
    expected = f"/titus/{agent_id}/{spec.task_id}"
    for controller in V1:
        assert any(line.split(":")[1] == controller and line.endswith(expected) for line in lines), controller
    runtime.cleanup(spec.task_id)


def test_busy_loop_gets_at_most_its_cpu_quota_by_cpuacct(runtime: ProcessRuntime, agent_id: str) -> None:
    spec = _spec("while :; do :; done", cpu=0.5)
    runtime.start(spec)
    usage_file = _cg("cpuacct", agent_id, spec.task_id) / "cpuacct.usage"
    t0, c0 = time.monotonic(), int(usage_file.read_text())
    time.sleep(2.0)  # the measurement window
    t1, c1 = time.monotonic(), int(usage_file.read_text())
    cpu_seconds_per_second = (c1 - c0) / 1e9 / (t1 - t0)
    assert 0.05 < cpu_seconds_per_second <= 0.6
    runtime.kill(spec.task_id, 0)
    wait_exit(runtime, spec.task_id)
    runtime.cleanup(spec.task_id)


def test_oom_is_read_from_the_memory_cgroup(runtime: ProcessRuntime, agent_id: str) -> None:
    spec = _spec("x=$(head -c 80000000 /dev/zero | tr '\\0' a)", memory_mb=24)
    runtime.start(spec)
    status = wait_exit(runtime, spec.task_id)
    oom_control = (_cg("memory", agent_id, spec.task_id) / "memory.oom_control").read_text()
    assert "oom_kill 0" not in oom_control
    assert status.oom_killed and "24 MB" in status.message
    runtime.cleanup(spec.task_id)


def test_the_kernel_refuses_forks_beyond_pids_max(runtime: ProcessRuntime, agent_id: str) -> None:
    spec = _spec("(while :; do sleep 1000 & done) 2>/dev/null & exec sleep 1000", pids_limit=16)
    runtime.start(spec)
    events = _cg("pids", agent_id, spec.task_id) / "pids.events"
    wait_for(lambda: events.read_text().split() != ["max", "0"], what="a refused fork")
    assert int((_cg("pids", agent_id, spec.task_id) / "pids.current").read_text()) <= 16
    runtime.kill(spec.task_id, 0)
    wait_exit(runtime, spec.task_id)
    runtime.cleanup(spec.task_id)
    assert not _cg("pids", agent_id, spec.task_id).exists()


def test_exit_status_is_recorded_while_the_agent_is_down(
    runtimes: Callable[[], ProcessRuntime],
) -> None:
    first = runtimes()
    spec = _spec("while [ ! -e go ]; do sleep 0.02; done; exit 7")
    first.start(spec)
    first.close()  # the agent goes away; the task is not its child any more
    (first.tasks_dir / spec.task_id / "work" / "go").touch()
    second = runtimes()
    status = wait_exit(second, spec.task_id)
    assert (status.exit_code, status.reason) == (7, "failed")
    second.cleanup(spec.task_id)


def test_sigkill_escalation_survives_an_agent_restart(runtimes: Callable[[], ProcessRuntime]) -> None:
    first = runtimes()
    spec = _spec("trap '' TERM; echo ready; while :; do sleep 0.05; done")
    first.start(spec)
    wait_for(lambda: first.logs(spec.task_id, "stdout") == b"ready\n", what="the trap")
    first.kill(spec.task_id, grace_s=0.5)
    first.close()  # its timer thread dies with it, before the grace period is over
    second = runtimes()
    assert spec.task_id in second.list_running()  # re-arms the persisted deadline
    status = wait_exit(second, spec.task_id)
    assert (status.reason, status.exit_code) == ("killed", 137)
    second.cleanup(spec.task_id)


def test_a_task_outliving_its_supervisor_is_reported_crashed(runtime: ProcessRuntime) -> None:
    spec = _spec("sleep 300")
    runtime.start(spec)
    supervisor = runtime.supervisor_pid(spec.task_id)
    assert supervisor is not None
    os.kill(supervisor, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{supervisor}").exists(), what="the supervisor to go")
    assert runtime.poll(spec.task_id) is None  # the task itself still runs in its cgroup
    assert spec.task_id in runtime.list_running()
    runtime.kill(spec.task_id, 0)
    status = wait_exit(runtime, spec.task_id)
    assert (status.reason, status.exit_code) == ("crashed", None)
    runtime.cleanup(spec.task_id)


def test_cleanup_returns_only_once_the_supervisor_has_recorded_the_end(runtime: ProcessRuntime) -> None:
    spec = _spec("sleep 300")
    runtime.start(spec)
    task_dir = runtime.tasks_dir / spec.task_id
    assert supervisor_running(task_dir)
    runtime.cleanup(spec.task_id)  # kills the task while it runs: its supervisor then writes exit.json
    assert not supervisor_running(task_dir)
    assert (task_dir / "exit.json").exists()
    names = sorted(p.name for p in task_dir.iterdir())
    time.sleep(0.2)
    assert sorted(p.name for p in task_dir.iterdir()) == names  # nothing writes there any more


def test_a_task_dir_can_be_wiped_once_its_supervisor_is_waited_for(
    runtimes: Callable[[], ProcessRuntime], agent_id: str
) -> None:
    first = runtimes()
    spec = _spec("sleep 300")
    first.start(spec)
    first.close()  # the agent is gone; the supervisor is not
    group = first.cgroups.task_group(agent_id, spec.task_id)
    assert group.kill_all()
    task_dir = first.tasks_dir / spec.task_id
    assert wait_for_supervisor(task_dir, timeout_s=10)
    assert (task_dir / "exit.json").exists()  # the write the wipe would otherwise have raced
    group.remove()
    work = task_dir / "work"  # the task's diskMB tmpfs: a clean-up unmounts it, as the agent's would
    if os.path.ismount(work):
        mounts.umount(work)
    shutil.rmtree(task_dir)  # "Directory not empty" if anything still wrote into it
    assert not task_dir.exists()


def test_the_agents_environment_is_not_inherited(
    runtime: ProcessRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TITUS_AGENT_TOKEN", "secret-agent-token")
    spec = TaskSpec(task_id=f"task-{uuid.uuid4().hex[:12]}", job_id="j", image="host", command=("env",),
                    env={"VISIBLE": "1"})
    runtime.start(spec)
    wait_exit(runtime, spec.task_id)
    out = runtime.logs(spec.task_id, "stdout")
    assert b"VISIBLE=1\n" in out
    assert b"secret-agent-token" not in out
    runtime.cleanup(spec.task_id)


@pytest.mark.parametrize("bad", ["../../etc", "a/b", ".x", ""])
def test_unsafe_task_ids_never_reach_a_path(runtime: ProcessRuntime, bad: str) -> None:
    with pytest.raises(ValueError, match="safe identifier"):
        runtime.start(_spec("true", task_id=bad))
    with pytest.raises(ValueError, match="safe identifier"):
        runtime.poll(bad)
    assert not any(runtime.data_dir.parent.glob("etc"))


def test_unknown_task_is_a_key_error(runtime: ProcessRuntime) -> None:
    with pytest.raises(KeyError):
        runtime.poll("never-started")


def test_host_usage_is_plausible(runtime: ProcessRuntime) -> None:
    host = runtime.host_usage()
    assert host.cpu_count == os.cpu_count()
    assert 0 < host.memory_available_mb <= host.memory_total_mb
    assert 0 < host.memory_used_mb < host.memory_total_mb
    assert 0.0 <= host.cpu_pct <= 100.0


def test_a_dead_spawner_is_replaced_on_the_next_start(runtime: ProcessRuntime) -> None:
    first = _spec("exit 0")
    runtime.start(first)
    spawner = runtime.spawner_pid()
    assert spawner is not None
    os.kill(spawner, signal.SIGKILL)
    second = _spec("echo again")
    runtime.start(second)
    assert runtime.spawner_pid() not in (None, spawner)
    assert wait_exit(runtime, second.task_id).reason == "normal"
    assert runtime.logs(second.task_id, "stdout") == b"again\n"
    assert wait_exit(runtime, first.task_id).reason == "normal"
    for spec in (first, second):
        runtime.cleanup(spec.task_id)


@pytest.mark.parametrize(("entry_point", "command"), [((), ()), (("",), ()), ((), ("",))],
                         ids=["neither", "entrypoint-cleared", "command-cleared"])
def test_a_task_with_nothing_to_run_is_refused_before_anything_is_created(
    runtime: ProcessRuntime, agent_id: str, entry_point: tuple[str, ...], command: tuple[str, ...]
) -> None:
    """Titus lets a job leave entryPoint and command empty (the image's own run); this runtime has no image,
    so it says so instead of inventing a default."""
    spec = TaskSpec(task_id=f"task-{uuid.uuid4().hex[:12]}", job_id="job-proc", image="host",
                    entry_point=entry_point, command=command)
    with pytest.raises(LaunchError, match="no image whose ENTRYPOINT/CMD"):
        runtime.start(spec)
    assert not _cg("memory", agent_id, spec.task_id).exists()
