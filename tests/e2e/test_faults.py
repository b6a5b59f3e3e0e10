"""Faults on one host, over real processes: master and agent restarts, hung agents, orphans, memory, limits.

The master runs in this process (real HTTP on 127.0.0.1, SQLite); agents are `titus agent` subprocesses
with the process runtime and real cgroups. An invariant checker watches both sides throughout.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import cgroups
from agent.runtime.process import wait_for_supervisor
from tests.conftest import batch_job, free_port, service_job, wait_for
from tests.e2e.faultkit import (
    AgentProc,
    InvariantChecker,
    MasterProc,
    agents,
    live_tasks,
    overlaps,
    started,
    submit,
    sweep,
    task_cgroup_names,
    tasks_of,
)

pytestmark = pytest.mark.e2e

HEARTBEAT_MS = 6_000
SMALL = {"resources": {"cpu": 0.1, "memoryMB": 16, "diskMB": 10, "networkMbps": 1}}
FENCING = {**SMALL, "attributes": {"titusParameter.agent.selfFence": "true"}}  # opt-in (fault_policy.py)
NO_WAIT = {**SMALL, "attributes": {"titusParameter.disconnectedTimeoutSec": "0"}}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[MasterProc, Callable[..., AgentProc]]]:
    """A master and a factory of agents; every agent's processes, tasks and cgroups are swept after."""
    master = MasterProc(tmp_path / "master", free_port(), heartbeat_timeout_ms=HEARTBEAT_MS).start()
    started_agents: list[AgentProc] = []
    pid = os.getpid()

    def agent(agent_id: str, **env: str) -> AgentProc:
        a = AgentProc(f"{agent_id}-{pid}", tmp_path / agent_id, master.url, extra_env=env)
        started_agents.append(a)
        return a.start()

    try:
        yield master, agent
    finally:
        for a in started_agents:
            a.stop()
        for a in started_agents:
            sweep(a.agent_id, a.data_dir)
        master.kill9()


def long_lease(master: MasterProc) -> None:
    """Restart tests: a generous heartbeat timeout, so that a restart, which on a loaded CI machine can
    take seconds, does not also make the tasks Disconnected; that case has a test of its own."""
    master.heartbeat_timeout_ms = 15_000
    master.kill9()
    master.start()


def registered(url: str, agent_id: str) -> bool:
    return agents(url).get(agent_id, {}).get("state") == "Registered"


def test_overlap_detector_flags_one_slot_live_twice() -> None:
    slots = {"t1": ("job", "0"), "t2": ("job", "0"), "t3": ("job", "1")}
    one = frozenset({1})
    assert overlaps({"a": {"t1": one}, "b": {"t3": one}}, slots) == {}
    assert overlaps({"a": {"t1": one}, "b": {"t2": one, "t3": one}}, slots) == {
        ("job", "0"): [("a", "t1"), ("b", "t2")]}


def test_master_restart_keeps_20_running_tasks(cluster: tuple[MasterProc, Callable[..., AgentProc]],
                                                tmp_path: Path) -> None:
    master, agent = cluster
    long_lease(master)
    a = agent("a")
    wait_for(lambda: registered(master.url, a.agent_id), what="agent registered")
    job_id = submit(master.url, service_job(desired=20, container=SMALL,
                                            service={"capacity": {"min": 0, "desired": 20, "max": 20}}))
    before = wait_for(lambda: len(started(master.url, job_id)) == 20 and started(master.url, job_id),
                      timeout=60, what="20 Started tasks")
    ids = {t["id"] for t in before}
    pids = live_tasks(a.agent_id)
    assert set(pids) == ids

    with InvariantChecker(master.url, [a.agent_id], [job_id]) as checker:
        master.kill9()
        down_at = time.monotonic()
        master.start()  # same port, same data directory
        wait_for(lambda: registered(master.url, a.agent_id), what="the agent to register again")
        print(f"master restart: agent registered again {time.monotonic() - down_at:.2f} s after the kill")
        after = wait_for(lambda: len(started(master.url, job_id)) == 20 and started(master.url, job_id),
                         what="20 Started tasks after the restart")
        assert {t["id"] for t in after} == ids  # adopted, not replaced
        assert tasks_of(master.url, job_id, "Finished") == []  # none lost
        assert live_tasks(a.agent_id) == pids  # the very same processes
        wait_for(lambda: checker.samples > 20, what="checker samples")
    assert checker.violations == []
    assert checker.max_live == 20


