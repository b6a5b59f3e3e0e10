"""Reconciliation as a pure function: a job's spec and its tasks in, the actions that converge them out.

`reconcile(job, tasks)` says what to create, what to kill and whether the job is finished;
`replacement_delay(job, task)` says whether a task that just finished gets a successor and after how long.
Neither changes anything or reads a clock: the manager applies the actions under its lock and commits them
(master/job_manager.py), and the table tests in tests/unit/test_reconcile.py pin every rule down.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from master.core import states
from master.core.entities import Job, Task
from master.core.retry import retries_allowed, retry_delay_ms


@dataclass(frozen=True, slots=True)
class CreateTask:
    index: int


@dataclass(frozen=True, slots=True)
class KillTask:
    task_id: str
    reason: str
    message: str
    replace: bool = True  # False: nothing may take its place (the job shrank)


@dataclass(frozen=True, slots=True)
class FinishJob:
    reason: str
    message: str


Action = CreateTask | KillTask | FinishJob


def reconcile(job: Job, tasks: Sequence[Task]) -> list[Action]:
    """The actions that bring `job`'s tasks (all it holds in memory, finished ones included) to its spec."""
    active = [t for t in tasks if t.active]
    if job.state == states.JOB_KILL_INITIATED:
        actions: list[Action] = [
            KillTask(t.id, states.REASON_KILLED, "job killed") for t in active if not t.kill_reason
        ]
        # Unplaced tasks end the moment they are killed; placed ones wait for their agent to confirm.
        if not any(t.state != states.ACCEPTED for t in active):
            actions.append(FinishJob("killed", "all tasks finished"))
        return actions
    if job.state != states.JOB_ACCEPTED:
        return []
    if job.descriptor.batch is not None:
        if not tasks:
            return [CreateTask(i) for i in range(job.descriptor.batch.size)]
        if not active:
            failed = [
                t
                for t in tasks
                if t.machine.status.reason_code != states.REASON_NORMAL
                and not any(o.resubmit_of == t.id for o in tasks)
            ]
            reason = "failed" if failed else "normal"
            return [FinishJob(reason, f"{len(failed)} task(s) did not succeed")]
        return []
    service = job.descriptor.service
    assert service is not None
    # A task being killed that will be replaced still holds its slot until it ends; one being scaled away
    # does not, and neither does one being drained (its replacement holds the slot).
    running = [t for t in active if (not t.kill_reason or t.replace) and not t.migrating_to]
    desired = service.capacity.desired
    if len(running) < desired:
        next_index = max((t.index for t in tasks), default=-1) + 1
        return [CreateTask(next_index + i) for i in range(desired - len(running))]
    if len(running) > desired:
        # Scale down the tasks that cost least to lose: unplaced first, then the newest.
        order = sorted(
            (t for t in running if not t.kill_reason),
            key=lambda t: (t.state != states.ACCEPTED, -t.machine.status.timestamp_ms),
        )
        return [
            KillTask(t.id, states.REASON_SCALED_DOWN, "job scaled down", replace=False)
            for t in order[: len(running) - desired]
        ]
    return []


def replacement_delay(job: Job, task: Task) -> int | None:
    """For a task that just finished: milliseconds until its successor may be placed, or None for none."""
    if job.state != states.JOB_ACCEPTED or not task.replace:
        return None
    reason = task.machine.status.reason_code
    policy = job.descriptor.retry_policy
    if job.descriptor.service is not None:
        if reason == states.REASON_SCALED_DOWN:
            return None
        # A killed service task is replaced at once; a failing one backs off (capped at 2^16 steps).
        return 0 if reason == states.REASON_KILLED else retry_delay_ms(policy, min(task.retries_done, 16))
    batch = job.descriptor.batch
    assert batch is not None
    retryable = reason in states.RETRYABLE_REASONS or (
        reason == states.REASON_RUNTIME_LIMIT and batch.retryOnRuntimeLimit
    )
    if retryable and task.retries_done < retries_allowed(policy):
        return retry_delay_ms(policy, task.retries_done)
    return None
