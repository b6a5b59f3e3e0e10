"""The controller against a real moto_server (AsgNodeGroup) and an in-memory cluster."""

from __future__ import annotations

import json
import logging
import time

import pytest
import requests

from capacity.aws import AsgDiscovery, AsgNodeGroup
from capacity.cluster import HttpClusterView, MemoryCluster
from capacity.controller import OWNER_MARK, Controller, StaticProvider
from capacity.logs import JsonFormatter
from capacity.model import (
    ActionKind,
    Agent,
    AgentState,
    CapacityGroup,
    Lifecycle,
    PendingTask,
    Resources,
    RunningTask,
    Tier,
    TierConfig,
)
from capacity.status import StatusServer, create_status_app
from master.core.disruption import Budget, JobView, TaskHealth
from tests.capacity.conftest import Aws
from tests.capacity.fake_agent import FakeAgent
from tests.conftest import API_TOKEN, RunningMaster, service_job, wait_for

T0 = 1_700_000_000.0
M5 = Resources(16, 65536, 204800, 10000)
TIERS = {
    Tier.CRITICAL: TierConfig.default(Tier.CRITICAL),
    Tier.FLEX: TierConfig(Tier.FLEX, pending_threshold_s=30, idle_threshold_s=300, scale_up_cooldown_s=30),
}


def agents_for(
    aws: Aws, asg: str, tier: Tier, busy: int = 0, idle_for: float = 0, critical: bool = False
) -> list[Agent]:
    """One registered agent per instance; the first `busy` run tasks, the rest are idle for `idle_for`."""
    out = []
    for n, iid in enumerate(aws.instances(asg)):
        tasks = (f"task-{iid}",) if n < busy else ()
        out.append(
            Agent(
                id=f"agent-{iid}",
                instance_id=iid,
                node_group_id=asg,
                tier=tier,
                lifecycle=Lifecycle.ACTIVE,
                state=AgentState.REGISTERED,
                resources=M5,
                used=Resources(cpu=8) if tasks else Resources(),
                task_ids=tasks,
                critical_task_count=len(tasks) if critical else 0,
                idle_since=None if tasks else T0 - idle_for,
            )
        )
    return out


def overdue(n: int, cpu: float = 8, tier: Tier = Tier.FLEX) -> list[PendingTask]:
    return [PendingTask(f"p{k}", tier, Resources(cpu, 1024, 100, 10), T0 - 60) for k in range(n)]


def controller(aws: Aws, cluster: MemoryCluster, dry_run: bool = False) -> Controller:
    provider = AsgDiscovery(aws.asg, aws.ec2, aws.cluster, dry_run=dry_run)
    return Controller(cluster, provider, TIERS, dry_run=dry_run)


def test_scale_up_on_overdue_tasks_then_cooldown(aws: Aws) -> None:
    flex = aws.tier_asg("flex", desired=1, max_size=10)
    cluster = MemoryCluster(agents_for(aws, flex, Tier.FLEX, busy=1), overdue(5))  # 40 cpu -> 3 instances
    ctl = controller(aws, cluster)
    plan = ctl.run_once(T0)
    assert plan is not None
    assert aws.describe(flex)["DesiredCapacity"] == 4
    assert "5 tasks waited over 30s" in plan.desired[0].reason
    # More overdue work 10 s later: the scale-up cooldown holds the group while the first batch boots.
    cluster.pending += overdue(40)
    ctl.run_once(T0 + 10)
    assert aws.describe(flex)["DesiredCapacity"] == 4
    ctl.run_once(T0 + 31)
    assert aws.describe(flex)["DesiredCapacity"] == 10  # bounded by MaxSize, which moto would not enforce
    assert any("cannot add enough" in r.message for r in ctl.status.last_plan.reports)  # type: ignore[union-attr]


def test_scale_down_terminates_exactly_the_idle_instances(aws: Aws) -> None:
    flex = aws.tier_asg("flex", desired=4, min_size=1)
    agents = agents_for(aws, flex, Tier.FLEX, busy=2, idle_for=900)
    cluster = MemoryCluster(agents)
    ctl = controller(aws, cluster)
    idle = {a.instance_id for a in agents if not a.task_ids}
    busy = {a.instance_id for a in agents if a.task_ids}

    ctl.run_once(T0)
    assert {aid for aid, lc in cluster.lifecycle_calls if lc is Lifecycle.PHASED_OUT} == {
        f"agent-{i}" for i in idle
    }
    assert aws.describe(flex)["DesiredCapacity"] == 4  # phase-out first, nothing terminated yet

    ctl.run_once(T0 + 5)
    assert set(aws.instances(flex)) == busy
    assert aws.describe(flex)["DesiredCapacity"] == 2
    kinds = [a.kind for a in ctl.recent_actions() if a.ok]
    assert kinds.count(ActionKind.TERMINATE) == 2


