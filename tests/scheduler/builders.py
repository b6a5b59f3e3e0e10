"""Small builders so each table row in the scheduler tests says only what matters to it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from master.scheduler import (
    AgentView,
    CapacityGroupView,
    FitnessWeights,
    PendingTask,
    Resources,
    ScheduleReply,
    ScheduleRequest,
    schedule,
)


def agent(
    agent_id: str = "a1",
    *,
    tier: str = "flex",
    lifecycle: str = "Active",
    cpu: float = 4,
    memory: int = 8192,
    disk: int = 100_000,
    network: int = 1000,
    gpu: int = 0,
    used: Resources | None = None,
    zone: str = "us-east-1a",
    itype: str = "m5.xlarge",
    group: str | None = None,
    jobs: Mapping[str, int] | None = None,
    attrs: Mapping[str, str] | None = None,
    exclusive: bool = False,
) -> AgentView:
    return AgentView(
        agent_id=agent_id,
        instance_group=group or f"{tier}-{itype}",
        tier=tier,  # type: ignore[arg-type]
        lifecycle=lifecycle,  # type: ignore[arg-type]
        total=Resources(cpu, memory, disk, network, gpu),
        used=used or Resources(),
        attributes={"zone": zone, "instanceType": itype, "id": agent_id, **(attrs or {})},
        job_task_counts=dict(jobs or {}),
        exclusive=exclusive,
    )


def task(
    task_id: str = "t1",
    *,
    job: str = "j1",
    cpu: float = 1,
    memory: int = 1024,
    disk: int = 0,
    network: int = 0,
    gpu: int = 0,
    group: str = "DEFAULT",
    tier: str = "flex",
    hard: Mapping[str, str] | None = None,
    soft: Mapping[str, str] | None = None,
    spread: bool = False,
) -> PendingTask:
    return PendingTask(
        task_id=task_id,
        job_id=job,
        resources=Resources(cpu, memory, disk, network, gpu),
        capacity_group=group,
        tier=tier,  # type: ignore[arg-type]
        hard_constraints=dict(hard or {}),
        soft_constraints=dict(soft or {}),
        spread=spread,
    )


def tasks(n: int, prefix: str = "t", **kwargs: object) -> list[PendingTask]:
    return [task(f"{prefix}{i}", **kwargs) for i in range(n)]  # type: ignore[arg-type]


def group(
    name: str,
    tier: str = "flex",
    cpu: float = 0,
    memory: int | None = None,
    count: int = 1,
    used: Resources | None = None,
) -> CapacityGroupView:
    """A capacity group reserving `count` x (cpu, memory); memory defaults to 1 GB per cpu like `task`."""
    per_instance = Resources(cpu, int(cpu * 1024) if memory is None else memory)
    return CapacityGroupView(name, tier, per_instance.scale(count), used or Resources())  # type: ignore[arg-type]


def run(
    pending: Iterable[PendingTask],
    agents: Iterable[AgentView],
    groups: Iterable[CapacityGroupView] = (),
    zone_counts: Mapping[str, Mapping[str, int]] | None = None,
    weights: FitnessWeights | None = None,
) -> ScheduleReply:
    return schedule(
        ScheduleRequest(
            tasks=list(pending),
            agents=list(agents),
            capacity_groups=list(groups),
            job_zone_counts=zone_counts or {},
            weights=weights or FitnessWeights(),
        )
    )


def placed(reply: ScheduleReply) -> dict[str, str]:
    return {a.task_id: a.agent_id for a in reply.assignments}
