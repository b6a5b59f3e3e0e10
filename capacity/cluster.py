"""The controller's view of the Titus cluster: agents, pending tasks, capacity groups, and phase-out.

`ClusterView` is the seam the lead can implement directly against the master's services; `HttpClusterView`
implements it over the master's v3 HTTP API; `MemoryCluster` is a real in-memory implementation for tests
and the simulator.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import requests

from capacity.model import (
    Agent,
    AgentState,
    CapacityGroup,
    Lifecycle,
    PendingTask,
    Resources,
    RunningTask,
    TaskMove,
    Tier,
)
from master.core.disruption import Budget, JobView, TaskHealth

#: Task states in which a task holds resources on an agent.
ON_AGENT_STATES = "Launched,StartInitiated,Started,KillInitiated"


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    agents: tuple[Agent, ...]
    pending_tasks: tuple[PendingTask, ...]
    capacity_groups: tuple[CapacityGroup, ...]
    #: Active jobs with their disruption budgets and task health (consolidation needs them).
    jobs: Mapping[str, JobView] = field(default_factory=dict)


class ClusterView(Protocol):
    def snapshot(self) -> ClusterSnapshot:
        """One consistent-enough read of agents, Accepted tasks and capacity groups."""

    def set_lifecycle(self, agent_id: str, lifecycle: Lifecycle, detail: str = "") -> None:
        """Phase an agent out (no new placements) or back in; its running tasks stay. `detail` says who
        and why, and is kept by the master with the lifecycle (the controller's ownership mark)."""


class ClusterError(Exception):
    """The master answered something we cannot use; the message names the call."""


class MemoryCluster:
    """In-memory cluster: agents and tasks are plain objects the test or simulator mutates."""

    def __init__(
        self,
        agents: Sequence[Agent] = (),
        pending: Sequence[PendingTask] = (),
        capacity_groups: Sequence[CapacityGroup] = (),
        jobs: Sequence[JobView] = (),
    ) -> None:
        self.agents: dict[str, Agent] = {a.id: a for a in agents}
        self.pending: list[PendingTask] = list(pending)
        self.capacity_groups: list[CapacityGroup] = list(capacity_groups)
        self.jobs: dict[str, JobView] = {j.id: j for j in jobs}
        self.lifecycle_calls: list[tuple[str, Lifecycle]] = []

    def snapshot(self) -> ClusterSnapshot:
        return ClusterSnapshot(
            tuple(self.agents.values()), tuple(self.pending), tuple(self.capacity_groups), dict(self.jobs)
        )

    def move(self, move: TaskMove) -> None:
        """What the master's drain does for one planned move: the replacement starts on the target (same
        id here, for the test's bookkeeping), then the original stops on the source."""
        source, target = self.agents[move.from_agent], self.agents[move.to_agent]
        task = next(t for t in source.tasks if t.id == move.task_id)
        self.agents[target.id] = replace(
            target,
            tasks=(*target.tasks, task),
            task_ids=(*target.task_ids, task.id),
            used=target.used + task.resources,
            idle_since=None,
        )
        left = tuple(t for t in source.tasks if t.id != task.id)
        self.agents[source.id] = replace(
            source,
            tasks=left,
            task_ids=tuple(t.id for t in left),
            used=source.used - task.resources,
            idle_since=None if left else source.idle_since,
        )

    def set_lifecycle(self, agent_id: str, lifecycle: Lifecycle, detail: str = "") -> None:
        if agent_id not in self.agents:
            raise ClusterError(f"agent {agent_id} unknown")
        self.agents[agent_id] = replace(self.agents[agent_id], lifecycle=lifecycle, lifecycle_detail=detail)
        self.lifecycle_calls.append((agent_id, lifecycle))


def parse_resources(doc: Mapping[str, Any] | None) -> Resources:
    doc = doc or {}
    return Resources(
        cpu=float(doc.get("cpu", 0)),
        memory_mb=float(doc.get("memoryMB", 0)),
        disk_mb=float(doc.get("diskMB", 0)),
        network_mbps=float(doc.get("networkMbps", 0)),
    )


def parse_agent(doc: Mapping[str, Any], running: Mapping[str, RunningTask] | None = None) -> Agent:
    """One item of GET /api/v3/agent/instances.

    Running tasks on a critical-tier agent are critical; the API does not say the tier of each running
    task, and the planner never touches an agent with any task, so nothing depends on a finer count.
    """
    tier = Tier(doc["tier"])
    task_ids = tuple(str(t) for t in doc.get("taskIds") or ())
    attributes = doc.get("attributes") or {}
    idle_ms = doc.get("idleSince")
    return Agent(
        id=str(doc["id"]),
        instance_id=str(attributes.get("instanceId") or doc["id"]),
        node_group_id=str(doc["instanceGroupId"]),
        tier=tier,
        lifecycle=Lifecycle(doc.get("lifecycle", "Active")),
        state=AgentState(doc.get("state", "Registered")),
        resources=parse_resources(doc.get("resources")),
        used=parse_resources(doc.get("used")),
        task_ids=task_ids,
        critical_task_count=len(task_ids) if tier is Tier.CRITICAL else 0,
        idle_since=None if idle_ms is None or task_ids else float(idle_ms) / 1000.0,
        tasks=tuple(running[t] for t in task_ids if running is not None and t in running),
        lifecycle_detail=str(doc.get("lifecycleDetail") or ""),
    )


def parse_job(doc: Mapping[str, Any], tasks: Sequence[Mapping[str, Any]]) -> JobView:
    """One item of GET /api/v3/jobs with its active tasks: the eviction core's view of the job."""
    descriptor = doc.get("jobDescriptor") or {}
    batch = descriptor.get("batch")
    if batch is not None:
        desired = int(batch.get("size", 0))
    else:
        desired = int(((descriptor.get("service") or {}).get("capacity") or {}).get("desired", 0))
    health = tuple(
        TaskHealth(
            str(t["id"]),
            str((t.get("status") or {}).get("state", "")),
            None,
            str((t.get("taskContext") or {}).get("task.originalId") or ""),
        )
        for t in tasks
    )
    return JobView(
        str(doc["id"]),
        desired,
        Budget.from_wire(descriptor.get("disruptionBudget"), batch is not None),
        health,
        batch is not None,
    )


def job_resources(job_docs: Sequence[Mapping[str, Any]]) -> dict[str, Resources]:
    """Each job's per-task resources (Titus's Task carries none: they are the job's container's)."""
    return {
        str(d["id"]): parse_resources(
            ((d.get("jobDescriptor") or {}).get("container") or {}).get("resources")
        )
        for d in job_docs
    }


def parse_task(doc: Mapping[str, Any], resources: Mapping[str, Resources]) -> PendingTask:
    """One item of GET /api/v3/tasks?taskStates=Accepted; status.timestamp (ms, a uint64 string) is when it
    was accepted; the master puts the tier and capacity group in taskContext."""
    status = doc.get("status") or {}
    context = doc.get("taskContext") or {}
    return PendingTask(
        id=str(doc["id"]),
        tier=Tier(context.get("task.tier", "flex")),
        resources=resources.get(str(doc.get("jobId")), parse_resources(None)),
        pending_since=float(status.get("timestamp", 0)) / 1000.0,
        capacity_group=str(context.get("task.capacityGroup") or ""),
    )


def parse_capacity_group(doc: Mapping[str, Any]) -> CapacityGroup:
    return CapacityGroup(
        name=str(doc["appName"]),
        tier=Tier(doc["tier"]),
        resource_dimension=parse_resources(doc.get("resourceDimension")),
        instance_count=int(doc.get("instanceCount", 0)),
    )


class HttpClusterView:
    """ClusterView over the master's v3 API with a bearer token (requests; one pooled session)."""

    def __init__(self, base_url: str, token: str, page_size: int = 1000, timeout_s: float = 10.0) -> None:
        self._base = base_url.rstrip("/")
        self._timeout = timeout_s
        self._page_size = page_size
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {token}"

    def _get(self, path: str, params: Mapping[str, str | int] | None = None) -> Any:
        resp = self._session.get(f"{self._base}{path}", params=params, timeout=self._timeout)
        if resp.status_code != 200:
            raise ClusterError(f"GET {path}: HTTP {resp.status_code}: {resp.text[:200]}")
        return resp.json()

    def _pages(self, path: str, query: Mapping[str, str]) -> Iterator[Mapping[str, Any]]:
        """Follows `pagination.cursor` when the master gives one, else `page` numbers, while hasMore."""
        params: dict[str, str | int] = {**query, "pageSize": self._page_size}
        for page in range(1, 100_000):
            doc = self._get(path, params)
            yield from doc.get("items", [])
            pagination = doc.get("pagination") or {}
            if not pagination.get("hasMore"):
                return
            cursor = pagination.get("cursor")
            params = {**query, "pageSize": self._page_size}
            if cursor:
                params["cursor"] = str(cursor)
            else:
                params["page"] = page
        raise ClusterError(f"GET {path}: pagination did not end")

    def _pending_pages(self) -> Iterator[Mapping[str, Any]]:
        return self._pages("/api/v3/tasks", {"taskStates": "Accepted"})

    def snapshot(self) -> ClusterSnapshot:
        agent_docs = self._get("/api/v3/agent/instances").get("items", [])
        pending_docs = list(self._pending_pages())
        groups = tuple(parse_capacity_group(d) for d in self._get("/api/v3/management/applications"))
        running_docs = list(self._pages("/api/v3/tasks", {"taskStates": ON_AGENT_STATES}))
        job_docs = list(self._pages("/api/v3/jobs", {}))
        per_task = job_resources(job_docs)
        pending = tuple(parse_task(d, per_task) for d in pending_docs)
        by_job: dict[str, list[Mapping[str, Any]]] = {}
        for t in running_docs:
            by_job.setdefault(str(t.get("jobId")), []).append(t)
        jobs = {str(d["id"]): parse_job(d, by_job.get(str(d["id"]), [])) for d in job_docs}
        running = {
            str(t["id"]): RunningTask(
                str(t["id"]),
                str(t.get("jobId")),
                per_task.get(str(t.get("jobId")), parse_resources(None)),
                jobs[str(t.get("jobId"))].batch if str(t.get("jobId")) in jobs else False,
            )
            for t in running_docs
        }
        agents = tuple(parse_agent(d, running) for d in agent_docs)
        return ClusterSnapshot(agents, pending, groups, jobs)

    def set_lifecycle(self, agent_id: str, lifecycle: Lifecycle, detail: str = "") -> None:
        path = f"/api/v3/agent/instances/{agent_id}/lifecycle"
        resp = self._session.put(
            f"{self._base}{path}",
            json={"lifecycleState": str(lifecycle), "detail": detail},
            timeout=self._timeout,
        )
        if resp.status_code not in (200, 204):
            raise ClusterError(f"PUT {path}: HTTP {resp.status_code}: {resp.text[:200]}")
