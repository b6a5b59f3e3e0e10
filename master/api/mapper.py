"""The one mapper from the master's jobs and tasks to Titus's v3 wire messages (titus_job_api.proto).

Every answer of the v3 job routes is built here, so it parses strictly into Titus's `Job`, `Task`,
`JobQueryResult` or `TaskQueryResult` with proto3 JSON rules: field names as the proto spells them, enums
by name, 64-bit integers (`uint64` timestamps, versions, delays) as decimal strings. Nothing of ours is a
field Titus lacks; what only we know rides where Titus leaves room for it:

- `Task.taskContext` (a string map Titus documents for agent and task facts): `agent.id`, `task.index`,
  `task.originalId`, `task.resubmitOf`, `task.resubmitNumber`, `task.movedFromJob`, and ours `task.exitCode`,
  `task.pendingReason` (why an Accepted task is not placed), `task.tier`, `task.capacityGroup`,
  `task.usage.cpuPct`, `task.usage.rssMB`, `task.usage.processes`.
- `Task.logLocation.liveStream.url` / `ui.url`: this master's log route for the task.
- `Task.migrationDetails.needsMigration`: true while a drain moves the task.
- `Version.timestamp`: the entity's store revision, which grows with every write of that entity (Titus's
  clients compare versions of one entity to drop stale updates; that is what it is good for here).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from master.core import states
from master.core.entities import Job, Task
from master.core.states import Status
from master.scheduler.model import render_reason

#: taskContext keys this master adds to Titus's own (`agent.*`, `task.index`, `task.originalId`, ...).
CTX_EXIT_CODE = "task.exitCode"
CTX_PENDING_REASON = "task.pendingReason"
CTX_TIER = "task.tier"
CTX_CAPACITY_GROUP = "task.capacityGroup"
CTX_USAGE_PREFIX = "task.usage."


def status_to_wire(status: Status) -> dict[str, Any]:
    """JobStatus / TaskStatus: the state enum by name, `timestamp` a uint64 (a string in proto3 JSON)."""
    return {
        "state": status.state,
        "reasonCode": status.reason_code,
        "reasonMessage": status.reason_message,
        "timestamp": str(status.timestamp_ms),
    }


def version_to_wire(version: int) -> dict[str, str]:
    return {"timestamp": str(version)}


def job_to_wire(job: Job) -> dict[str, Any]:
    """Titus's `Job`. The descriptor is the validated wire model, already in proto3 JSON form."""
    return {
        "id": job.id,
        "jobDescriptor": job.descriptor_json(),
        "status": status_to_wire(job.machine.status),
        "statusHistory": [status_to_wire(s) for s in job.machine.history],
        "version": version_to_wire(job.version),
    }


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


def task_to_wire(task: Task, job: Job | None, tier: str | None = None) -> dict[str, Any]:
    """Titus's `Task`, with our extra facts in `taskContext` (see the module docstring)."""
    context: dict[str, str] = {
        "task.index": str(task.index),
        "task.originalId": task.original_id or task.id,
        "task.resubmitNumber": str(task.resubmit_number),
        "task.systemResubmitNumber": str(task.system_retries),
    }
    if task.resubmit_of:
        context["task.resubmitOf"] = task.resubmit_of
    if task.agent_id:
        context["agent.id"] = task.agent_id
    if task.moved_from:
        context["task.movedFromJob"] = task.moved_from
    if task.exit_code is not None:
        context[CTX_EXIT_CODE] = str(task.exit_code)
    if task.state == states.ACCEPTED and task.pending_reason:
        context[CTX_PENDING_REASON] = task.pending_reason
    for key, value in task.usage.items():
        context[CTX_USAGE_PREFIX + key] = _number(value)
    if job is not None:
        context[CTX_CAPACITY_GROUP] = job.descriptor.capacityGroup
    if tier is not None:
        context[CTX_TIER] = tier
    logs = f"/api/v3/tasks/{task.id}/logs"
    location: dict[str, Any] = {"ui": {"url": logs}}
    if task.state in states.TASK_ON_AGENT:
        location["liveStream"] = {"url": logs}
    return {
        "id": task.id,
        "jobId": task.job_id,
        "taskContext": context,
        "status": status_to_wire(task.machine.status),
        "statusHistory": [status_to_wire(s) for s in task.machine.history],
        "logLocation": location,
        "migrationDetails": {"needsMigration": bool(task.migrating_to)},
        "attributes": dict(task.attributes),
        "version": version_to_wire(task.version),
    }


# ------------------------------------------------------------------------------------------ projection
def parse_fields(raw: Iterable[str]) -> list[tuple[str, ...]]:
    """`fields=a.b,c` (repeatable, comma separated) as paths; empty means the whole entity."""
    paths = []
    for item in raw:
        for part in item.split(","):
            part = part.strip()
            if part:
                paths.append(tuple(p for p in part.split(".") if p))
    return [p for p in paths if p]


def project(
    doc: Mapping[str, Any], paths: Sequence[tuple[str, ...]], always: Iterable[str]
) -> dict[str, Any]:
    """Titus's `fields` projection: only the listed (possibly nested) fields, plus the ids that are always
    returned. A path through a list applies to each element; an unknown field selects nothing."""
    if not paths:
        return dict(doc)
    out: dict[str, Any] = {key: doc[key] for key in always if key in doc}
    for path in paths:
        _copy(doc, out, path)
    return out


def _copy(src: Any, dst: dict[str, Any], path: tuple[str, ...]) -> None:
    head, rest = path[0], path[1:]
    if not isinstance(src, Mapping) or head not in src:
        return
    value = src[head]
    if not rest or not isinstance(value, Mapping | list):
        dst[head] = value
        return
    if isinstance(value, list):
        previous = dst.get(head)
        items: list[Any] = previous if isinstance(previous, list) else [{} for _ in value]
        for element, target in zip(value, items, strict=True):
            if isinstance(target, dict):
                _copy(element, target, rest)
        dst[head] = items
        return
    sub = dst.get(head)
    if not isinstance(sub, dict):
        sub = dst[head] = {}
    _copy(value, sub, rest)


# ----------------------------------------------------------------------------------- scheduling result
def scheduling_result(task: Task) -> dict[str, Any]:
    """Titus's SchedulingResultEvent (titus_scheduler_api.proto) for a task: `success` once it was placed;
    while it waits, `failures`, one per reason with the number of agents it excluded (the engine counts
    each agent under the first rule that excluded it and keeps no agent ids, so `agentIdSamples` is empty).
    A cause about the task itself (a capacity group's headroom, a retry delay) is a failure of 0 agents."""
    if task.state != states.ACCEPTED:
        placed = next((s for s in [*task.machine.history, task.machine.status] if s.state == states.LAUNCHED),
                      None)
        message = placed.reason_message if placed is not None else f"the task is {task.state}"
        return {"success": {"message": message}}
    failures: list[dict[str, Any]] = []
    detail = task.pending_detail
    if detail is not None:
        if detail.task_reason:
            failures.append({"reason": detail.task_reason, "failureCount": 0, "agentIdSamples": []})
        ranked = sorted(detail.excluded.items(), key=lambda kv: (-kv[1], kv[0]))
        failures += [{"reason": render_reason(reason, count), "failureCount": count, "agentIdSamples": []}
                     for reason, count in ranked if count > 0]
    elif task.pending_reason:
        failures.append({"reason": task.pending_reason, "failureCount": 0, "agentIdSamples": []})
    else:
        failures.append({"reason": "not yet considered by the scheduler", "failureCount": 0,
                         "agentIdSamples": []})
    return {"failures": {"failures": failures}}