def test_agent_restart_adopts_running_tasks_and_reports_missed_exits(
        cluster: tuple[MasterProc, Callable[..., AgentProc]], tmp_path: Path) -> None:
    master, agent = cluster
    long_lease(master)
    a = agent("a")
    wait_for(lambda: registered(master.url, a.agent_id), what="agent registered")
    # The task (a container: it cannot see the host's files) ends when the test signals it.
    script = "trap 'echo bye; exit 3' USR1; echo ready; while :; do sleep 0.05; done"
    batch = submit(master.url, batch_job(command=["/bin/sh", "-c", script], container=SMALL))
    service = submit(master.url, service_job(desired=2, container=SMALL))
    (waiting,) = wait_for(lambda: started(master.url, batch), what="the batch task running")
    running = wait_for(lambda: len(started(master.url, service)) == 2 and started(master.url, service),
                       what="2 service tasks running")
    pids = live_tasks(a.agent_id)

    wait_for(lambda: (a.data_dir / "tasks" / waiting["id"] / "stdout").read_text() == "ready\n",
             what="the batch task's trap")
    a.kill9()
    task_pid = json.loads((a.data_dir / "tasks" / waiting["id"] / "pids.json").read_text())["pid"]
    os.kill(task_pid, signal.SIGUSR1)  # the batch task ends while no agent watches
    wait_for(lambda: (a.data_dir / "tasks" / waiting["id"] / "exit.json").exists(),
             what="its supervisor's record")
    a.start()

    def batch_done() -> dict[str, Any] | None:
        done = tasks_of(master.url, batch, "Finished")
        return done[0] if done else None

    ended = wait_for(batch_done, what="the missed exit to be reported")
    assert (ended["status"]["reasonCode"], ended["taskContext"]["task.exitCode"]) == ("failed", "3")
    now_running = started(master.url, service)
    assert {t["id"] for t in now_running} == {t["id"] for t in running}
    assert {t: pids[t] for t in live_tasks(a.agent_id)} == {t["id"]: pids[t["id"]] for t in running}
    assert tasks_of(master.url, service, "Finished") == []


def test_orphan_in_the_agents_cgroups_is_killed_and_removed(
        cluster: tuple[MasterProc, Callable[..., AgentProc]]) -> None:
    master, agent = cluster
    a = agent("a")
    wait_for(lambda: registered(master.url, a.agent_id), what="agent registered")
    group = cgroups.detect().task_group(a.agent_id, "orphan-by-hand")
    group.create(cgroups.Limits(cpu=0.1, memory_mb=32, pids=16))
    orphan = subprocess.Popen(["/bin/sleep", "600"], start_new_session=True)
    try:
        group.add_pid(orphan.pid)
        assert "orphan-by-hand" in live_tasks(a.agent_id)
        wait_for(lambda: orphan.poll() is not None, what="the orphan to be killed")
        assert orphan.returncode == -signal.SIGKILL or orphan.returncode == -signal.SIGTERM
        wait_for(lambda: "orphan-by-hand" not in task_cgroup_names(a.agent_id), what="its cgroups removed")
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()


def test_hung_agent_self_fences_a_fencing_jobs_tasks_before_they_are_replaced(
        cluster: tuple[MasterProc, Callable[..., AgentProc]]) -> None:
    master, agent = cluster
    a = agent("a")
    wait_for(lambda: registered(master.url, a.agent_id), what="agent a registered")
    job_id = submit(master.url, service_job(desired=2, container=FENCING))
    first = wait_for(lambda: len(started(master.url, job_id)) == 2 and started(master.url, job_id),
                     what="2 tasks on a")
    b = agent("b")
    wait_for(lambda: registered(master.url, b.agent_id), what="agent b registered")
    assert a.proc is not None
    with InvariantChecker(master.url, [a.agent_id, b.agent_id], [job_id]) as checker:
        os.kill(a.proc.pid, signal.SIGSTOP)  # hung: no reports, its tasks keep running
        try:
            replaced = wait_for(
                lambda: (len(s := started(master.url, job_id)) == 2
                         and all(t["taskContext"]["agent.id"] == b.agent_id for t in s) and s),
                timeout=HEARTBEAT_MS / 1000 + 15, what="both tasks replaced on b")
            assert not set(live_tasks(a.agent_id)), "the watchdog must have stopped a's tasks"
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)
        wait_for(lambda: registered(master.url, a.agent_id), what="a to register again")
    assert checker.violations == []
    assert checker.max_live >= 2
    assert {t["taskContext"]["task.resubmitOf"] for t in replaced} == {t["id"] for t in first}
    lost = tasks_of(master.url, job_id, "Finished")
    assert {t["status"]["reasonCode"] for t in lost} == {"lost"}
    # a is back and takes work again.
    assert wait_for(lambda: agents(master.url)[a.agent_id]["acceptingWork"], what="a accepting work")


