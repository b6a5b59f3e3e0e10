"""Reconciliation as pure functions: a job's spec and its tasks in, the actions that converge them out.

`reconcile(job, tasks)` says what to create, what to kill and whether the job is finished;
`replacement_delay(job, task)` says whether a task that just finished gets a successor and after how long;
`on_agent_silent(job, task, defaults)` what becomes of a task whose agent stopped reporting,
`disconnected_expired(job, task, now, defaults)` whether a Disconnected task has waited long enough to be
replaced, and `reconcile_agent(tasks, running, exited)` what a (re)registering agent's report of what it
runs means for the tasks the master placed there. None changes anything or reads a clock: the manager
applies the actions under its lock and commits them (master/job_manager.py), and the table tests in
tests/unit/test_reconcile.py pin every rule down.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from dataclasses import dataclass

from master.core import states
from master.core.entities import Job, Task
from master.core.fault_policy import Defaults, FaultPolicy, fault_policy
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
        # Scale down the tasks that cost least to lose: unplaced first, then Disconnected, then the newest.
        order = sorted(
            (t for t in running if not t.kill_reason),
            key=lambda t: (t.state != states.ACCEPTED, t.state != states.DISCONNECTED,
                           -t.machine.status.timestamp_ms),
        )
        return [
            KillTask(t.id, states.REASON_SCALED_DOWN, "job scaled down", replace=False)
            for t in order[: len(running) - desired]
        ]
    return []


def platform_caused(task: Task) -> bool:
    """The task ended for the platform's reasons, not its own or its user's: its successor does not use
    the retry budget (it counts in `system_retries`)."""
    return task.machine.status.reason_code in states.PLATFORM_REASONS


def replacement_delay(job: Job, task: Task) -> int | None:
    """For a task that just finished: milliseconds until its successor may be placed, or None for none."""
    if job.state != states.JOB_ACCEPTED or not task.replace:
        return None
    reason = task.machine.status.reason_code
    if reason in states.PLATFORM_REASONS:
        return 0  # not the task's fault: back at once, whatever the retry policy and budget say
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


def job_fault_policy(job: Job, defaults: Defaults) -> FaultPolicy:
    return fault_policy(job.descriptor.container.attributes, job.descriptor.batch is not None, defaults)


@dataclass(frozen=True, slots=True)
class Move:
    """Move a task to `state` (Finished: archive, and replace it per replacement_delay)."""

    task_id: str
    state: str
    reason: str
    message: str


def on_agent_silent(job: Job, task: Task, defaults: Defaults, why: str) -> Move | None:
    """What becomes of a task placed on an agent the master stopped hearing from (DESIGN.md #9).

    The task most likely still runs: it becomes Disconnected and keeps its slot. Two exceptions end it at
    once as lost: a job that opted into self-fencing (its agent's watchdog killed it before the master's
    timeout, agent/fence.py), and a task already being killed (it was going to end; the agent, should it
    return, is told to kill it at once as a stale task).
    """
    if task.state == states.DISCONNECTED:
        return None
    if task.state == states.KILL_INITIATED:
        return Move(task.id, states.FINISHED, task.kill_reason or states.REASON_LOST, why)
    if job_fault_policy(job, defaults).self_fence:
        return Move(task.id, states.FINISHED, states.REASON_LOST, f"{why}; the job self-fences")
    return Move(task.id, states.DISCONNECTED, states.REASON_DISCONNECTED, why)


def disconnected_expired(job: Job, task: Task, now: int, defaults: Defaults) -> Move | None:
    """A Disconnected task whose job's timeout ran out: lost (and replaced by the caller)."""
    if task.state != states.DISCONNECTED:
        return None
    timeout = job_fault_policy(job, defaults).disconnected_timeout_ms
    since = task.machine.status.timestamp_ms
    if timeout is None or now - since < timeout:
        return None
    return Move(task.id, states.FINISHED, states.REASON_LOST,
                f"its agent {task.agent_id} stayed disconnected for {(now - since) // 1000} s "
                f"(timeout {timeout // 1000} s)")


@dataclass(frozen=True, slots=True)
class AgentReconciliation:
    moves: list[Move]
    stale: frozenset[str]  # ids the agent runs that are not its to run any more: kill at once


def reconcile_agent(tasks: Sequence[Task], running: Set[str], exited: Set[str]) -> AgentReconciliation:
    """An agent (re)registered saying what it runs (`running`) and what ended while it was away and is
    yet to be reported (`exited`); `tasks` are those the master placed on it. Known tasks go back to their
    real state; tasks it ran but the master replaced meanwhile are stale (the duplicates are the master's
    to resolve, DESIGN.md #9)."""
    moves: list[Move] = []
    for task in tasks:
        known = task.id in running or task.id in exited
        state = task.state
        if state == states.DISCONNECTED:
            before = task.machine.history[-1].state if task.machine.history else states.STARTED
            if task.id in running:
                moves.append(Move(task.id, states.STARTED, states.REASON_NORMAL,
                                  "the agent reconnected and runs it"))
            elif task.id in exited:
                # Its end, with the real exit status, is in the agent's next report.
                moves.append(Move(task.id, states.STARTED, states.REASON_NORMAL,
                                  "the agent reconnected; the task ended while it was away"))
            elif before == states.LAUNCHED:
                moves.append(Move(task.id, states.LAUNCHED, states.REASON_NORMAL,
                                  "the agent reconnected and has yet to start it"))
            else:
                moves.append(Move(task.id, states.FINISHED, states.REASON_LOST,
                                  "the agent reconnected without it"))
        elif state in (states.LAUNCHED, states.START_INITIATED) and task.id in running:
            # It runs; the report saying so was lost with the previous master or agent.
            moves.append(Move(task.id, states.STARTED, states.REASON_NORMAL,
                              "running on the agent at registration"))
        elif state in (states.START_INITIATED, states.STARTED) and not known:
            moves.append(Move(task.id, states.FINISHED, states.REASON_LOST, "agent restarted without it"))
        elif state == states.KILL_INITIATED and not known:
            moves.append(Move(task.id, states.FINISHED, task.kill_reason or states.REASON_KILLED,
                              "agent restarted without it"))
    return AgentReconciliation(moves, frozenset(set(running) - {t.id for t in tasks}))
