"""Builders for planner inputs, so table tests read as the situation they describe."""

from __future__ import annotations

from capacity.model import (
    ActionKind,
    Agent,
    AgentState,
    CapacityGroup,
    Lifecycle,
    NodeGroupState,
    PendingTask,
    PlanInputs,
    RecentAction,
    Resources,
    Tier,
    TierConfig,
)
from master.core.disruption import Eviction, JobView

NOW = 1_000_000.0
M5 = Resources(cpu=16, memory_mb=65536, disk_mb=200_000, network_mbps=10_000)


def group(
    gid: str,
    tier: Tier = Tier.FLEX,
    desired: int = 0,
    min_size: int = 0,
    max_size: int = 100,
    size: Resources = M5,
    instance_ids: tuple[str, ...] | None = None,
) -> NodeGroupState:
    ids = instance_ids if instance_ids is not None else tuple(f"i-{gid}-{n}" for n in range(desired))
    return NodeGroupState(gid, tier, min_size, max_size, desired, "m5.4xlarge", size, ids)


def agent(
    gid: str,
    n: int,
    tier: Tier = Tier.FLEX,
    tasks: int = 0,
    critical_tasks: int = 0,
    idle_for: float | None = None,
    lifecycle: Lifecycle = Lifecycle.ACTIVE,
    used: Resources | None = None,
) -> Agent:
    return Agent(
        id=f"agent-{gid}-{n}",
        instance_id=f"i-{gid}-{n}",
        node_group_id=gid,
        tier=tier,
        lifecycle=lifecycle,
        state=AgentState.REGISTERED,
        resources=M5,
        used=used or (Resources(cpu=2.0 * tasks) if tasks else Resources()),
        task_ids=tuple(f"t-{gid}-{n}-{k}" for k in range(tasks)),
        critical_task_count=critical_tasks,
        idle_since=None if idle_for is None else NOW - idle_for,
    )


def task(n: int, waited: float, cpu: float = 4.0, mem: float = 8192, tier: Tier = Tier.FLEX) -> PendingTask:
    return PendingTask(f"task-{n}", tier, Resources(cpu, mem, 1000, 100), NOW - waited)


def cgroup(name: str, cpu: float, mem: float, count: int, tier: Tier = Tier.CRITICAL) -> CapacityGroup:
    return CapacityGroup(name, tier, Resources(cpu, mem, 1000, 100), count)


def recent(kind: ActionKind, gid: str, ago: float, agent_id: str = "") -> RecentAction:
    return RecentAction(kind, gid, NOW - ago, 1, agent_id)


def inputs(
    groups: list[NodeGroupState],
    agents: list[Agent] | None = None,
    tasks: list[PendingTask] | None = None,
    cgroups: list[CapacityGroup] | None = None,
    actions: list[RecentAction] | None = None,
    owned: tuple[str, ...] = (),
    jobs: dict[str, JobView] | None = None,
    evictions: tuple[Eviction, ...] = (),
    **flex: float,
) -> PlanInputs:
    tiers = {Tier.CRITICAL: TierConfig.default(Tier.CRITICAL), Tier.FLEX: TierConfig.default(Tier.FLEX)}
    if flex:
        tiers[Tier.FLEX] = TierConfig(Tier.FLEX, **flex)  # type: ignore[arg-type]
    return PlanInputs(
        tiers=tiers,
        capacity_groups=tuple(cgroups or ()),
        pending_tasks=tuple(tasks or ()),
        agents=tuple(agents or ()),
        node_groups=tuple(groups),
        recent_actions=tuple(actions or ()),
        owned_agents=frozenset(owned),
        jobs=jobs or {},
        evictions=evictions,
    )