def test_a_job_that_does_not_wait_is_replaced_and_the_returning_agent_kills_the_stale_copy(
        cluster: tuple[MasterProc, Callable[..., AgentProc]]) -> None:
    master, agent = cluster
    a = agent("a")  # the default: no self-fencing
    wait_for(lambda: registered(master.url, a.agent_id), what="agent a registered")
    job_id = submit(master.url, service_job(desired=1, container=NO_WAIT))
    (old,) = wait_for(lambda: started(master.url, job_id), what="the task on a")
    b = agent("b", TITUS_AGENT_CPU="0.1")  # room for exactly one task
    wait_for(lambda: registered(master.url, b.agent_id), what="agent b registered")
    assert a.proc is not None
    with InvariantChecker(master.url, [a.agent_id, b.agent_id], [job_id]) as checker:
        os.kill(a.proc.pid, signal.SIGSTOP)
        try:
            wait_for(lambda: any(t["taskContext"]["agent.id"] == b.agent_id
                                 for t in started(master.url, job_id)),
                     timeout=HEARTBEAT_MS / 1000 + 15, what="the replacement on b")
            assert old["id"] in live_tasks(a.agent_id)  # no self-fencing: the stale copy still runs
            # The overlap a zero timeout accepts, and the checker used elsewhere must see it.
            wait_for(lambda: checker.violations, what="the checker to catch the overlap")
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)
        wait_for(lambda: old["id"] not in live_tasks(a.agent_id), what="a to kill its stale task")
    wait_for(lambda: registered(master.url, a.agent_id) and agents(master.url)[a.agent_id]["acceptingWork"],
             what="a to take work again")
    more = submit(master.url, service_job(desired=1, container=SMALL))
    (placed,) = wait_for(lambda: started(master.url, more), what="new work on a")
    assert placed["taskContext"]["agent.id"] == a.agent_id
    stale = next(t for t in tasks_of(master.url, job_id, "Finished") if t["id"] == old["id"])
    assert stale["status"]["reasonCode"] == "lost"


def test_hung_agent_tasks_are_disconnected_not_replaced_and_come_back_on_its_return(
        cluster: tuple[MasterProc, Callable[..., AgentProc]]) -> None:
    master, agent = cluster
    a = agent("a")
    wait_for(lambda: registered(master.url, a.agent_id), what="agent a registered")
    service = submit(master.url, service_job(desired=2, container=SMALL))
    batch = submit(master.url, batch_job(command=["/bin/sleep", "600"], container=SMALL))
    def both() -> list[dict[str, Any]]:
        return started(master.url, service) + started(master.url, batch)

    running = wait_for(lambda: len(s := both()) == 3 and s, what="3 tasks on a")
    ids = {t["id"] for t in running}
    pids = live_tasks(a.agent_id)
    b = agent("b")  # room for all of them, should the master (wrongly) replace them
    wait_for(lambda: registered(master.url, b.agent_id), what="agent b registered")
    assert a.proc is not None
    with InvariantChecker(master.url, [a.agent_id, b.agent_id], [service, batch]) as checker:
        os.kill(a.proc.pid, signal.SIGSTOP)  # hung (or cut off): no reports; its tasks keep running
        try:
            away = wait_for(lambda: len(d := tasks_of(master.url, service, "Disconnected")
                                        + tasks_of(master.url, batch, "Disconnected")) == 3 and d,
                            timeout=HEARTBEAT_MS / 1000 + 15, what="a's tasks Disconnected")
            assert {t["status"]["reasonCode"] for t in away} == {"disconnected"}
            time.sleep(HEARTBEAT_MS / 1000)  # another timeout's worth: still no replacement
            assert live_tasks(b.agent_id) == {}
            assert {t["id"] for t in tasks_of(master.url, service) + tasks_of(master.url, batch)} == ids
            assert live_tasks(a.agent_id) == pids  # the very same processes, never stopped
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)
        back = wait_for(lambda: len(s := both()) == 3 and s, what="a's tasks Started again")
        wait_for(lambda: checker.samples > 10, what="checker samples")
    assert {t["id"] for t in back} == ids
    assert live_tasks(a.agent_id) == pids
    assert tasks_of(master.url, service, "Finished") == tasks_of(master.url, batch, "Finished") == []
    assert checker.violations == []


