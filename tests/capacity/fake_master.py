"""A small stand-in for the master's v3 API shapes the capacity controller reads (real HTTP, 127.0.0.1)."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue


def create_fake_master(state: dict[str, Any], token: str) -> Flask:
    app = Flask("fake-master")

    @app.before_request
    def _auth() -> ResponseReturnValue | None:
        if request.headers.get("Authorization") != f"Bearer {token}":
            return jsonify(error="unauthorized"), 401
        return None

    @app.get("/api/v3/agent/instances")
    def agents() -> ResponseReturnValue:
        return jsonify(items=state["agents"])

    @app.put("/api/v3/agent/instances/<agent_id>/lifecycle")
    def lifecycle(agent_id: str) -> ResponseReturnValue:
        body = request.get_json()
        for agent in state["agents"]:
            if agent["id"] == agent_id:
                agent["lifecycle"] = body["lifecycleState"]
                return "", 204
        return jsonify(error="not found"), 404

    @app.get("/api/v3/tasks")
    def tasks() -> ResponseReturnValue:
        wanted = request.args["taskStates"]
        assert wanted in ("Accepted", "Launched,StartInitiated,Started,KillInitiated"), wanted
        return _page(state["tasks"] if wanted == "Accepted" else state.get("running", []))

    @app.get("/api/v3/jobs")
    def jobs() -> ResponseReturnValue:
        implied = {t["jobId"] for t in state.get("tasks", []) + state.get("running", [])}
        return _page(state.get("jobs") or [job_doc(j) for j in sorted(implied)])

    def _page(everything: list[Any]) -> ResponseReturnValue:
        size = int(request.args["pageSize"])
        page = int(request.args.get("page", 0))
        items = everything[page * size : (page + 1) * size]
        more = (page + 1) * size < len(everything)
        return jsonify(items=items, pagination={"hasMore": more, "currentPage": {"pageNumber": page}})

    @app.get("/api/v3/management/applications")
    def applications() -> ResponseReturnValue:
        return jsonify(state["applications"])

    return app


def agent_doc(
    agent_id: str, instance_id: str, group: str, tier: str, task_ids: list[str], idle_since_ms: int | None
) -> dict[str, Any]:
    res = {"cpu": 16, "memoryMB": 65536, "diskMB": 204800, "networkMbps": 10000}
    return {
        "id": agent_id,
        "instanceGroupId": group,
        "tier": tier,
        "lifecycle": "Active",
        "state": "Registered",
        "resources": res,
        "used": {"cpu": 4 * len(task_ids), "memoryMB": 0, "diskMB": 0, "networkMbps": 0},
        "attributes": {"zone": "us-east-1a", "instanceType": "m5.4xlarge", "instanceId": instance_id},
        "taskIds": task_ids,
        "idleSince": idle_since_ms,
    }


def task_doc(task_id: str, tier: str, accepted_ms: int, cpu: float = 8) -> dict[str, Any]:
    """A pending task in Titus's shape; its job (whose container says the cpu) is job_doc(its jobId)."""
    return {
        "id": task_id,
        "jobId": f"job-{cpu:g}cpu",
        "status": {"state": "Accepted", "timestamp": str(accepted_ms)},
        "taskContext": {"task.tier": tier, "task.capacityGroup": "default"},
    }


def job_doc(job_id: str) -> dict[str, Any]:
    """The job of task_doc's tasks: a batch job whose container asks the cpu its id names."""
    cpu = float(job_id.removeprefix("job-").removesuffix("cpu"))
    return {
        "id": job_id,
        "jobDescriptor": {
            "batch": {"size": 1},
            "container": {"resources": {"cpu": cpu, "memoryMB": 1024, "diskMB": 100, "networkMbps": 10}},
        },
        "status": {"state": "Accepted"},
    }
