"""The capacity controller's HttpClusterView against a real master (not a stand-in): the API shapes agree."""

from __future__ import annotations

from capacity.cluster import HttpClusterView
from tests.conftest import API_TOKEN, RunningMaster, service_job, wait_for


def test_snapshot_and_phase_out_against_the_real_master(master: RunningMaster) -> None:
    reg = {
        "id": "i-0abc",
        "resources": {"cpu": 2, "memoryMB": 2048, "diskMB": 1000, "networkMbps": 100},
        "attributes": {
            "tier": "flex",
            "instanceGroup": "asg-flex",
            "zone": "z1",
            "instanceType": "m5.large",
            "instanceId": "i-0abc",
        },
    }
    assert master.agent("POST", "/api/v3/agent/instances/register", json=reg).status_code == 200
    sla = {
        "appName": "payments",
        "tier": "Critical",
        "instanceCount": 3,
        "resourceDimension": {"cpu": 1, "memoryMB": 1024, "diskMB": 100, "networkMbps": 10},
    }
    assert master.api("POST", "/api/v3/management/applications", json=sla).status_code == 201
    too_big = service_job(desired=2, container={"resources": {"memoryMB": 4096}})
    assert master.api("POST", "/api/v3/jobs", json=too_big).status_code == 202

    view = HttpClusterView(master.url, API_TOKEN)
    snap = wait_for(
        lambda: (s := view.snapshot()) and len(s.pending_tasks) == 2 and s, what="two pending tasks"
    )
    (agent,) = snap.agents
    assert agent.id == "i-0abc" and str(agent.tier) in ("flex", "Tier.FLEX")
    assert agent.idle_since is not None  # a fresh, empty agent is idle from its registration
    assert {g.name for g in snap.capacity_groups} == {"DEFAULT", "payments"}
    assert all(t.resources.memory_mb == 4096 for t in snap.pending_tasks)

    view.set_lifecycle("i-0abc", "PhasedOut")  # type: ignore[arg-type]
    agents = master.api("GET", "/api/v3/agent/instances").json()["items"]
    assert agents[0]["lifecycle"] == "PhasedOut"


def test_an_agent_named_by_hostname_is_terminated_by_its_imds_instance_id(master: RunningMaster) -> None:
    """Agents register under their hostname; the instance id they read from IMDSv2 is what scale-in uses."""
    from agent.main import config_from
    from tests.fixtures.imds import EC2_METADATA, imds

    with imds(EC2_METADATA) as server:
        config, *_ = config_from(
            {
                "TITUS_AGENT_TOKEN": "t" * 20,
                "TITUS_AGENT_ID": "ip-10-42-16-25",
                "TITUS_IMDS": "true",
                "TITUS_IMDS_URL": server.url,
                "TITUS_INSTANCE_GROUP": "asg-flex",
            }
        )
    reg = {
        "id": config.agent_id,
        "resources": {"cpu": 2, "memoryMB": 2048, "diskMB": 1000, "networkMbps": 100},
        "attributes": config.attributes,
    }
    assert master.agent("POST", "/api/v3/agent/instances/register", json=reg).status_code == 200
    view = HttpClusterView(master.url, API_TOKEN)
    (agent,) = [a for a in view.snapshot().agents if a.id == "ip-10-42-16-25"]
    assert agent.instance_id == EC2_METADATA["instance-id"]
    assert agent.node_group_id == "asg-flex"


def test_running_tasks_and_budgets_from_the_real_master(master: RunningMaster) -> None:
    """Consolidation reads each agent's tasks with job and resources, and each job's stored budget."""
    reg = {
        "id": "i-0def",
        "resources": {"cpu": 4, "memoryMB": 4096, "diskMB": 1000, "networkMbps": 100},
        "attributes": {"tier": "flex", "instanceGroup": "asg-flex", "zone": "z1", "instanceId": "i-0def"},
    }
    assert master.agent("POST", "/api/v3/agent/instances/register", json=reg).status_code == 200
    budget = {
        "unhealthyTasksLimit": {"limitOfUnhealthyContainers": 1},
        "ratePerInterval": {"intervalMs": 600000, "limitPerInterval": 2},
    }
    job_spec = service_job(desired=2, disruptionBudget=budget)
    assert master.api("POST", "/api/v3/jobs", json=job_spec).status_code == 202

    view = HttpClusterView(master.url, API_TOKEN)
    snap = wait_for(
        lambda: (s := view.snapshot()) and s.agents and len(s.agents[0].tasks) == 2 and s,
        what="two tasks placed on the agent",
    )
    (agent,) = snap.agents
    (job,) = snap.jobs.values()
    assert {t.job_id for t in agent.tasks} == {job.id}
    assert all(t.resources.cpu == 0.25 and not t.batch for t in agent.tasks)
    assert job.desired == 2 and len(job.tasks) == 2
    assert job.budget.policy == "unhealthyTasksLimit" and job.budget.rate == "ratePerInterval"
    assert job.budget.interval_s == 600.0 and job.budget.rate_value == 2