def test_master_outage_longer_than_the_heartbeat_timeout_stops_no_task(
        cluster: tuple[MasterProc, Callable[..., AgentProc]]) -> None:
    master, agent = cluster
    a = agent("a")
    wait_for(lambda: registered(master.url, a.agent_id), what="agent registered")
    job_id = submit(master.url, service_job(desired=5, container=SMALL))
    before = wait_for(lambda: len(s := started(master.url, job_id)) == 5 and s, what="5 Started tasks")
    pids = live_tasks(a.agent_id)
    master.kill9()
    # Twice the heartbeat timeout: under the old default every task would have been self-fenced here.
    deadline = time.monotonic() + 2 * HEARTBEAT_MS / 1000
    while time.monotonic() < deadline:
        assert live_tasks(a.agent_id) == pids, "a task stopped while the master was away"
        time.sleep(0.5)
    master.start()
    after = wait_for(lambda: len(s := started(master.url, job_id)) == 5 and s, what="5 Started again")
    assert {t["id"] for t in after} == {t["id"] for t in before}
    assert live_tasks(a.agent_id) == pids
    assert tasks_of(master.url, job_id, "Finished") == []


def test_agent_short_of_memory_takes_no_work_and_says_why(
        cluster: tuple[MasterProc, Callable[..., AgentProc]]) -> None:
    master, agent = cluster
    short = agent("short", TITUS_MIN_AVAILABLE_MEMORY_MB=str(10**9))  # more than any host has
    wait_for(lambda: agents(master.url).get(short.agent_id, {}).get("unavailableReason"),
             what="the agent to report it is short")
    view = agents(master.url)[short.agent_id]
    assert view["acceptingWork"] is False
    assert "host memory is short" in view["unavailableReason"]
    assert view["host"]["memoryAvailableMB"] < 10**9
    job_id = submit(master.url, service_job(desired=1, container=SMALL))
    (pending,) = wait_for(lambda: tasks_of(master.url, job_id), what="the task")
    healthy = agent("healthy")
    (task,) = wait_for(lambda: started(master.url, job_id), what="the task on the healthy agent")
    assert pending["status"]["state"] == "Accepted"
    assert task["taskContext"]["agent.id"] == healthy.agent_id
    assert task_cgroup_names(short.agent_id) == set()


def test_runtime_limit_ends_and_retries_per_policy(
        cluster: tuple[MasterProc, Callable[..., AgentProc]]) -> None:
    master, agent = cluster
    agent("a")
    spec = batch_job(command=["/bin/sleep", "600"], container=SMALL,
                     batch={"runtimeLimitSec": 1, "retryOnRuntimeLimit": True})
    spec["batch"]["retryPolicy"] = {"delayed": {"initialDelayMs": 500, "delayMs": 500, "retries": 1}}
    job_id = submit(master.url, spec)
    finished = wait_for(lambda: len(f := tasks_of(master.url, job_id, "Finished")) == 2 and f, timeout=40,
                        what="the task and its retry to hit the limit")
    assert [t["status"]["reasonCode"] for t in finished] == ["runtimeLimitExceeded"] * 2
    assert finished[1]["taskContext"]["task.resubmitOf"] == finished[0]["id"] or \
        finished[0]["taskContext"]["task.resubmitOf"] == finished[1]["id"]
    job = wait_for(lambda: (j := master.api("GET", f"/api/v3/jobs/{job_id}").json())["status"]["state"]
                   == "Finished" and j, what="the job to finish")
    assert job["status"]["reasonCode"] == "failed"


