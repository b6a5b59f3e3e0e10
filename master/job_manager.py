"""The JobManager: the jobs API and its queries, on top of the state and entry points of its parts.

`JobManager` is assembled from one class per responsibility, each in its own module:
master/manager_base.py (state, write plumbing, shared transitions), agent_channel.py, scheduling.py,
timer_pass.py, group_admin.py and backend_seam.py; the pure decisions they apply come from
master/reconcile.py, master/scheduler/ and master/core/, the derived state from master/state.py,
master/snapshot.py and master/timers.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from master.agent_auth import AgentAuth
from master.agent_channel import AgentChannel
from master.api.models import (
    CapacityUpdate,
    JobDescriptor,
)
from master.backend_seam import BackendSeam
from master.core import states
from master.core.agent import Agent
from master.core.entities import Job, Task
from master.core.states import Status, StatusMachine
from master.group_admin import GroupAdmin
from master.manager_base import (
    Conflict,
    Forbidden,
    ManagerBase,
    NotFound,
    NotLeader,
    Observer,
    Settings,
    StaleSession,
    _new_id,
    engine_resources,
    task_resources,
)
from master.scheduling import Scheduling
from master.store.base import Write
from master.timer_pass import TimerPass

__all__ = [
    "Agent",
    "Conflict",
    "Forbidden",
    "JobManager",
    "ManagerBase",
    "NotFound",
    "NotLeader",
    "Observer",
    "Settings",
    "StaleSession",
    "engine_resources",
    "task_resources",
]

log = logging.getLogger("titus.master")


class JobManager(AgentChannel, AgentAuth, Scheduling, TimerPass, GroupAdmin, BackendSeam, ManagerBase):
    """The leader's whole control surface; see the module docstring for where each part lives."""

    def submit(self, descriptor: JobDescriptor, idempotency_key: str | None = None) -> tuple[str, bool]:
        """Returns (job id, created). A retried submission with the same key returns the first job's id."""
        now = self.clock()
        with self.lock:
            if idempotency_key is not None:
                existing = self.idempotency.get(idempotency_key) or self.store.job_for_idempotency_key(
                    idempotency_key
                )
                if existing is not None:
                    return existing, False
            job = Job(
                _new_id(),
                descriptor,
                StatusMachine(states.JOB_TRANSITIONS, Status(states.JOB_ACCEPTED, "normal", "", now)),
                now,
                idempotency_key=idempotency_key,
            )
            self.jobs[job.id] = job
            self.tasks_by_job[job.id] = {}
            writes = [self._job_write(job, idempotency_key=idempotency_key)]
            if idempotency_key is not None:
                self.idempotency[idempotency_key] = job.id
            self._reconcile_job(job, now, writes)
            pending = self._queue(writes)
        self._wait(pending)
        self.schedule_wanted.set()
        return job.id, True

    def kill_job(self, job_id: str, by: str = "user") -> None:
        """`by` names the caller in the status's reasonMessage ("killed by alice@example.com")."""
        now = self.clock()
        with self.lock:
            job = self._active_job(job_id)
            if job.state != states.JOB_ACCEPTED:
                raise Conflict(f"job {job_id} is already {job.state}")
            job.machine.move(states.JOB_KILL_INITIATED, "killed", f"killed by {by}", now)
            writes = [self._job_write(job)]
            self._reconcile_job(job, now, writes)
            pending = self._queue(writes)
        self._wait(pending)

    def update_capacity(self, job_id: str, update: CapacityUpdate) -> None:
        now = self.clock()
        with self.lock:
            job = self._active_job(job_id)
            service = job.descriptor.service
            if service is None:
                raise Conflict("only service jobs have a capacity to change")
            if job.state != states.JOB_ACCEPTED:
                raise Conflict(f"job {job_id} is {job.state}")
            cap = service.capacity
            new = {
                "min": cap.min if update.min is None else update.min,
                "desired": cap.desired if update.desired is None else update.desired,
                "max": cap.max if update.max is None else update.max,
            }
            if not new["min"] <= new["desired"] <= new["max"]:
                raise ValueError("min <= desired <= max must hold after the update")
            procs = service.serviceJobProcesses
            if new["desired"] > cap.desired and procs.disableIncreaseDesired:
                raise Conflict("this job disables increasing desired")
            if new["desired"] < cap.desired and procs.disableDecreaseDesired:
                raise Conflict("this job disables decreasing desired")
            self._set_service(job, capacity=new)
            writes = [self._job_write(job)]
            self._reconcile_job(job, now, writes)
            pending = self._queue(writes)
        self._wait(pending)
        self.schedule_wanted.set()

    def set_enabled(self, job_id: str, enabled: bool) -> None:
        """Titus semantics: a disabled service job keeps its tasks; only automatic scaling stops."""
        with self.lock:
            job = self._active_job(job_id)
            if job.descriptor.service is None:
                raise Conflict("only service jobs can be enabled or disabled")
            if job.state != states.JOB_ACCEPTED:
                raise Conflict(f"job {job_id} is {job.state}")
            self._set_service(job, enabled=enabled)
            pending = self._queue([self._job_write(job)])
        self._wait(pending)

    def kill_task(self, task_id: str, shrink: bool, by: str = "user") -> None:
        now = self.clock()
        with self.lock:
            task = self.tasks.get(task_id)
            if task is None:
                if self._find_archived_task(task_id) is not None:
                    raise Conflict(f"task {task_id} is already Finished")
                raise NotFound(f"task {task_id} not found")
            if not task.active or task.kill_reason:
                raise Conflict(f"task {task_id} is already {task.state}")
            job = self.jobs[task.job_id]
            writes: list[Write] = []
            if shrink:
                service = job.descriptor.service
                if service is None:
                    raise Conflict("shrink applies to service jobs only")
                cap = service.capacity
                if cap.desired - 1 < cap.min:
                    raise Conflict(f"shrinking would take desired below min ({cap.min})")
                self._set_service(job, capacity={"min": cap.min, "desired": cap.desired - 1, "max": cap.max})
                writes.append(self._job_write(job))
                task.replace = False
            elif job.descriptor.batch is not None:
                task.replace = False  # a user's kill of a batch task is final, not a failure to retry
            self._kill(task, states.REASON_KILLED, f"killed by {by}", now, writes)
            self._reconcile_job(job, now, writes)
            pending = self._queue(writes)
        self._wait(pending)
        self.schedule_wanted.set()

    def _active_job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            if job_id in self.archived or self.store.get("job", job_id) is not None:
                raise Conflict(f"job {job_id} is already Finished")
            raise NotFound(f"job {job_id} not found")
        return job

    def get_job(self, job_id: str) -> dict[str, Any]:
        with self.lock:
            job = self.jobs.get(job_id) or (self.archived[job_id][0] if job_id in self.archived else None)
            if job is not None:
                return job.to_wire()
        stored = self.store.get("job", job_id)
        if stored is None:
            raise NotFound(f"job {job_id} not found")
        return Job.from_record(stored.record, stored.version).to_wire()

    def list_jobs(self, include_finished: bool) -> list[Job]:
        with self.lock:
            jobs = list(self.jobs.values())
            if include_finished:
                jobs += [j for j, _ in self.archived.values()]
        return sorted(jobs, key=lambda j: (j.created_ms, j.id))

    def get_task(self, task_id: str) -> dict[str, Any]:
        with self.lock:
            task = self.tasks.get(task_id) or self._find_archived_task(task_id)
            if task is not None:
                return self._task_wire(task)
        stored = self.store.get("task", task_id)
        if stored is None:
            raise NotFound(f"task {task_id} not found")
        task = Task.from_record(stored.record, stored.version)
        return self._task_wire(task)

    def _task_wire(self, task: Task) -> dict[str, Any]:
        job = self._job_of(task)
        wire = task.to_wire(job)
        if job is not None:
            wire["tier"] = self.tier_of_group(job.descriptor.capacityGroup)
        return wire

    def _job_of(self, task: Task) -> Job | None:
        job = self.jobs.get(task.job_id)
        if job is None and task.job_id in self.archived:
            job = self.archived[task.job_id][0]
        return job

    def _find_archived_task(self, task_id: str) -> Task | None:
        job_id = self._task_job.get(task_id)
        if job_id is None:
            return None
        if job_id in self.tasks_by_job:
            return self.tasks_by_job[job_id].get(task_id)
        if job_id in self.archived:
            return next((t for t in self.archived[job_id][1] if t.id == task_id), None)
        return None

    def list_tasks(self, job_ids: set[str] | None, task_states: set[str] | None) -> list[dict[str, Any]]:
        with self.lock:
            candidates: list[Task] = []
            if task_states is None or task_states & states.TASK_ACTIVE:
                pool: Iterable[Task] = (
                    self.tasks.values()
                    if job_ids is None
                    else (t for j in job_ids for t in self.tasks_by_job.get(j, {}).values())
                )
                candidates += [t for t in pool if t.active]
            if task_states is not None and states.FINISHED in task_states:
                for jid, tasks in self.tasks_by_job.items():
                    if job_ids is None or jid in job_ids:
                        candidates += [t for t in tasks.values() if not t.active]
                for jid, (_, tasks_list) in self.archived.items():
                    if job_ids is None or jid in job_ids:
                        candidates += tasks_list
            selected = [t for t in candidates if task_states is None or t.state in task_states]
            selected.sort(key=lambda t: (t.job_id, t.index, t.machine.status.timestamp_ms))
            return [self._task_wire(t) for t in selected]

    def task_logs(self, task_id: str, stream: str) -> str:
        with self.lock:
            task = self.tasks.get(task_id) or self._find_archived_task(task_id)
            if task is None:
                stored = self.store.get("task", task_id)
                if stored is None:
                    raise NotFound(f"task {task_id} not found")
                task = Task.from_record(stored.record, stored.version)
            if not task.active or task.agent_id is None or task.agent_id not in self.agents:
                return task.stdout_tail if stream == "stdout" else task.stderr_tail
            agent = self.agents[task.agent_id]
            agent.log_requests.add(task_id)
            agent.version += 1
            self._log_uploads.pop(task_id, None)
            self._wake_agent(agent.id)
            self._logs_changed.wait_for(
                lambda: task_id in self._log_uploads or self.closing, timeout=self.settings.log_wait_s
            )
            upload = self._log_uploads.pop(task_id, None)
            agent.log_requests.discard(task_id)
            if upload is None or not upload[2]:
                return task.stdout_tail if stream == "stdout" else task.stderr_tail
            return upload[0] if stream == "stdout" else upload[1]
