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
