"""The leader's state: jobs, tasks and agents in memory, every change written through the JobStore.

One lock guards the in-memory state. A change is made under the lock, its writes are queued to the store
under the same lock (so the store sees changes in the order memory made them), and the caller waits for
durability outside the lock (so concurrent requests share one commit). Nothing is acknowledged to a
client or handed to an agent before it is durable.
"""

from __future__ import annotations

import logging
import secrets
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from master.api.models import (
    AgentRegistration,
    AgentStatusReport,
    ApplicationSla,
    CapacityUpdate,
    JobDescriptor,
    TaskUpdate,
)
from master.core import states
from master.core.entities import TAIL_LIMIT, Job, Task
from master.core.retry import retries_allowed, retry_delay_ms
from master.core.states import IllegalTransition, Status, StatusMachine
from master.groups import DEFAULT_GROUP, CapacityGroup, InstanceGroup, default_group
from master.resource_backend import NativeBackend, ResourceBackend
from master.scheduler import model as sched
from master.scheduler.model import Resources
from master.scheduler.placement import schedule as place
from master.store.base import JobStore, PendingWrite, StaleEpoch, StoreError, Write

log = logging.getLogger("titus.master")

Clock = Callable[[], int]  # milliseconds since the epoch


class NotFound(Exception):
    pass


class Conflict(Exception):
    """The request is well-formed but illegal in the current state (HTTP 409)."""


class NotLeader(Exception):
    """This master may not write (fenced, or a store failure made memory untrustworthy)."""


class StaleSession(Exception):
    """An agent spoke with a session the master no longer recognises: it must register again."""


@dataclass
class Agent:
    id: str
    resources: Resources
    attributes: dict[str, str]
    session_epoch: int
    registered_ms: int
    last_heartbeat_ms: int
    lost: bool = False
    version: int = 1  # bumped whenever the agent's desired set changes; agents long-poll on it
    host: dict[str, float] = field(default_factory=dict)
    log_requests: set[str] = field(default_factory=set)
    lifecycle: str = "Active"  # an operator's or the capacity controller's phase-out of this one agent
    lifecycle_detail: str = ""
    record_version: int = 0  # version of the stored lifecycle record
    idle_since_ms: int | None = None  # when its last task left; None while it runs something
    # False for an agent known only from its tasks after a master restart: it must register within the
    # heartbeat timeout, or it is declared lost and its tasks are replaced.
    registered: bool = True
    # Tasks the agent runs that the master no longer wants there (it was declared lost and they were
    # replaced). The agent gets no new work until its reports show them gone: fencing by task id.
    stale_tasks: set[str] = field(default_factory=set)
    unavailable_reason: str = ""  # the agent's own word on why it takes no new work (e.g. memory short)

    @property
    def schedulable(self) -> bool:
        return self.registered and not self.lost and not self.stale_tasks and not self.unavailable_reason

    def to_wire(self, used: Resources, task_ids: list[str]) -> dict[str, Any]:
        def res(r: Resources) -> dict[str, Any]:
            return {"cpu": r.cpu, "memoryMB": r.memory_mb, "diskMB": r.disk_mb, "networkMbps": r.network_mbps}

        state = "Lost" if self.lost else "Registered" if self.registered else "AwaitingRegistration"
        return {
            "id": self.id,
            "state": state,
            "acceptingWork": self.schedulable,
            "unavailableReason": self.unavailable_reason,
            "staleTaskIds": sorted(self.stale_tasks),
            "lifecycle": "Active",
            "tier": self.attributes.get("tier", "flex"),
            "instanceGroupId": self.attributes.get("instanceGroup", "default"),
            "resources": res(self.resources),
            "used": res(used),
            "attributes": dict(self.attributes),
            "taskIds": task_ids,
            "lastHeartbeat": self.last_heartbeat_ms,
            "registeredAt": self.registered_ms,
            "host": dict(self.host),
        }


@dataclass
class Settings:
    heartbeat_timeout_ms: int = 15_000
    launch_timeout_ms: int = 60_000
    kill_grace_ms: int = 10_000
    archive_memory_jobs: int = 10_000
    finished_tasks_per_job: int = 200
    log_wait_s: float = 5.0


def engine_resources(job: Job) -> sched.Resources:
    r = job.descriptor.container.resources
    return sched.Resources(float(r.cpu), r.memoryMB, r.diskMB, r.networkMbps, r.gpu)


def task_resources(job: Job) -> Resources:
    r = job.descriptor.container.resources
    return Resources(float(r.cpu), r.memoryMB, r.diskMB, r.networkMbps)