def test_task_the_restarted_agent_does_not_know_is_lost_and_replaced(
        cluster: tuple[MasterProc, Callable[..., AgentProc]]) -> None:
    master, agent = cluster
    long_lease(master)
    a = agent("a")
    wait_for(lambda: registered(master.url, a.agent_id), what="agent registered")
    job_id = submit(master.url, service_job(desired=2, container=SMALL))
    kept, gone = wait_for(lambda: len(s := started(master.url, job_id)) == 2 and s, what="2 tasks running")
    a.kill9()
    # Every trace of one task disappears while the agent is down (say, a host clean-up wiped it).
    group = cgroups.detect().task_group(a.agent_id, gone["id"])
    assert group.kill_all()
    group.remove()
    # Its supervisor outlives the agent and records the kill in the task folder: wipe it only once that
    # writer is done, as a clean-up script must (the write would otherwise race the delete).
    task_dir = a.data_dir / "tasks" / gone["id"]
    assert wait_for_supervisor(task_dir, timeout_s=10), "the killed task's supervisor did not exit"
    if os.path.ismount(task_dir / "disk"):  # the OCI runtime's writable layer: a clean-up unmounts it
        subprocess.run(["umount", "-l", str(task_dir / "disk")], check=True)
    shutil.rmtree(task_dir)
    a.start()
    (lost,) = wait_for(lambda: tasks_of(master.url, job_id, "Finished"), what="the unknown task to end")
    assert (lost["id"], lost["status"]["reasonCode"]) == (gone["id"], "lost")
    now = wait_for(lambda: len(s := started(master.url, job_id)) == 2 and s, what="its replacement running")
    assert kept["id"] in {t["id"] for t in now}
    replacement = next(t for t in now if t["id"] != kept["id"])
    assert replacement["taskContext"]["task.resubmitOf"] == gone["id"]


def _master_cli(data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TITUS_API_TOKEN": "t" * 32, "TITUS_AGENT_TOKEN": "a" * 32,
           "PYTHONPATH": str(Path(__file__).parents[2])}
    env.pop("TITUS_INIT_CLUSTER", None)
    return subprocess.run([sys.executable, "-m", "titus.cli", "master", "--port", str(free_port()),
                           "--data-dir", str(data_dir), *extra], env=env, capture_output=True, text=True,
                          timeout=60)


def test_a_master_on_an_empty_or_damaged_store_refuses_with_a_documented_exit_code(tmp_path: Path) -> None:
    empty = _master_cli(tmp_path / "empty")
    assert empty.returncode == 4, empty.stderr
    assert str(tmp_path / "empty") in empty.stderr and "--init-cluster" in empty.stderr
    assert "Traceback" not in empty.stderr
    damaged_dir = tmp_path / "damaged"
    damaged_dir.mkdir(mode=0o700)
    (damaged_dir / "titus.db").write_bytes(b"\x00garbage, not SQLite\x00" * 4096)
    damaged = _master_cli(damaged_dir)
    assert damaged.returncode == 5, damaged.stderr
    assert str(damaged_dir / "titus.db") in damaged.stderr and "damaged" in damaged.stderr
    assert "Traceback" not in damaged.stderr and "standby" not in damaged.stderr


def test_an_agent_refuses_the_orders_of_a_master_of_another_cluster(
        cluster: tuple[MasterProc, Callable[..., AgentProc]], tmp_path: Path) -> None:
    master, agent = cluster
    a = agent("a")
    wait_for(lambda: registered(master.url, a.agent_id), what="agent registered")
    job_id = submit(master.url, service_job(desired=3, container=SMALL))
    before = wait_for(lambda: len(s := started(master.url, job_id)) == 3 and s, what="3 Started tasks")
    pids = live_tasks(a.agent_id)
    master.kill9()
    # The operator points a master at the wrong (empty) data dir and tells it to make a new cluster.
    stranger = MasterProc(tmp_path / "stranger", master.port, heartbeat_timeout_ms=HEARTBEAT_MS).start()
    try:
        deadline = time.monotonic() + 3 * HEARTBEAT_MS / 1000
        while time.monotonic() < deadline:
            assert live_tasks(a.agent_id) == pids, "the agent obeyed a master of another cluster"
            time.sleep(0.5)
        # The stranger did try: to it, everything the agent runs is stale, to be killed at once.
        view = agents(stranger.url).get(a.agent_id)
        assert view is not None and set(view["staleTaskIds"]) == {t["id"] for t in before}
        log = (a.data_dir.parent / f"{a.agent_id}.log").read_text()
        assert "refusing its orders" in log
    finally:
        stranger.kill9()
    master.start()  # the right store again: the agent comes back with everything still running
    after = wait_for(lambda: len(s := started(master.url, job_id)) == 3 and s, what="3 Started again")
    assert {t["id"] for t in after} == {t["id"] for t in before}
    assert live_tasks(a.agent_id) == pids
