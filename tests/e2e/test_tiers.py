"""Two tiers of real agents (`titus agent` processes) under one master: placement by tier and lifecycle,
why-pending over HTTP and the CLI, capacity groups over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AGENT_TOKEN, API_TOKEN, RunningMaster, service_job, start_master, wait_for

pytestmark = pytest.mark.e2e


def start_agent(
    master: RunningMaster, data_dir: Path, agent_id: str, tier: str, group: str
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TITUS_MASTER_URL": master.url,
        "TITUS_AGENT_TOKEN": AGENT_TOKEN,
        "TITUS_AGENT_ID": agent_id,
        "TITUS_DATA_DIR": str(data_dir / agent_id),
        "TITUS_TIER": tier,
        "TITUS_INSTANCE_GROUP": group,
        "TITUS_AGENT_CPU": "2",
        "TITUS_AGENT_MEMORY_MB": "1024",
        "TITUS_KILL_TASKS_ON_EXIT": "true",
        "TITUS_LOG_LEVEL": "WARNING",
    }
    env.pop("TITUS_API_TOKEN", None)
    return subprocess.Popen([sys.executable, "-m", "titus.cli", "agent"], env=env)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RunningMaster]:
    master = start_master(tmp_path / "master")
    agents = [
        start_agent(master, tmp_path, "e2e-crit-1", "critical", "asg-critical"),
        start_agent(master, tmp_path, "e2e-flex-1", "flex", "asg-flex"),
    ]
    wait_for(
        lambda: len(master.api("GET", "/api/v3/agent/instances").json()["items"]) == 2,
        timeout=30,
        what="both agents to register",
    )
    yield master
    for agent in agents:
        agent.terminate()
    for agent in agents:
        agent.wait(timeout=30)
    master.server.shutdown()
    master.thread.join(timeout=10)


def _started_on(master: RunningMaster, job_id: str) -> list[str]:
    tasks = master.api("GET", "/api/v3/tasks", params={"jobIds": job_id}).json()["items"]
    return [t["taskContext"]["agent.id"] for t in tasks if t["status"]["state"] == "Started"]


def test_critical_job_runs_on_critical_agents_only(cluster: RunningMaster) -> None:
    sla = {
        "appName": "payments",
        "tier": "Critical",
        "instanceCount": 2,
        "resourceDimension": {"cpu": 0.5, "memoryMB": 128, "diskMB": 100, "networkMbps": 10},
    }
    assert cluster.api("POST", "/api/v3/management/applications", json=sla).status_code == 201
    assert cluster.api("POST", "/api/v3/management/applications", json=sla).status_code == 409
    groups = cluster.api("GET", "/api/v3/management/applications").json()
    assert {g["appName"]: g["tier"] for g in groups} == {"DEFAULT": "flex", "payments": "critical"}

    critical = cluster.api(
        "POST", "/api/v3/jobs", json=service_job(desired=3, capacityGroup="payments")
    ).json()["id"]
    flex = cluster.api("POST", "/api/v3/jobs", json=service_job(desired=2)).json()["id"]
    assert wait_for(lambda: len(_started_on(cluster, critical)) == 3 and _started_on(cluster, critical))
    assert set(_started_on(cluster, critical)) == {"e2e-crit-1"}
    wait_for(lambda: len(_started_on(cluster, flex)) == 2, what="flex tasks")
    assert set(_started_on(cluster, flex)) == {"e2e-flex-1"}


def test_unknown_group_and_constraint_are_400(cluster: RunningMaster) -> None:
    r = cluster.api("POST", "/api/v3/jobs", json=service_job(capacityGroup="nope"))
    assert r.status_code == 400 and r.json()["fields"][0]["path"] == "capacityGroup"
    job = service_job(container={"hardConstraints": {"constraints": {"nearTheCoffee": "true"}}})
    r = cluster.api("POST", "/api/v3/jobs", json=job)
    assert r.status_code == 400
    assert r.json()["fields"][0]["path"] == "container.hardConstraints.constraints.nearTheCoffee"


def test_phased_out_group_gets_nothing_and_pending_reason_shows(
    cluster: RunningMaster, tmp_path: Path
) -> None:
    r = cluster.api(
        "PUT", "/api/v3/agent/instanceGroups/asg-flex/lifecycle", json={"lifecycleState": "PhasedOut"}
    )
    assert r.status_code == 200 and r.json()["lifecycleState"] == "PhasedOut"
    job_id = cluster.api("POST", "/api/v3/jobs", json=service_job(desired=1)).json()["id"]

    def reason() -> Any:
        tasks = cluster.api("GET", "/api/v3/tasks", params={"jobIds": job_id}).json()["items"]
        return tasks and tasks[0]["taskContext"].get("task.pendingReason")

    text = wait_for(reason, what="a pending reason")
    assert "1 agent PhasedOut" in text and "in another tier" in text
    task_id = cluster.api("GET", "/api/v3/tasks", params={"jobIds": job_id}).json()["items"][0]["id"]
    assert cluster.api("GET", f"/api/v3/tasks/{task_id}").json()["taskContext"]["task.pendingReason"] == text

    env = {**os.environ, "TITUS_URL": cluster.url, "TITUS_API_TOKEN": API_TOKEN}
    cli = subprocess.run(
        [sys.executable, "-m", "titus.cli", "job", "get", job_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert f"pending: {text}" in cli.stdout

    too_big = service_job(desired=1, container={"resources": {"memoryMB": 4000}})
    big_id = cluster.api("POST", "/api/v3/jobs", json=too_big).json()["id"]
    cluster.api("PUT", "/api/v3/agent/instanceGroups/asg-flex/lifecycle", json={"lifecycleState": "Active"})
    wait_for(lambda: _started_on(cluster, job_id) == ["e2e-flex-1"], what="placement once Active again")
    big_task = cluster.api("GET", "/api/v3/tasks", params={"jobIds": big_id}).json()["items"][0]
    assert "insufficient memory on 1 agent" in wait_for(
        lambda: cluster.api("GET", f"/api/v3/tasks/{big_task['id']}").json()["taskContext"].get(
            "task.pendingReason"
        )
    )
