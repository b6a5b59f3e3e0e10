"""Builds the placement engine's `ScheduleRequest` from the task index, rebuilding only what changed.

The engine (master/scheduler) is pure and takes plain frozen data. Building that data used to cost a scan
of every task per pass; now each agent's `AgentView` is cached and rebuilt only when the agent itself
(registration, attributes, lifecycle, tier) or what runs on it (`TaskIndex.agent_rev`) changed, and the
per-job parts of a `PendingTask` (resources, constraints, tier) are cached per job. A pass then costs one
cheap comparison per agent plus the pending tasks, and never grows with the number of running tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from master.core.agent import Agent
from master.core.entities import Job, Task
from master.scheduler import model as sched
from master.state import TaskIndex


def job_resources(job: Job) -> sched.Resources:
    """Every dimension the job asks for per task, GPUs included."""
    r = job.descriptor.container.resources
    return sched.Resources(float(r.cpu), r.memoryMB, r.diskMB, r.networkMbps, r.gpu)


def is_exclusive(job: Job) -> bool:
    hard = job.descriptor.container.hardConstraints.constraints
    return any(k.lower() == "exclusivehost" and v.lower() == "true" for k, v in hard.items())


def _tier(value: str) -> sched.Tier:
    return "critical" if value == "critical" else "flex"


@dataclass(slots=True)
class _AgentEntry:
    agent: Agent
    attributes: Mapping[str, str]
    resources: sched.Resources
    lifecycle: str
    tier: str
    rev: int
    view: sched.AgentView


@dataclass(slots=True)
class _JobEntry:
    descriptor: object
    tier: str
    resources: sched.Resources
    hard: Mapping[str, str]
    soft: Mapping[str, str]
    spread: bool


class SnapshotBuilder:
    """Owned by the manager and called under its lock; keeps its caches between passes."""

    def __init__(self) -> None:
        self._agents: dict[str, _AgentEntry] = {}
        self._jobs: dict[str, _JobEntry] = {}
        self.rebuilt_agents = 0  # agents rebuilt by the last pass (for metrics and the benchmark)

    def agent_views(
        self,
        agents: Iterable[Agent],
        index: TaskIndex,
        lifecycle_of: Callable[[Agent], str],
        tier_of: Callable[[Agent], str],
        jobs: Mapping[str, Job],
    ) -> list[sched.AgentView]:
        views: list[sched.AgentView] = []
        seen: set[str] = set()
        rebuilt = 0
        for a in agents:
            if not a.schedulable:
                continue
            seen.add(a.id)
            lifecycle, tier, rev = lifecycle_of(a), tier_of(a), index.agent_rev.get(a.id, 0)
            e = self._agents.get(a.id)
            if (
                e is None
                or e.agent is not a
                or e.attributes is not a.attributes
                or e.resources != a.resources
                or e.lifecycle != lifecycle
                or e.tier != tier
                or e.rev != rev
            ):
                counts = dict(index.job_counts.get(a.id, {}))
                view = sched.AgentView(
                    agent_id=a.id,
                    instance_group=a.attributes.get("instanceGroup", "default"),
                    tier=_tier(tier),
                    lifecycle=lifecycle,  # type: ignore[arg-type]
                    total=a.resources,
                    used=index.used_by(a.id),
                    attributes={**a.attributes, "id": a.id},
                    job_task_counts=counts,
                    exclusive=any(j in jobs and is_exclusive(jobs[j]) for j in counts),
                )
                e = _AgentEntry(a, a.attributes, a.resources, lifecycle, tier, rev, view)
                self._agents[a.id] = e
                rebuilt += 1
            views.append(e.view)
        if len(self._agents) > len(seen):
            for gone in [i for i in self._agents if i not in seen]:
                del self._agents[gone]
        self.rebuilt_agents = rebuilt
        return views

    def pending_tasks(
        self, pending: Iterable[Task], jobs: Mapping[str, Job], tier_of_group: Callable[[str], str]
    ) -> list[sched.PendingTask]:
        out = []
        for t in pending:
            job = jobs[t.job_id]
            tier = tier_of_group(job.descriptor.capacityGroup)
            e = self._jobs.get(job.id)
            if e is None or e.descriptor is not job.descriptor or e.tier != tier:
                c = job.descriptor.container
                e = _JobEntry(
                    job.descriptor,
                    tier,
                    job_resources(job),
                    c.hardConstraints.constraints,
                    c.softConstraints.constraints,
                    tier == "critical" and job.descriptor.service is not None,
                )
                self._jobs[job.id] = e
            out.append(
                sched.PendingTask(
                    task_id=t.id,
                    job_id=t.job_id,
                    resources=e.resources,
                    capacity_group=job.descriptor.capacityGroup,
                    tier=_tier(tier),
                    hard_constraints=e.hard,
                    soft_constraints=e.soft,
                    spread=e.spread,
                )
            )
        return out

    def forget_job(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)