def test_critical_agents_with_tasks_are_never_terminated(aws: Aws) -> None:
    crit = aws.tier_asg("critical", desired=4, min_size=0)
    agents = agents_for(aws, crit, Tier.CRITICAL, busy=1, idle_for=7200, critical=True)
    reservation = CapacityGroup("api", Tier.CRITICAL, Resources(4, 8192, 1000, 100), 4)  # 1 instance + 5%
    cluster = MemoryCluster(agents, capacity_groups=[reservation])
    ctl = controller(aws, cluster)
    for k in range(4):
        ctl.run_once(T0 + k * 1000)
    remaining = aws.instances(crit)
    busy = next(a.instance_id for a in agents if a.task_ids)
    assert busy in remaining
    # 16 cpu * 1.05 = 16.8 -> the reservation needs 2 instances, so 2 stay although both may be idle.
    assert len(remaining) == 2
    assert aws.describe(crit)["DesiredCapacity"] == 2


def test_critical_reservation_raises_desired(aws: Aws) -> None:
    crit = aws.tier_asg("critical", desired=0, max_size=3)
    cluster = MemoryCluster(
        capacity_groups=[CapacityGroup("db", Tier.CRITICAL, Resources(16, 1024, 0, 0), 5)]
    )
    plan = controller(aws, cluster).run_once(T0)
    assert aws.describe(crit)["DesiredCapacity"] == 3
    assert plan is not None and any("max too small" in r.message for r in plan.reports)


def test_dry_run_changes_nothing_but_reports_the_plan(aws: Aws) -> None:
    flex = aws.tier_asg("flex", desired=3, min_size=0)
    agents = agents_for(aws, flex, Tier.FLEX, busy=1, idle_for=900)
    cluster = MemoryCluster(agents, overdue(1, cpu=1))
    before = aws.instances(flex)
    ctl = controller(aws, cluster, dry_run=True)
    cluster.pending = overdue(10)
    plan = ctl.run_once(T0)
    assert plan is not None and plan.changes()
    assert aws.instances(flex) == before and aws.describe(flex)["DesiredCapacity"] == 3
    assert cluster.lifecycle_calls == []
    assert ctl.recent_actions() and all(a.dry_run for a in ctl.recent_actions())


def test_one_broken_group_does_not_stop_the_others(aws: Aws) -> None:
    gone = aws.tier_asg("flex", desired=0)
    flex = aws.tier_asg("flex", desired=0)
    groups = [
        AsgNodeGroup(aws.asg, aws.ec2, gone, Tier.FLEX),
        AsgNodeGroup(aws.asg, aws.ec2, flex, Tier.FLEX),
    ]
    aws.asg.delete_auto_scaling_group(AutoScalingGroupName=gone, ForceDelete=True)
    ctl = Controller(MemoryCluster(pending=overdue(2)), StaticProvider(groups), TIERS)
    ctl.run_once(T0)
    assert aws.describe(flex)["DesiredCapacity"] == 1
    assert any(gone in e for e in ctl.status.errors)


def test_status_endpoint_requires_token_and_shows_reasons(aws: Aws) -> None:
    flex = aws.tier_asg("flex", desired=0)
    ctl = controller(aws, MemoryCluster(pending=overdue(3)))
    ctl.run_once(T0)
    server = StatusServer(create_status_app(ctl, "s3cret"), port=0)
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/api/v3/capacity"
        assert requests.get(url, timeout=5).status_code == 401
        assert requests.get(url, headers={"Authorization": "Bearer nope"}, timeout=5).status_code == 401
        doc = requests.get(url, headers={"Authorization": "Bearer s3cret"}, timeout=5).json()
    finally:
        server.stop()
    (desired,) = doc["plan"]["desired"]
    assert (
        desired["nodeGroupId"] == flex and desired["desired"] == 2 and "waited over 30s" in desired["reason"]
    )
    assert doc["recentActions"][0]["kind"] == "scale_up" and doc["recentActions"][0]["ok"]


def test_decisions_are_logged_as_json_lines(aws: Aws, caplog: pytest.LogCaptureFixture) -> None:
    aws.tier_asg("flex", desired=0)
    ctl = controller(aws, MemoryCluster(pending=overdue(1)))
    with caplog.at_level(logging.INFO, logger="capacity"):
        ctl.run_once(T0)
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records]
    actions = [line["action"] for line in lines if line.get("event") == "action"]
    assert actions and actions[0]["kind"] == "scale_up" and actions[0]["reason"]


