"""titus-executor through pymesos's real executor driver, against an EMULATION of the Mesos v1 executor API.

Events and calls follow the Apache Mesos "Executor HTTP API" document (docs/executor-http-api.md):
SUBSCRIBE/SUBSCRIBED, LAUNCH, KILL in; UPDATE out, with TaskStatus as in mesos/v1/mesos.proto. The agent
endpoint is emulated in this process (tests/mesos/emulator.py), not a Mesos agent; the tasks are real: they
run under the agent's ProcessRuntime with its cgroup limits on this machine.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymesos  # installed by scripts/install-pymesos.sh; a missing one is an error, never a skip
import pytest

from agent import cgroups
from agent.mesos_executor import TitusExecutor
from master.mesos import model
from tests.conftest import wait_for
from tests.mesos.emulator import Call, MesosEmulator
from tests.runtime.conftest import traversable

CGROUP_ROOT = os.environ.get("TITUS_TEST_CGROUP_ROOT", "/sys/fs/cgroup")
FRAMEWORK_ID = "fw-executor-test"


class Harness:
    def __init__(self, agent: MesosEmulator, driver: Any, executor_id: str) -> None:
        self.agent = agent
        self.driver = driver
        self.executor_id = executor_id

    def launch(self, command: list[str], memory_mb: int = 64) -> str:
        entry = {"taskId": self.executor_id, "jobId": "job-1", "image": "host", "entryPoint": [],
                 "command": command, "env": {"GREETING": "hello"},
                 "resources": {"cpu": 0.5, "memoryMB": memory_mb, "diskMB": 100, "networkMbps": 10},
                 "runtimeLimitSec": None, "kill": False, "killGraceMs": 1000}
        info = model.task_info(entry, "agent-x", FRAMEWORK_ID, "titus executor", None)
        self.agent.send({"type": "LAUNCH", "launch": {"task": info}})
        return self.executor_id

    def updates(self) -> list[dict[str, Any]]:
        return [c["update"]["status"] for c in self.agent.of_type("UPDATE")]

    def final(self) -> dict[str, Any]:
        def ended(c: Call) -> bool:
            return c["update"]["status"]["state"] in model.TERMINAL_MESOS_STATES

        return dict(self.agent.wait_call("UPDATE", ended, timeout=30)["update"]["status"])


@pytest.fixture
def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create cgroups")
    try:
        hierarchy = cgroups.detect(CGROUP_ROOT)
    except cgroups.CgroupError as exc:
        pytest.skip(str(exc))
    agent_id = f"test-mesos-{uuid.uuid4().hex[:8]}"
    executor_id = f"task-{uuid.uuid4().hex[:8]}"

    def subscribed(call: Call) -> list[dict[str, Any]]:
        assert call["executor_id"] == {"value": executor_id}
        return [{"type": "SUBSCRIBED", "subscribed": {
            "executor_info": {"executor_id": {"value": executor_id}, "framework_id": {"value": FRAMEWORK_ID},
                              "command": {"value": "titus executor"}},
            "framework_info": {"id": {"value": FRAMEWORK_ID}, "user": "root", "name": "titus"},
            "agent_info": {"id": {"value": agent_id}, "hostname": "localhost"},
            "container_id": {"value": "c-1"}}}]

    agent = MesosEmulator("/api/v1/executor", subscribed).start()
    monkeypatch.setenv("MESOS_AGENT_ENDPOINT", agent.address)
    monkeypatch.setenv("MESOS_FRAMEWORK_ID", FRAMEWORK_ID)
    monkeypatch.setenv("MESOS_EXECUTOR_ID", executor_id)
    monkeypatch.setenv("MESOS_CHECKPOINT", "1")  # a dropped connection must not shut the executor down
    monkeypatch.setenv("MESOS_LOCAL", "1")  # and pymesos must never SIGKILL its process group (pytest's)
    traversable(tmp_path)  # the process runtime's tasks run as an unprivileged uid
    executor = TitusExecutor("process", tmp_path / "data", poll_s=0.05)
    driver = pymesos.MesosExecutorDriver(executor, use_addict=False)
    driver.start()
    agent.wait_call("SUBSCRIBE")
    wait_for(lambda: executor.runtime is not None, what="runtime built on SUBSCRIBED")
    yield Harness(agent, driver, executor_id)
    executor.shutdown(driver)
    driver.stop()
    agent.stop()
    for task_id in hierarchy.list_tasks(agent_id):
        group = hierarchy.task_group(agent_id, task_id)
        group.kill_all()
        group.remove()
    hierarchy.remove_agent(agent_id)
    runtime = executor.runtime
    if runtime is not None and hasattr(runtime, "close"):
        runtime.close()


def test_a_launched_task_runs_with_its_memory_limit_and_reports_starting_running_finished(
        harness: Harness) -> None:
    # The task prints the memory limit of its own cgroup (v1 path from /proc/self/cgroup), set by the runtime.
    script = ("echo $GREETING; p=$(grep -E ':memory:' /proc/self/cgroup | cut -d: -f3); "
              "cat /sys/fs/cgroup/memory$p/memory.limit_in_bytes")
    task_id = harness.launch(["/bin/sh", "-c", script], memory_mb=64)
    final = harness.final()
    states = [u["state"] for u in harness.updates()]
    assert states == ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]
    assert all(u["task_id"] == {"value": task_id} for u in harness.updates())
    assert all(u["source"] == "SOURCE_EXECUTOR" and u["uuid"] for u in harness.updates())
    data = model.decode(final["data"])
    assert data["exitCode"] == 0
    assert data["stdoutTail"] == f"hello\n{64 * 2**20}\n"
    assert final["message"] == "exited with code 0"


def test_a_task_over_its_memory_limit_fails_saying_out_of_memory(harness: Harness) -> None:
    harness.launch(["/bin/sh", "-c", "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived"],
                   memory_mb=32)
    final = harness.final()
    assert final["state"] == "TASK_FAILED"
    assert "out of memory" in final["message"]
    assert final["reason"] == "REASON_CONTAINER_LIMITATION_MEMORY"
    assert "survived" not in model.decode(final["data"])["stdoutTail"]


def test_kill_event_stops_the_task_and_reports_killed(harness: Harness) -> None:
    task_id = harness.launch(["/bin/sleep", "600"])
    harness.agent.wait_call("UPDATE", lambda c: c["update"]["status"]["state"] == "TASK_RUNNING")
    harness.agent.send({"type": "KILL", "kill": {"task_id": {"value": task_id}}})
    final = harness.final()
    assert final["state"] == "TASK_KILLED"
    assert "killed on request" in final["message"]


def test_a_task_that_cannot_start_fails_with_the_reason(harness: Harness) -> None:
    harness.launch(["/nonexistent/program"])
    final = harness.final()
    assert [u["state"] for u in harness.updates()] == ["TASK_STARTING", "TASK_FAILED"]
    assert final["message"] == ("launch failed: cannot execute '/nonexistent/program': "
                                "No such file or directory")
