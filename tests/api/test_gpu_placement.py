"""GPUs end to end over the real API and agent channel: a gpu:1 job lands on a gpu:4 agent and nowhere else.

Before the core rebuild the master dropped GPUs at registration and in the scheduler's snapshot, so such a
job stayed pending forever with "insufficient gpus".
"""

from __future__ import annotations

from typing import Any

from tests.conftest import RunningMaster, batch_job, wait_for


def _register(master: RunningMaster, agent_id: str, gpu: int) -> int:
    reg = {
        "id": agent_id,
        "resources": {"cpu": 8, "memoryMB": 16_384, "diskMB": 100_000, "networkMbps": 1000, "gpu": gpu},
        "attributes": {"zone": "z1"},
    }
    r = master.agent("POST", "/api/v3/agent/instances/register", json=reg)
    assert r.status_code == 200, r.text
    return int(r.json()["sessionEpoch"])


def _desired(master: RunningMaster, agent_id: str, session: int) -> list[dict[str, Any]]:
    r = master.agent(
        "GET", f"/api/v3/agent/instances/{agent_id}/assignments", params={"since": 0, "session": session,
                                                                           "waitMs": 0}
    )
    assert r.status_code == 200, r.text
    return list(r.json()["tasks"])


def test_gpu_job_is_placed_on_the_gpu_agent(master: RunningMaster) -> None:
    plain = _register(master, "cpu-only", gpu=0)
    gpus = _register(master, "gpu-box", gpu=4)
    job = batch_job(size=3, container={"resources": {"gpu": 1}})
    r = master.api("POST", "/api/v3/jobs", json=job)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]

    def launched() -> list[dict[str, Any]]:
        tasks = master.api("GET", "/api/v3/tasks", params={"jobIds": job_id}).json()["items"]
        return tasks if all(t["status"]["state"] == "Launched" for t in tasks) else []

    tasks = wait_for(launched, what="the gpu tasks to be placed")
    assert {t["taskContext"]["agent.id"] for t in tasks} == {"gpu-box"}
    assert len(_desired(master, "gpu-box", gpus)) == 3
    assert _desired(master, "cpu-only", plain) == []
    gpu_view = next(a for a in master.api("GET", "/api/v3/agent/instances").json()["items"]
                    if a["id"] == "gpu-box")
    assert gpu_view["resources"]["gpu"] == 4
    assert gpu_view["used"]["gpu"] == 3


def test_gpu_job_beyond_the_agents_gpus_says_why(master: RunningMaster) -> None:
    _register(master, "gpu-box", gpu=4)
    r = master.api("POST", "/api/v3/jobs", json=batch_job(container={"resources": {"gpu": 5}}))
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]

    def reason() -> str:
        tasks = master.api("GET", "/api/v3/tasks", params={"jobIds": job_id}).json()["items"]
        return tasks[0]["taskContext"].get("task.pendingReason", "") if tasks else ""

    assert wait_for(reason, what="a pending reason") == "insufficient gpus on 1 agent"