CONSOLIDATING = {
    Tier.CRITICAL: TierConfig.default(Tier.CRITICAL),
    Tier.FLEX: TierConfig(
        Tier.FLEX, pending_threshold_s=30, idle_threshold_s=300, consolidate_utilisation=0.5
    ),
}


def half_empty(aws: Aws, asg: str) -> tuple[list[Agent], list[JobView]]:
    """Each instance runs two service tasks of one job (6 of 16 cpu): half empty or less."""
    agents, health = [], []
    for n, iid in enumerate(aws.instances(asg)):
        tasks = tuple(RunningTask(f"web-{n}-{k}", "web", Resources(3, 8192, 1000, 100)) for k in range(2))
        health += [TaskHealth(t.id) for t in tasks]
        agents.append(
            Agent(
                id=f"agent-{iid}",
                instance_id=iid,
                node_group_id=asg,
                tier=Tier.FLEX,
                lifecycle=Lifecycle.ACTIVE,
                state=AgentState.REGISTERED,
                resources=M5,
                used=Resources(6, 16384, 2000, 200),
                task_ids=tuple(t.id for t in tasks),
                tasks=tasks,
            )
        )
    budget = Budget.from_wire(
        {
            "availabilityPercentageLimit": {"percentageOfHealthyContainers": 75},
            "ratePerInterval": {"intervalMs": 600_000, "limitPerInterval": 2},
        }
    )
    return agents, [JobView("web", len(health), budget, tuple(health))]


def test_consolidates_two_half_empty_agents_and_terminates_the_freed_instance(aws: Aws) -> None:
    flex = aws.tier_asg("flex", desired=2, min_size=0)
    agents, jobs = half_empty(aws, flex)
    cluster = MemoryCluster(agents, jobs=jobs)
    ctl = Controller(cluster, AsgDiscovery(aws.asg, aws.ec2, aws.cluster), CONSOLIDATING)

    first = ctl.run_once(T0)
    assert first is not None
    (source,) = first.phase_out
    keep = next(a for a in agents if a.id != source.agent_id)
    assert [m.to_agent for m in first.moves] == [keep.id, keep.id]
    assert all("budget allows it" in m.reason for m in first.moves)
    assert cluster.agents[source.agent_id].lifecycle is Lifecycle.PHASED_OUT
    assert len(aws.instances(flex)) == 2  # nothing is terminated while it still runs tasks
    assert [e.task_id for e in ctl.evictions] == [m.task_id for m in first.moves]

    for move in first.moves:  # the master's drain: replacement Started on the target, original stopped
        cluster.move(move)
    second = ctl.run_once(T0 + 60)
    assert second is not None
    assert [a.instance_id for a in second.terminate] == [source.instance_id]
    assert aws.instances(flex) == [keep.instance_id]
    assert aws.describe(flex)["DesiredCapacity"] == 1
    assert len(cluster.agents[keep.id].tasks) == 4


def test_never_terminates_an_agent_someone_else_phased_out(aws: Aws) -> None:
    flex = aws.tier_asg("flex", desired=2, min_size=0)
    agents = agents_for(aws, flex, Tier.FLEX, busy=1, idle_for=3600)
    upgrading = next(a for a in agents if not a.task_ids)
    cluster = MemoryCluster(agents)
    cluster.set_lifecycle(upgrading.id, Lifecycle.PHASED_OUT)  # an upgrade drains it through the master
    ctl = controller(aws, cluster)
    for k in range(3):
        ctl.run_once(T0 + k * 600)
    assert upgrading.instance_id in aws.instances(flex)
    assert not [a for a in ctl.recent_actions() if a.kind is ActionKind.TERMINATE]
    assert any("phased out by someone else" in n for n in ctl.status.last_plan.notes)  # type: ignore[union-attr]


def test_a_restarted_controller_still_owns_what_it_phased_out(aws: Aws) -> None:
    flex = aws.tier_asg("flex", desired=2, min_size=0)
    agents = agents_for(aws, flex, Tier.FLEX, busy=1, idle_for=3600)
    idle = next(a for a in agents if not a.task_ids)
    cluster = MemoryCluster(agents)
    first = controller(aws, cluster)
    first.run_once(T0)
    assert cluster.agents[idle.id].lifecycle is Lifecycle.PHASED_OUT
    assert cluster.agents[idle.id].lifecycle_detail.startswith(OWNER_MARK)
    assert idle.instance_id in aws.instances(flex)

    restarted = controller(aws, cluster)  # no memory of the phase-out: only the master's mark
    restarted.run_once(T0 + 600)
    assert aws.instances(flex) == [next(a.instance_id for a in agents if a.task_ids)]


