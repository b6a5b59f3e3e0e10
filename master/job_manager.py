"""The JobManager: the jobs API and its queries, on top of the state and entry points of its parts.

`JobManager` is assembled from one class per responsibility, each in its own module:
master/manager_base.py (state, write plumbing, shared transitions), agent_channel.py, scheduling.py,
timer_pass.py, group_admin.py, job_updates.py and backend_seam.py; the pure decisions they apply come from
master/reconcile.py, master/scheduler/ and master/core/, the derived state from master/state.py,
master/snapshot.py and master/timers.py.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterable
from typing import Any, Protocol

from master.agent_auth import AgentAuth
from master.agent_channel import AgentChannel
from master.api import mapper
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
from master.job_updates import JobUpdates, SchedulingResults
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
    _Queued,
    engine_resources,
    task_resources,
)
from master.resource_backend import NativeBackend
from master.scheduling import Scheduling
from master.store.base import StoreError, Write
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


class JobManager(
    AgentChannel, AgentAuth, Scheduling, TimerPass, GroupAdmin, BackendSeam, JobUpdates, SchedulingResults,
    ManagerBase,
):
    """The leader's whole control surface; see the module docstring for where each part lives."""

    def submit(self, descriptor: JobDescriptor, idempotency_key: str | None = None) -> tuple[str, bool]:
        """Returns (job id, created). A retried submission with the same key returns the first job's id,
        once that job is durable (a retry racing the first write waits for it, and fails as it does); the
        same key with another body is a Conflict naming the key."""
        now = self.clock()
        key = idempotency_key
        existing: str | None = None
        first: _Queued | None = None
        with self.lock:
            if key is not None:
                existing = self.idempotency.get(key) or self.store.job_for_idempotency_key(key)
                if existing is not None:
                    self._same_submission(key, existing, descriptor)
                    first = self._idempotent_in_flight.get(key)
            if existing is None:
                job = Job(
                    _new_id(),
                    descriptor,
                    StatusMachine(states.JOB_TRANSITIONS, Status(states.JOB_ACCEPTED, "normal", "", now)),
                    now,
                    idempotency_key=key,
                )
                self.jobs[job.id] = job
                self.tasks_by_job[job.id] = {}
                writes = [self._job_write(job, idempotency_key=key)]
                if key is not None:
                    self.idempotency[key] = job.id
                self._reconcile_job(job, now, writes)
                pending = self._queue(writes)
                if key is not None:
                    self._idempotent_in_flight[key] = pending
        if existing is not None:
            if first is not None:
                try:
                    first.pending.wait()  # the first submission's write: acknowledge only what is durable
                except StoreError as exc:
                    why = f"the first submission with Idempotency-Key {key!r} failed: {exc}"
                    raise NotLeader(why) from exc
            return existing, False
        try:
            self._wait(pending)
        finally:
            if key is not None:
                with self.lock:
                    self._idempotent_in_flight.pop(key, None)
        self.schedule_wanted.set()
        return job.id, True

    def _same_submission(self, key: str, job_id: str, descriptor: JobDescriptor) -> None:
        """A reused Idempotency-Key must come with the body it was first used with."""
        job = self._job_in_memory(job_id)
        first: dict[str, Any] | None
        if job is not None:
            first = job.descriptor_json()
        else:
            stored = self.store.get("job", job_id)
            first = stored.record["jobDescriptor"] if stored is not None else None
        if first is not None and first != descriptor.to_json():
            raise Conflict(
                f"Idempotency-Key {key!r} was already used for job {job_id} with a different body; "
                f"use a new key for a different job"
            )

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

    def kill_task(
        self, task_id: str, shrink: bool, prevent_min_size_update: bool = False, by: str = "user"
    ) -> None:
        """Titus's KillTask. With `shrink`, desired drops by one; where that would go below min, min drops
        too, unless `prevent_min_size_update` asks for a refusal instead. `by` names the caller in the
        status's reasonMessage."""
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
                if service.serviceJobProcesses.disableDecreaseDesired:
                    raise Conflict("this job disables decreasing desired (serviceJobProcesses)")
                if cap.desired == 0:
                    raise Conflict("the job's desired is already 0")
                new_min = cap.min
                if cap.desired - 1 < cap.min:
                    if prevent_min_size_update:
                        raise Conflict(f"shrinking would take desired below min ({cap.min})")
                    new_min = cap.min - 1
                self._set_service(job, capacity={"min": new_min, "desired": cap.desired - 1, "max": cap.max})
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

    def _job_in_memory(self, job_id: str) -> Job | None:
        """An active or recently finished job (caller holds the lock)."""
        return self.jobs.get(job_id) or (self.archived[job_id][0] if job_id in self.archived else None)

    def _task_in_memory(self, task_id: str) -> Task | None:
        """An active or recently finished task (caller holds the lock)."""
        return self.tasks.get(task_id) or self._find_archived_task(task_id)

    def get_job(self, job_id: str) -> dict[str, Any]:
        with self.lock:
            job = self._job_in_memory(job_id)
            if job is not None:
                return mapper.job_to_wire(job)
        stored = self.store.get("job", job_id)
        if stored is None:
            raise NotFound(f"job {job_id} not found")
        return mapper.job_to_wire(Job.from_record(stored.record, stored.version))

    def list_jobs(self, include_finished: bool) -> list[Job]:
        with self.lock:
            jobs = list(self.jobs.values())
            if include_finished:
                jobs += [j for j, _ in self.archived.values()]
        return sorted(jobs, key=lambda j: (j.created_ms, j.id))

    def get_task(self, task_id: str) -> dict[str, Any]:
        with self.lock:
            task = self._task_in_memory(task_id)
            if task is not None:
                return self._task_wire(task)
        stored = self.store.get("task", task_id)
        if stored is None:
            raise NotFound(f"task {task_id} not found")
        task = Task.from_record(stored.record, stored.version)
        return self._task_wire(task)

    def wires(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        """The current wire form of several jobs and tasks (("job" | "task", id) keys) under one taking of
        the lock: the event stream reads a batch of changes so, instead of queueing for the lock once per
        change behind the requests that make them. Those no longer in memory come from the store; unknown
        ones are left out."""
        found: dict[tuple[str, str], dict[str, Any]] = {}
        missing: list[tuple[str, str]] = []
        with self.lock:
            for kind, entity_id in keys:
                if kind == "job":
                    job = self._job_in_memory(entity_id)
                    if job is not None:
                        found[(kind, entity_id)] = mapper.job_to_wire(job)
                        continue
                else:
                    task = self._task_in_memory(entity_id)
                    if task is not None:
                        found[(kind, entity_id)] = self._task_wire(task)
                        continue
                missing.append((kind, entity_id))
        for kind, entity_id in missing:
            read = self.get_job if kind == "job" else self.get_task
            with contextlib.suppress(NotFound):
                found[(kind, entity_id)] = read(entity_id)
        return found

    def task_usage_history(self, task_id: str) -> list[tuple[int, float, float, int]]:
        """The task's usage samples, oldest first (Task.usage_history: in memory, the last 30 minutes)."""
        with self.lock:
            task = self._task_in_memory(task_id)
            return list(task.usage_history) if task is not None else []

    def _task_wire(self, task: Task) -> dict[str, Any]:
        job = self._job_of(task)
        tier = self.tier_of_group(job.descriptor.capacityGroup) if job is not None else None
        return mapper.task_to_wire(task, job, tier)

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

    #: Where finished tasks' logs are read once no agent holds them (shared/log_archive.py); None: nowhere.
    log_archive: LogArchiveReader | None = None

    def task_log_range(
        self, task_id: str, stream: str, offset: int, limit: int, wait_s: float, ask_agent: bool = True
    ) -> dict[str, Any]:
        """A byte range of a task's stdout or stderr: `offset` from the start (negative: from the end), at
        most `limit` bytes. Its agent reads it from the task's files, through the desired-set channel (the
        master never connects to agents), for running tasks and for finished ones whose agent still holds
        their files; with wait_s > 0 the agent answers as soon as the log grows past `offset`, or the task
        ends (what `titus task logs --follow` waits on). When no agent can answer (gone, lost, an agent that
        does not know logReads), a finished task's logs come from the archive (S3) if there is one, else from
        the tail stored with the task; `source` says which. ask_agent=False skips the agent: a reader that
        just saw it not answer (source "tail") need not wait log_wait_s for it again.

        Returns {"data": bytes, "offset": where data starts, "size": the stream's length so far, "start":
        the first offset still kept (rotation), "final": no more will come, "source"}."""
        with self.lock:
            task = self._task_in_memory(task_id)
            if task is None:
                stored = self.store.get("task", task_id)
                if stored is None:
                    raise NotFound(f"task {task_id} not found")
                task = Task.from_record(stored.record, stored.version)
            agent = self.agents.get(task.agent_id) if task.agent_id else None
            native = isinstance(self.backend, NativeBackend)  # Mesos executors do not read desired sets
            if ask_agent and agent is not None and not agent.lost and agent.registered and native:
                following = sum(1 for r in self._log_reads.values() if r["waitMs"] > 0)
                if wait_s > 0 and following >= MAX_FOLLOW_WAITS:
                    wait_s = 0  # followers must not take the HTTP threads the agents' long polls need
                request_id = uuid.uuid4().hex
                self._log_reads[request_id] = {"id": request_id, "agentId": agent.id, "taskId": task_id,
                                               "stream": stream, "offset": offset, "limit": limit,
                                               "waitMs": int(wait_s * 1000)}
                agent.version += 1
                self._wake_agent(agent.id)
                self._logs_changed.wait_for(lambda: request_id in self._log_chunks or self.closing,
                                            timeout=wait_s + self.settings.log_wait_s)
                self._log_reads.pop(request_id, None)
                chunk = self._log_chunks.pop(request_id, None)
                if chunk is not None and chunk.get("found", True):
                    return chunk
        # Outside the lock: the archive is a network call.
        if self.log_archive is not None and not task.active:
            try:
                archived = self.log_archive.read(task_id, stream, offset, limit)
            except Exception as exc:  # an unreachable archive must not fail the read: the tail is still here
                log.warning("reading the logs of %s from the archive failed: %s", task_id, exc)
                archived = None
            if archived is not None:
                return archived
        return _tail_range(task, stream, offset, limit)


class LogArchiveReader(Protocol):
    """Finished tasks' logs kept outside the agents (shared/log_archive.py: S3)."""

    def read(self, task_id: str, stream: str, offset: int, limit: int) -> dict[str, Any] | None: ...


#: Follow reads (waitMs > 0) held at once; each holds an HTTP worker thread (MasterConfig.threads, 64).
MAX_FOLLOW_WAITS = 16


def _tail_range(task: Task, stream: str, offset: int, limit: int) -> dict[str, Any]:
    """The range of the tail the agent reported with the task's end (all we have without its agent)."""
    data = (task.stdout_tail if stream == "stdout" else task.stderr_tail).encode()
    begin = max(0, len(data) + offset) if offset < 0 else min(offset, len(data))
    piece = data[begin:begin + limit]
    return {"data": piece, "offset": begin, "size": len(data), "start": 0, "final": not task.active,
            "source": "tail"}