class JobManager:
    def __init__(self, store: JobStore, clock: Clock, settings: Settings | None = None) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings or Settings()
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)  # agents' long polls and log waits
        self.jobs: dict[str, Job] = {}
        self.tasks: dict[str, Task] = {}
        self.tasks_by_job: dict[str, dict[str, Task]] = {}
        self.agents: dict[str, Agent] = {}
        self.archived: OrderedDict[str, tuple[Job, list[Task]]] = OrderedDict()
        self.idempotency: dict[str, str] = {}
        self.epoch = 0
        self.leading_since_ms = 0
        self._in_flight = 0  # writes queued to the store and not yet durable (or refused)
        self._settled = threading.Condition(threading.Lock())
        self.fenced = False
        self.schedule_wanted = threading.Event()
        self.on_fenced: Callable[[], None] = lambda: None
        self._log_uploads: dict[str, tuple[str, str, bool]] = {}
        self.closing = False
        # Event-driven scheduling state: a pass looks at new tasks only, unless capacity changed (an agent
        # came, went or freed resources), when every pending task gets another chance.
        self._new_pending: set[str] = set()
        self._delayed: dict[str, int] = {}
        self._full_pass = True
        self.capacity_groups: dict[str, CapacityGroup] = {DEFAULT_GROUP: default_group()}
        self.instance_groups: dict[str, InstanceGroup] = {}
        self._agent_lifecycles: dict[str, tuple[str, str, int]] = {}  # stored phase-outs, applied on register
        # Where resources come from and how desired sets reach the hosts (master/resource_backend.py).
        self.backend: ResourceBackend = NativeBackend()

    def close(self) -> None:
        """Release long polls at once so the HTTP server can stop without waiting them out."""
        with self.lock:
            self.closing = True
            self.changed.notify_all()

    # ================================================================================ start-up
    def start(self) -> None:
        """Take leadership: fence older writers, then rebuild memory from the store."""
        self.store.migrate()
        self.epoch = self.store.acquire_epoch()
        self.leading_since_ms = self.clock()
        with self.lock:
            for stored in self.store.load_active("job"):
                job = Job.from_record(stored.record, stored.version)
                self.jobs[job.id] = job
                self.tasks_by_job[job.id] = {}
                if job.idempotency_key:
                    self.idempotency[job.idempotency_key] = job.id
            for stored in self.store.load_active("capacity_group"):
                sla = ApplicationSla.model_validate(stored.record)
                self.capacity_groups[sla.appName] = CapacityGroup(sla, stored.version)
            for stored in self.store.load_active("instance_group"):
                group = InstanceGroup.from_record(stored.record, stored.version)
                self.instance_groups[group.id] = group
            for stored in self.store.load_active("agent"):
                r = stored.record
                self._agent_lifecycles[r["id"]] = (r["lifecycle"], r.get("detail", ""), stored.version)
            for stored in self.store.load_active("task"):
                task = Task.from_record(stored.record, stored.version)
                if task.job_id in self.jobs:
                    self.tasks[task.id] = task
                    self.tasks_by_job[task.job_id][task.id] = task
            # Agents are not persisted, only the tasks placed on them. An agent that holds tasks gets the
            # heartbeat timeout, counted from now, to register again; otherwise it is lost as usual.
            now = self.clock()
            for task in self.tasks.values():
                if (
                    task.agent_id is not None
                    and task.state in states.TASK_ON_AGENT
                    and task.agent_id not in self.agents
                ):
                    self.agents[task.agent_id] = Agent(
                        task.agent_id, Resources(), {}, 0, now, now, registered=False
                    )
        log.info("leader epoch %d: loaded %d jobs, %d tasks", self.epoch, len(self.jobs), len(self.tasks))
        self.schedule_wanted.set()

    # ============================================================================ write plumbing
    def _queue(self, writes: list[Write]) -> PendingWrite:
        if self.fenced:
            raise NotLeader("this master is fenced and may not write")
        pending = self.store.begin_apply(self.epoch, writes)
        with self._settled:
            self._in_flight += 1
        return pending

    def wait_writes_settled(self, timeout_s: float) -> bool:
        """After fencing: wait until every queued write is durable or refused (graceful handoff)."""
        with self._settled:
            return self._settled.wait_for(lambda: self._in_flight == 0, timeout=timeout_s)

    def _wait(self, pending: PendingWrite) -> None:
        try:
            pending.wait()
        except StaleEpoch as exc:
            self._fence(f"a newer leader exists: {exc}")
            raise NotLeader(str(exc)) from exc
        except StoreError as exc:
            # Memory has changes the store refused: it can no longer be trusted to be the truth.
            self._fence(f"store write failed: {exc}")
            raise NotLeader(str(exc)) from exc
        finally:
            with self._settled:
                self._in_flight -= 1
                if self._in_flight == 0:
                    self._settled.notify_all()

    def fence(self, why: str) -> None:
        """Stop writing at once (leadership lost or in doubt); on_fenced then takes the master down."""
        self._fence(why)

    def _fence(self, why: str) -> None:
        if not self.fenced:
            log.error("stopping leadership: %s", why)
            self.fenced = True
            self.on_fenced()

    @staticmethod
    def _job_write(job: Job, archived: bool = False, idempotency_key: str | None = None) -> Write:
        w = Write("job", job.id, job.version, job.to_record(), archived, idempotency_key)
        job.version += 1
        return w

    @staticmethod
    def _task_write(task: Task, archived: bool = False) -> Write:
        w = Write("task", task.id, task.version, task.to_record(), archived)
        task.version += 1
        return w

    # ================================================================================= jobs API
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
                str(uuid.uuid4()),
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

    def kill_job(self, job_id: str) -> None:
        now = self.clock()
        with self.lock:
            job = self._active_job(job_id)
            if job.state != states.JOB_ACCEPTED:
                raise Conflict(f"job {job_id} is already {job.state}")
            job.machine.move(states.JOB_KILL_INITIATED, "killed", "killed by user", now)
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

    @staticmethod
    def _set_service(job: Job, **changes: Any) -> None:
        data = job.descriptor.to_json()
        data["service"].update(changes)
        job.descriptor = JobDescriptor.model_validate(data)

    def kill_task(self, task_id: str, shrink: bool) -> None:
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
            self._kill(task, states.REASON_KILLED, "killed by user", now, writes)
            self._reconcile_job(job, now, writes)
            pending = self._queue(writes)
        self._wait(pending)
        self.schedule_wanted.set()

    # ============================================================================== job control
    def _new_task(
        self,
        job: Job,
        index: int,
        now: int,
        writes: list[Write],
        replaces: Task | None = None,
        delay_ms: int = 0,
    ) -> Task:
        task = Task(
            str(uuid.uuid4()),
            job.id,
            index,
            StatusMachine(states.TASK_TRANSITIONS, Status(states.ACCEPTED, "normal", "", now)),
        )
        if replaces is not None:
            task.retries_done = replaces.retries_done + 1
            task.original_id = replaces.original_id or replaces.id
            task.resubmit_of = replaces.id
        task.not_before_ms = now + delay_ms
        if delay_ms:
            task.pending_reason = f"waiting {delay_ms} ms before retry {task.retries_done}"
        self.tasks[task.id] = task
        self.tasks_by_job[job.id][task.id] = task
        writes.append(self._task_write(task))
        if delay_ms:
            self._delayed[task.id] = task.not_before_ms
        else:
            self._new_pending.add(task.id)
        return task

    def _kill(self, task: Task, reason: str, message: str, now: int, writes: list[Write]) -> None:
        """Finish an unplaced task at once; ask the agent to stop a placed one."""
        task.kill_reason = reason
        if task.state == states.ACCEPTED:
            task.machine.move(states.FINISHED, reason, message, now)
            self._finished(task, now, writes)
        elif task.state in states.TASK_ON_AGENT and task.state != states.KILL_INITIATED:
            task.machine.move(states.KILL_INITIATED, reason, message, now)
            writes.append(self._task_write(task))
            self._bump_agent(task.agent_id)

    def _finished(self, task: Task, now: int, writes: list[Write]) -> None:
        """A task reached Finished: archive it, retry or replace it per the job's policy."""
        job = self.jobs[task.job_id]
        writes.append(self._task_write(task, archived=True))
        del self.tasks[task.id]
        if task.agent_id is not None:
            self._full_pass = True  # it freed resources
            if task.agent_id in self.agents:
                self.agents[task.agent_id].idle_since_ms = now

        reason = task.machine.status.reason_code
        for other in self.tasks_by_job[job.id].values():
            if other.migrating_to == task.id and other.active:
                other.migrating_to = ""  # the move failed: the old task keeps its slot
                task.replace = False
                writes.append(self._task_write(other))
        if task.migrating_to:
            task.migrating_to = ""
        if job.state == states.JOB_ACCEPTED and task.replace:
            policy = job.descriptor.retry_policy
            if job.descriptor.service is not None:
                if reason != states.REASON_SCALED_DOWN:
                    delay = (
                        0
                        if reason == states.REASON_KILLED
                        else retry_delay_ms(policy, min(task.retries_done, 16))
                    )
                    self._new_task(job, task.index, now, writes, replaces=task, delay_ms=delay)
            else:
                batch = job.descriptor.batch
                assert batch is not None
                retryable = reason in states.RETRYABLE_REASONS or (
                    reason == states.REASON_RUNTIME_LIMIT and batch.retryOnRuntimeLimit
                )
                if retryable and task.retries_done < retries_allowed(policy):
                    delay = retry_delay_ms(policy, task.retries_done)
                    self._new_task(job, task.index, now, writes, replaces=task, delay_ms=delay)
        self._trim_finished(job)

    def _trim_finished(self, job: Job) -> None:
        tasks = self.tasks_by_job[job.id]
        finished = [t for t in tasks.values() if not t.active]
        for old in finished[: max(0, len(finished) - self.settings.finished_tasks_per_job)]:
            del tasks[old.id]

    def _reconcile_job(self, job: Job, now: int, writes: list[Write]) -> None:
        """Bring a job's tasks in line with its spec: create, scale down, or finish the job."""
        tasks = self.tasks_by_job[job.id]
        active = [t for t in tasks.values() if t.active]
        if job.state == states.JOB_KILL_INITIATED:
            for t in active:
                if not t.kill_reason:
                    self._kill(t, states.REASON_KILLED, "job killed", now, writes)
            if not any(t.active for t in tasks.values()):
                job.machine.move(states.JOB_FINISHED, "killed", "all tasks finished", now)
                self._archive_job(job, writes)
            return
        if job.state != states.JOB_ACCEPTED:
            return
        if job.descriptor.batch is not None:
            if not tasks:
                for index in range(job.descriptor.batch.size):
                    self._new_task(job, index, now, writes)
            elif not active:
                failed = [
                    t
                    for t in tasks.values()
                    if t.machine.status.reason_code != states.REASON_NORMAL
                    and not any(o.resubmit_of == t.id for o in tasks.values())
                ]
                reason = "failed" if failed else "normal"
                job.machine.move(states.JOB_FINISHED, reason, f"{len(failed)} task(s) did not succeed", now)
                self._archive_job(job, writes)
            return
        service = job.descriptor.service
        assert service is not None
        # A task being killed that will be replaced still holds its slot until it ends; one being
        # scaled away does not.
        running = [t for t in active if (not t.kill_reason or t.replace) and not t.migrating_to]
        desired = service.capacity.desired
        if len(running) < desired:
            next_index = max((t.index for t in tasks.values()), default=-1) + 1
            for i in range(desired - len(running)):
                self._new_task(job, next_index + i, now, writes)
        elif len(running) > desired:
            # Scale down the tasks that cost least to lose: unplaced first, then the newest.
            order = sorted(
                (t for t in running if not t.kill_reason),
                key=lambda t: (t.state != states.ACCEPTED, -t.machine.status.timestamp_ms),
            )
            for t in order[: len(running) - desired]:
                t.replace = False
                self._kill(t, states.REASON_SCALED_DOWN, "job scaled down", now, writes)

    def _archive_job(self, job: Job, writes: list[Write]) -> None:
        writes.append(self._job_write(job, archived=True))
        tasks = list(self.tasks_by_job.pop(job.id).values())
        del self.jobs[job.id]
        self.archived[job.id] = (job, tasks)
        while len(self.archived) > self.settings.archive_memory_jobs:
            self.archived.popitem(last=False)

    def _active_job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            if job_id in self.archived or self.store.get("job", job_id) is not None:
                raise Conflict(f"job {job_id} is already Finished")
            raise NotFound(f"job {job_id} not found")
        return job

    # ================================================================================== queries
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
        for tasks in self.tasks_by_job.values():
            if task_id in tasks:
                return tasks[task_id]
        for _, tasks_list in self.archived.values():
            for t in tasks_list:
                if t.id == task_id:
                    return t
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
            self.changed.notify_all()
            self.changed.wait_for(lambda: task_id in self._log_uploads, timeout=self.settings.log_wait_s)
            upload = self._log_uploads.pop(task_id, None)
            agent.log_requests.discard(task_id)
            if upload is None or not upload[2]:
                return task.stdout_tail if stream == "stdout" else task.stderr_tail
            return upload[0] if stream == "stdout" else upload[1]

    # ============================================================================ agent channel
    def _bump_agent(self, agent_id: str | None) -> None:
        if agent_id is not None and agent_id in self.agents:
            self.agents[agent_id].version += 1
            self.changed.notify_all()
            self.backend.agent_changed(agent_id)

    def register_agent(self, reg: AgentRegistration) -> dict[str, Any]:
        now = self.clock()
        res = reg.resources
        with self.lock:
            session = (self.epoch << 32) | secrets.randbits(31)
            previous = self.agents.get(reg.id)
            agent = Agent(
                reg.id,
                Resources(float(res.cpu), res.memoryMB, res.diskMB, res.networkMbps),
                dict(reg.attributes),
                session,
                now,
                now,
                version=(previous.version + 1) if previous else 1,
            )
            self.agents[reg.id] = agent
            self._full_pass = True
            if previous is not None:
                agent.lifecycle, agent.lifecycle_detail = previous.lifecycle, previous.lifecycle_detail
                agent.record_version, agent.idle_since_ms = previous.record_version, previous.idle_since_ms
            elif reg.id in self._agent_lifecycles:
                agent.lifecycle, agent.lifecycle_detail, agent.record_version = self._agent_lifecycles[reg.id]
            writes: list[Write] = []
            self._instance_group_for(agent, writes)
            running = set(reg.runningTaskIds)
            known = running | set(reg.exitedTaskIds)  # exited ones get their real end in the next report
            mine = [
                t for t in self.tasks.values() if t.agent_id == reg.id and t.state in states.TASK_ON_AGENT
            ]
            # What the agent runs that is not wanted there any more (it was lost and its tasks were replaced)
            # must die before it gets new work.
            agent.stale_tasks = running - {t.id for t in mine}
            if agent.stale_tasks:
                log.warning(
                    "agent %s runs %d stale task(s); no new work until they are gone",
                    reg.id,
                    len(agent.stale_tasks),
                )
            for task in mine:
                if task.state in (states.LAUNCHED, states.START_INITIATED) and task.id in running:
                    # It runs; the report saying so was lost with the previous master or agent.
                    task.machine.move(states.STARTED, "normal", "running on the agent at registration", now)
                    task.started_ms = now
                    writes.append(self._task_write(task))
                # The agent restarted: what it neither runs nor saw end (and had started) is lost.
                elif task.state in (states.START_INITIATED, states.STARTED) and task.id not in known:
                    task.machine.move(states.FINISHED, states.REASON_LOST, "agent restarted without it", now)
                    self._finished(task, now, writes)
                    self._reconcile_job(self.jobs[task.job_id], now, writes)
                elif task.state == states.KILL_INITIATED and task.id not in known:
                    task.machine.move(
                        states.FINISHED,
                        task.kill_reason or states.REASON_KILLED,
                        "agent restarted without it",
                        now,
                    )
                    self._finished(task, now, writes)
                    self._reconcile_job(self.jobs[task.job_id], now, writes)
            pending = self._queue(writes)
            self.changed.notify_all()
        self._wait(pending)
        self.schedule_wanted.set()
        log.info("agent %s registered (session %d, %d running)", reg.id, session, len(running))
        return {
            "agentId": reg.id,
            "sessionEpoch": session,
            "heartbeatIntervalMs": 1000,
            "heartbeatTimeoutMs": self.settings.heartbeat_timeout_ms,
        }

    def _agent_session(self, agent_id: str, session: int) -> Agent:
        agent = self.agents.get(agent_id)
        if agent is None or agent.session_epoch != session or agent.lost or not agent.registered:
            raise StaleSession(f"agent {agent_id} must register again")
        return agent

    def desired_set(self, agent_id: str, session: int, since: int, wait_s: float) -> dict[str, Any]:
        with self.lock:
            agent = self._agent_session(agent_id, session)
            if agent.version == since:
                self.changed.wait_for(
                    lambda: agent.version != since or self.agents.get(agent_id) is not agent or self.closing,
                    timeout=wait_s,
                )
            agent = self._agent_session(agent_id, session)
            tasks = []
            for task in self.tasks.values():
                if task.agent_id != agent_id or task.state not in states.TASK_ON_AGENT:
                    continue
                job = self.jobs[task.job_id]
                c = job.descriptor.container
                batch = job.descriptor.batch
                tasks.append(
                    {
                        "taskId": task.id,
                        "jobId": task.job_id,
                        "image": c.image.reference,
                        "entryPoint": list(c.entryPoint),
                        "command": list(c.command),
                        "env": dict(c.env),
                        "resources": c.resources.to_json(),
                        "runtimeLimitSec": batch.runtimeLimitSec if batch else None,
                        "kill": task.state == states.KILL_INITIATED,
                        "killGraceMs": self.settings.kill_grace_ms,
                        # The task identity the agent puts in the task's environment (README).
                        "index": task.index,
                        "originalId": task.original_id or task.id,
                        "resubmitNumber": task.retries_done,
                    }
                )
            for task_id in sorted(agent.stale_tasks):
                # Already replaced elsewhere: no grace, the overlap has lasted long enough.
                tasks.append({"taskId": task_id, "kill": True, "killGraceMs": 0, "stale": True})
            return {"version": agent.version, "tasks": tasks, "logRequests": sorted(agent.log_requests)}

    def agent_report(self, agent_id: str, report: AgentStatusReport) -> None:
        now = self.clock()
        with self.lock:
            agent = self._agent_session(agent_id, report.sessionEpoch)
            agent.last_heartbeat_ms = now
            agent.host = {k: float(v) for k, v in report.host.items()}
            was_schedulable = agent.schedulable
            if agent.unavailable_reason != report.unavailableReason:
                log.warning(
                    "agent %s %s",
                    agent_id,
                    f"takes no new work: {report.unavailableReason}"
                    if report.unavailableReason
                    else "takes new work again",
                )
            agent.unavailable_reason = report.unavailableReason
            agent.stale_tasks &= set(report.runningTaskIds)
            writes: list[Write] = []
            for update in report.updates:
                self._apply_update(agent, update, now, writes)
            for task_id, usage in report.usage.items():
                task = self.tasks.get(task_id)
                if task is not None and task.agent_id == agent_id:
                    task.usage = {
                        "cpuPct": float(usage.cpuPct),
                        "rssMB": float(usage.rssMB),
                        "processes": usage.processes,
                        "timestamp": now,
                    }
            became_schedulable = agent.schedulable and not was_schedulable
            if became_schedulable:
                self._full_pass = True  # capacity appeared: every pending task gets another chance
            pending = self._queue(writes)
        self._wait(pending)
        if writes or became_schedulable:
            self.schedule_wanted.set()

    def _apply_update(self, agent: Agent, u: TaskUpdate, now: int, writes: list[Write]) -> None:
        task = self.tasks.get(u.taskId)
        if task is None or task.agent_id != agent.id:
            return  # unknown or moved elsewhere: not in the agent's desired set, so the agent kills it
        if u.state == task.state:
            return
        if u.state == states.FINISHED:
            reason = task.kill_reason or u.reasonCode or states.REASON_FAILED
            message = (
                u.reasonMessage
                if not task.kill_reason or not u.reasonMessage
                else (f"{task.machine.status.reason_message}; {u.reasonMessage}")
            )
            task.exit_code = u.exitCode
            task.stdout_tail = (u.stdoutTail or "")[-TAIL_LIMIT:]
            task.stderr_tail = (u.stderrTail or "")[-TAIL_LIMIT:]
            task.machine.move(states.FINISHED, reason, message, now)
            self._finished(task, now, writes)
            self._reconcile_job(self.jobs[task.job_id], now, writes)
            return
        if task.state == states.KILL_INITIATED:
            return  # progress reports that raced a kill change nothing
        if u.state == states.START_INITIATED and task.state == states.STARTED:
            return
        try:
            task.machine.move(u.state, "normal", u.reasonMessage, now)
        except IllegalTransition:
            log.warning("agent %s reported illegal move of %s to %s", agent.id, task.id, u.state)
            return
        if u.state == states.STARTED:
            task.started_ms = now
        writes.append(self._task_write(task))
        if u.state == states.STARTED and task.resubmit_of:
            drained = self.tasks.get(task.resubmit_of)
            if drained is not None and drained.migrating_to == task.id and not drained.kill_reason:
                drained.replace = False
                self._kill(drained, states.REASON_KILLED, f"drained: replaced by {task.id}", now, writes)

    def log_upload(
        self, agent_id: str, task_id: str, session: int, stdout: str, stderr: str, found: bool
    ) -> None:
        with self.lock:
            self._agent_session(agent_id, session)
            self._log_uploads[task_id] = (stdout, stderr, found)
            self.changed.notify_all()

    def agent_views(self) -> list[dict[str, Any]]:
        with self.lock:
            # One pass over the tasks for every agent, not two per agent.
            on_agent: dict[str, list[Task]] = {}
            for t in self.tasks.values():
                if t.agent_id is not None and t.state in states.TASK_ON_AGENT:
                    on_agent.setdefault(t.agent_id, []).append(t)
            views = []
            for a in sorted(self.agents.values(), key=lambda a: a.id):
                mine = on_agent.get(a.id, [])
                used = Resources()
                for t in mine:
                    used = used.add(task_resources(self.jobs[t.job_id]))
                task_ids = [t.id for t in mine]
                view = a.to_wire(used, task_ids)
                view["lifecycle"] = self.agent_lifecycle(a)
                view["lifecycleDetail"] = a.lifecycle_detail
                group = self.instance_groups.get(view["instanceGroupId"])
                if group is not None:
                    view["tier"] = group.tier
                view["idleSince"] = None if task_ids else max(a.registered_ms, a.idle_since_ms or 0)
                views.append(view)
            return views

    def _used(self, agent_id: str) -> Resources:
        used = Resources()
        for t in self.tasks.values():
            if t.agent_id == agent_id and t.state in states.TASK_ON_AGENT:
                used = used.add(task_resources(self.jobs[t.job_id]))
        return used

    # =============================================================================== scheduling
    def schedule_once(self) -> int:
        """One placement pass through the pure engine; returns how many tasks were placed."""
        now = self.clock()
        with self.lock:
            if self.fenced:
                return 0
            if self._full_pass:
                candidates: Iterable[Task] = self.tasks.values()
            else:
                candidates = (self.tasks[i] for i in self._new_pending if i in self.tasks)
            pending = [t for t in candidates if t.state == states.ACCEPTED and t.not_before_ms <= now]
            self._full_pass = False
            self._new_pending.clear()
            if not pending:
                return 0
            pending.sort(key=lambda t: (t.machine.status.timestamp_ms, t.job_id, t.index))
            reply = place(self._schedule_request(pending, now))
            writes: list[Write] = []
            touched: set[str] = set()
            for a in reply.assignments:
                task = self.tasks[a.task_id]
                task.agent_id = a.agent_id
                task.pending_reason = ""
                task.machine.move(states.LAUNCHED, "normal", f"placed on {a.agent_id}", now)
                writes.append(self._task_write(task))
                touched.add(a.agent_id)
                self.agents[a.agent_id].idle_since_ms = None
            for task_id, why in reply.unplaced.items():
                self.tasks[task_id].pending_reason = why.summary
            queued = self._queue(writes)
        self._wait(queued)
        with self.lock:
            for agent_id in touched:  # hand work to agents only once it is durable
                self._bump_agent(agent_id)
        return len(reply.assignments)

    def _schedule_request(self, pending: list[Task], now: int) -> sched.ScheduleRequest:
        """Snapshot the cluster as the engine's plain data (DESIGN.md #6: the engine does no I/O)."""
        used: dict[str, sched.Resources] = {}
        job_counts: dict[str, dict[str, int]] = {}
        zone_counts: dict[str, dict[str, int]] = {}
        group_used: dict[str, sched.Resources] = {}
        for t in self.tasks.values():
            if t.state not in states.TASK_ON_AGENT or t.agent_id not in self.agents:
                continue
            job = self.jobs[t.job_id]
            res = engine_resources(job)
            used[t.agent_id] = used.get(t.agent_id, sched.Resources()).add(res)
            per_job = job_counts.setdefault(t.agent_id, {})
            per_job[t.job_id] = per_job.get(t.job_id, 0) + 1
            zone = self.agents[t.agent_id].attributes.get("zone", "")
            per_zone = zone_counts.setdefault(t.job_id, {})
            per_zone[zone] = per_zone.get(zone, 0) + 1
            group_name = job.descriptor.capacityGroup
            group_used[group_name] = group_used.get(group_name, sched.Resources()).add(res)
        agents = []
        for a in self.agents.values():
            if not a.schedulable:
                continue
            group = self.instance_groups.get(a.attributes.get("instanceGroup", "default"))
            tier = group.tier if group is not None else a.attributes.get("tier", "flex")
            r = a.resources
            agents.append(
                sched.AgentView(
                    agent_id=a.id,
                    instance_group=a.attributes.get("instanceGroup", "default"),
                    tier="critical" if tier == "critical" else "flex",
                    lifecycle=self.agent_lifecycle(a),  # type: ignore[arg-type]
                    total=sched.Resources(r.cpu, r.memory_mb, r.disk_mb, r.network_mbps),
                    used=used.get(a.id, sched.Resources()),
                    attributes={**a.attributes, "id": a.id},
                    job_task_counts=job_counts.get(a.id, {}),
                    exclusive=any(self._exclusive(self.jobs[j]) for j in job_counts.get(a.id, {})),
                )
            )
        tasks = []
        for t in pending:
            job = self.jobs[t.job_id]
            c = job.descriptor.container
            tier = self.tier_of_group(job.descriptor.capacityGroup)
            tasks.append(
                sched.PendingTask(
                    task_id=t.id,
                    job_id=t.job_id,
                    resources=engine_resources(job),
                    capacity_group=job.descriptor.capacityGroup,
                    tier="critical" if tier == "critical" else "flex",
                    hard_constraints=c.hardConstraints.constraints,
                    soft_constraints=c.softConstraints.constraints,
                    spread=tier == "critical" and job.descriptor.service is not None,
                )
            )
        groups = [
            sched.CapacityGroupView(
                g.name,
                "critical" if g.tier == "critical" else "flex",
                g.reservation,
                group_used.get(g.name, sched.Resources()),
            )
            for g in self.capacity_groups.values()
        ]
        return sched.ScheduleRequest(
            tasks=tasks, agents=agents, capacity_groups=groups, job_zone_counts=zone_counts, now=now / 1000
        )

    def _drain(self, now: int, writes: list[Write]) -> None:
        """Move service tasks off PhasedOut agents without ever dropping a job below its desired count.

        Per job, one move at a time: a replacement is created; the old task keeps running (and keeps
        counting towards desired) until the replacement reports Started, then it is stopped. Batch tasks are
        left to finish where they are.
        """
        draining = {a.id for a in self.agents.values() if not a.lost and self.agent_lifecycle(a) != "Active"}
        if not draining:
            return
        moving_jobs = {t.job_id for t in self.tasks.values() if t.migrating_to}
        for task in list(self.tasks.values()):
            job = self.jobs.get(task.job_id)
            if (
                task.agent_id not in draining
                or task.state != states.STARTED
                or task.kill_reason
                or job is None
                or job.descriptor.service is None
                or job.state != states.JOB_ACCEPTED
                or job.id in moving_jobs
            ):
                continue
            replacement = self._new_task(job, task.index, now, writes, replaces=task)
            replacement.retries_done = task.retries_done
            task.migrating_to = replacement.id
            writes.append(self._task_write(task))
            moving_jobs.add(job.id)
            log.info("draining %s from %s: replacement %s", task.id, task.agent_id, replacement.id)

    @staticmethod
    def _exclusive(job: Job) -> bool:
        hard = {k.lower(): v.lower() for k, v in job.descriptor.container.hardConstraints.constraints.items()}
        return hard.get("exclusivehost") == "true"

    def tick(self) -> None:
        """Timers: lost agents, runtime limits, stuck launches, retry delays that came due."""
        now = self.clock()
        with self.lock:
            if self.fenced:
                return
            writes: list[Write] = []
            for agent in self.agents.values():
                if not agent.lost and now - agent.last_heartbeat_ms > self.settings.heartbeat_timeout_ms:
                    agent.lost = True
                    self._full_pass = True
                    log.warning(
                        "agent %s lost: no heartbeat for %d ms", agent.id, now - agent.last_heartbeat_ms
                    )
                    for task in [t for t in self.tasks.values() if t.agent_id == agent.id]:
                        reason = task.kill_reason or states.REASON_LOST
                        task.machine.move(states.FINISHED, reason, f"agent {agent.id} lost", now)
                        self._finished(task, now, writes)
                        self._reconcile_job(self.jobs[task.job_id], now, writes)
            # A new leader knows only the agents that registered with it: tasks on an agent that has not
            # come back within a heartbeat timeout of the takeover are lost, as if it had stopped beating.
            orphans_due = now - self.leading_since_ms > self.settings.heartbeat_timeout_ms
            for task in list(self.tasks.values()):
                job = self.jobs[task.job_id]
                batch = job.descriptor.batch
                if (
                    orphans_due
                    and task.agent_id is not None
                    and task.agent_id not in self.agents
                    and task.state in states.TASK_ON_AGENT
                ):
                    task.machine.move(
                        states.FINISHED,
                        task.kill_reason or states.REASON_LOST,
                        f"agent {task.agent_id} did not register with the new leader",
                        now,
                    )
                    self._finished(task, now, writes)
                    self._reconcile_job(job, now, writes)
                elif (
                    task.state == states.STARTED
                    and batch is not None
                    and task.started_ms is not None
                    and not task.kill_reason
                    and now - task.started_ms > batch.runtimeLimitSec * 1000
                ):
                    self._kill(
                        task,
                        states.REASON_RUNTIME_LIMIT,
                        f"ran longer than runtimeLimitSec={batch.runtimeLimitSec}",
                        now,
                        writes,
                    )
                elif (
                    task.state == states.LAUNCHED
                    and now - task.machine.status.timestamp_ms > self.settings.launch_timeout_ms
                ):
                    task.machine.move(
                        states.FINISHED,
                        states.REASON_STUCK,
                        f"no progress from Launched in {self.settings.launch_timeout_ms} ms",
                        now,
                    )
                    self._bump_agent(task.agent_id)
                    self._finished(task, now, writes)
                    self._reconcile_job(job, now, writes)
                elif (
                    task.state == states.START_INITIATED
                    and not task.kill_reason
                    and now - task.machine.status.timestamp_ms > self.settings.launch_timeout_ms
                ):
                    # The agent has it, so it must confirm the end: a replacement must not start meanwhile.
                    self._kill(
                        task,
                        states.REASON_STUCK,
                        f"no progress from StartInitiated in {self.settings.launch_timeout_ms} ms",
                        now,
                        writes,
                    )
            self._drain(now, writes)
            for task_id, due in list(self._delayed.items()):
                if due <= now:
                    del self._delayed[task_id]
                    self._new_pending.add(task_id)
                    self.schedule_wanted.set()
            queued = self._queue(writes)
        self._wait(queued)
        if writes:
            self.schedule_wanted.set()

    # ========================================================================== capacity groups
    def tier_of_group(self, name: str) -> str:
        group = self.capacity_groups.get(name)
        return group.tier if group is not None else "flex"

    def capacity_group_exists(self, name: str) -> bool:
        return name in self.capacity_groups

    def list_capacity_groups(self) -> list[dict[str, Any]]:
        with self.lock:
            return [g.to_wire() for g in sorted(self.capacity_groups.values(), key=lambda g: g.name)]

    def get_capacity_group(self, name: str) -> dict[str, Any]:
        with self.lock:
            group = self.capacity_groups.get(name)
            if group is None:
                raise NotFound(f"capacity group {name} not found")
            return group.to_wire()

    def put_capacity_group(self, sla: ApplicationSla, create: bool) -> dict[str, Any]:
        with self.lock:
            existing = self.capacity_groups.get(sla.appName)
            if create and existing is not None:
                raise Conflict(f"capacity group {sla.appName} already exists")
            if not create and existing is None:
                raise NotFound(f"capacity group {sla.appName} not found")
            if existing is not None and existing.tier != sla.tier and self._group_in_use(sla.appName):
                raise Conflict(f"capacity group {sla.appName} has active jobs; its tier cannot change")
            group = CapacityGroup(sla, existing.version if existing else 0)
            write = Write("capacity_group", group.name, group.version, sla.to_json())
            group.version += 1
            self.capacity_groups[group.name] = group
            self._full_pass = True
            pending = self._queue([write])
        self._wait(pending)
        self.schedule_wanted.set()
        return group.to_wire()

    def delete_capacity_group(self, name: str) -> None:
        with self.lock:
            group = self.capacity_groups.get(name)
            if group is None:
                raise NotFound(f"capacity group {name} not found")
            if name == DEFAULT_GROUP:
                raise Conflict("the DEFAULT capacity group cannot be deleted")
            if self._group_in_use(name):
                raise Conflict(f"capacity group {name} has active jobs")
            write = Write("capacity_group", name, group.version, group.sla.to_json(), archived=True)
            del self.capacity_groups[name]
            pending = self._queue([write])
        self._wait(pending)

    def _group_in_use(self, name: str) -> bool:
        return any(j.descriptor.capacityGroup == name for j in self.jobs.values())

    # =========================================================================== instance groups
    def _instance_group_for(self, agent: Agent, writes: list[Write]) -> InstanceGroup:
        group_id = agent.attributes.get("instanceGroup", "default")
        group = self.instance_groups.get(group_id)
        if group is None:
            group = InstanceGroup(group_id, agent.attributes.get("tier", "flex"))
            writes.append(Write("instance_group", group.id, 0, group.to_record()))
            group.version = 1
            self.instance_groups[group_id] = group
        return group

    def agent_lifecycle(self, agent: Agent) -> str:
        """An agent's own phase-out wins over its group's; otherwise the group decides."""
        if agent.lifecycle != "Active":
            return agent.lifecycle
        group = self.instance_groups.get(agent.attributes.get("instanceGroup", "default"))
        return group.lifecycle if group is not None else "Active"

    def list_instance_groups(self) -> list[dict[str, Any]]:
        with self.lock:
            return [
                self._instance_group_wire(g)
                for g in sorted(self.instance_groups.values(), key=lambda g: g.id)
            ]

    def get_instance_group(self, group_id: str) -> dict[str, Any]:
        with self.lock:
            group = self.instance_groups.get(group_id)
            if group is None:
                raise NotFound(f"instance group {group_id} not found")
            return self._instance_group_wire(group)

    def _instance_group_wire(self, group: InstanceGroup) -> dict[str, Any]:
        members = [
            a.id for a in self.agents.values() if a.attributes.get("instanceGroup", "default") == group.id
        ]
        return {**group.to_record(), "agentIds": sorted(members)}

    def set_instance_group_lifecycle(self, group_id: str, state: str, detail: str) -> dict[str, Any]:
        with self.lock:
            group = self.instance_groups.get(group_id)
            if group is None:
                raise NotFound(f"instance group {group_id} not found")
            group.lifecycle, group.detail = state, detail
            write = Write("instance_group", group.id, group.version, group.to_record())
            group.version += 1
            self._full_pass = True
            pending = self._queue([write])
        self._wait(pending)
        self.schedule_wanted.set()
        return self.get_instance_group(group_id)

    def set_agent_lifecycle(self, agent_id: str, state: str, detail: str) -> dict[str, Any]:
        with self.lock:
            agent = self.agents.get(agent_id)
            if agent is None:
                raise NotFound(f"agent {agent_id} not found")
            agent.lifecycle, agent.lifecycle_detail = state, detail
            record = {"id": agent.id, "lifecycle": state, "detail": detail}
            write = Write("agent", agent.id, agent.record_version, record)
            agent.record_version += 1
            self._full_pass = True
            pending = self._queue([write])
        self._wait(pending)
        self.schedule_wanted.set()
        return next(a for a in self.agent_views() if a["id"] == agent_id)