def test_an_agent_phased_out_again_by_someone_else_is_theirs(aws: Aws) -> None:
    flex = aws.tier_asg("flex", desired=2, min_size=0)
    agents = agents_for(aws, flex, Tier.FLEX, busy=1, idle_for=3600)
    idle = next(a for a in agents if not a.task_ids)
    cluster = MemoryCluster(agents)
    ctl = controller(aws, cluster)
    ctl.run_once(T0)
    assert cluster.agents[idle.id].lifecycle is Lifecycle.PHASED_OUT
    # An upgrade's drain phases the same agent out with its own detail before the controller finished.
    cluster.set_lifecycle(idle.id, Lifecycle.PHASED_OUT, "rolling upgrade")
    for k in range(1, 4):
        ctl.run_once(T0 + k * 600)
    assert idle.instance_id in aws.instances(flex)
    assert not [a for a in ctl.recent_actions() if a.kind is ActionKind.TERMINATE]
    assert idle.id not in ctl.owned


def test_consolidation_through_the_real_master_terminates_the_freed_instance(
    aws: Aws, master: RunningMaster
) -> None:
    """The whole loop: the controller reads a real master over HTTP, phases out one of two half-empty agents
    with its mark, the master's drain moves the tasks through the eviction service (replacements Started
    first), and the controller then terminates exactly the freed instance in moto with decrement."""
    flex = aws.tier_asg("flex", desired=2, min_size=0)
    first_iid, second_iid = aws.instances(flex)
    a = FakeAgent(master.url, f"agent-{first_iid}", first_iid, flex)
    b = FakeAgent(master.url, f"agent-{second_iid}", second_iid, flex)
    # Two tasks on each agent (6 of 16 cpu): hold one agent back while the other takes two, then swap.
    b.unavailable = "held by the test"
    b.converge()
    budget = {"availabilityPercentageLimit": {"percentageOfHealthyContainers": 50}, "rateUnlimited": {}}
    spec = service_job(
        desired=2,
        disruptionBudget=budget,
        container={"resources": {"cpu": 3, "memoryMB": 8192, "diskMB": 1000, "networkMbps": 100}},
    )
    job_id = master.api("POST", "/api/v3/jobs", json=spec).json()["id"]
    wait_for(lambda: len(a.converge()) == 2, what="two tasks on the first agent")
    a.unavailable, b.unavailable = "held by the test", ""
    a.converge()
    b.converge()
    scaled = master.api("PUT", f"/api/v3/jobs/{job_id}/capacityAttributes", json={"desired": 4})
    assert scaled.status_code < 300, scaled.text
    wait_for(lambda: len(b.converge()) == 2, what="two tasks on the second agent")
    a.unavailable = ""
    a.converge()

    ctl = Controller(
        HttpClusterView(master.url, API_TOKEN), AsgDiscovery(aws.asg, aws.ec2, aws.cluster), CONSOLIDATING
    )
    first = ctl.run_once(time.time())
    assert first is not None
    (source,) = first.phase_out
    keep, gone = (b, a) if source.agent_id == a.id else (a, b)
    assert [m.to_agent for m in first.moves] == [keep.id, keep.id]
    view = {v["id"]: v for v in master.api("GET", "/api/v3/agent/instances").json()["items"]}
    assert view[gone.id]["lifecycle"] == "PhasedOut"
    assert view[gone.id]["lifecycleDetail"].startswith(OWNER_MARK)

    def drained() -> bool:
        left, kept = gone.converge(), keep.converge()  # both agents heartbeat every round
        return not left and len(kept) == 4

    wait_for(drained, timeout=30, what="the master's drain to move both tasks")
    started = [t for t in master.api("GET", "/api/v3/tasks", params={"jobIds": job_id}).json()["items"]]
    assert len(started) == 4 and {t["status"]["state"] for t in started} == {"Started"}
    assert {t["taskContext"]["agent.id"] for t in started} == {keep.id}

    second = ctl.run_once(time.time() + 60)
    assert second is not None
    gone_iid = first_iid if gone is a else second_iid
    assert [t.instance_id for t in second.terminate] == [gone_iid]
    assert aws.instances(flex) == [second_iid if gone is a else first_iid]
    assert aws.describe(flex)["DesiredCapacity"] == 1
