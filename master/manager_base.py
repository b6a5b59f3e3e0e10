"""The leader's state and the one way it changes: memory first, the store write queued under the lock.

One lock guards the in-memory state. A change is made under the lock, its writes are queued to the store
under the same lock (so the store sees changes in the order memory made them), and the caller waits for
durability outside the lock (so concurrent requests share one commit). Nothing is acknowledged to a
client or handed to an agent before it is durable. `ManagerBase` holds that state (jobs, tasks, agents,
groups, the task index, timers, snapshot cache, event log), the write plumbing, and the transitions every
entry point shares (create, kill, finish, archive, reconcile a job, apply a task update); the entry points
live in the modules named for their callers: master/job_manager.py (the jobs API), agent_channel.py,
scheduling.py, timer_pass.py, group_admin.py, backend_seam.py.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from master.api.models import (
    STORED,
    ApplicationSla,
    JobDescriptor,
    TaskUpdate,
)
from master.cluster_identity import decide
from master.core import states
from master.core.agent import Agent
from master.core.disruption import EvictionLedger, SystemBudget
from master.core.entities import TAIL_LIMIT, Job, Task
from master.core.fault_policy import Defaults
from master.core.states import IllegalTransition, Status, StatusMachine
from master.events import Change, EventLog, log_event
from master.groups import DEFAULT_GROUP, CapacityGroup, InstanceGroup, default_group
from master.reconcile import CreateTask, KillTask, platform_caused, reconcile, replacement_delay
from master.resource_backend import NativeBackend, ResourceBackend
from master.scheduler.model import PendingReason, Resources
from master.snapshot import SnapshotBuilder, job_resources
from master.state import TaskIndex
from master.store.base import JobStore, PendingWrite, StaleEpoch, StoreCorrupted, StoreError, Write
from master.timers import TaskTimers

log = logging.getLogger("titus.master")

Clock = Callable[[], int]  # milliseconds since the epoch


_random_pool = bytearray()


def _new_id() -> str:
    """A random (version 4) UUID from a pooled read of os.urandom: one system call per 256 ids instead of
    one per id, each of which gives the GIL away on a busy master. Called under the manager's lock."""
    global _random_pool
    if len(_random_pool) < 16:
        _random_pool = bytearray(os.urandom(4096))
    raw = bytes(_random_pool[-16:])
    del _random_pool[-16:]
    return str(uuid.UUID(bytes=raw, version=4))


class Observer(Protocol):
    """Hooks for metrics (master/metrics.py implements them): plain numbers, so no library here."""

    def on_pass(self, seconds: float, placed: int) -> None: ...

    def on_report(self) -> None: ...


class _NoObserver:
    def on_pass(self, seconds: float, placed: int) -> None:
        pass

    def on_report(self) -> None:
        pass


class NotFound(Exception):
    pass


class Conflict(Exception):
    """The request is well-formed but illegal in the current state (HTTP 409)."""


class Forbidden(Exception):
    """The caller is known but may not do this (HTTP 403): e.g. an agent acting on another agent's task."""


class NotLeader(Exception):
    """This master may not write (fenced, or a store failure made memory untrustworthy)."""


class StaleSession(Exception):
    """An agent spoke with a session the master no longer recognises: it must register again."""


@dataclass
class Settings:
    heartbeat_timeout_ms: int = 15_000
    launch_timeout_ms: int = 60_000
    kill_grace_ms: int = 10_000
    archive_memory_jobs: int = 10_000
    archive_reload_tasks: int = 50_000  # finished tasks read back from the store at start-up, newest first
    finished_tasks_per_job: int = 200
    log_wait_s: float = 5.0
    #: The cluster-wide token bucket every eviction also draws from (master/eviction.py).
    system_disruption_budget: SystemBudget = field(default_factory=SystemBudget)
    # How long a task whose agent went silent stays Disconnected before it is replaced, unless its job
    # says otherwise (master/core/fault_policy.py): service a few minutes, batch for ever.
    disconnect_defaults: Defaults = field(default_factory=Defaults)


# One conversion of a job's resources, GPUs included (they used to be dropped here and at registration).
engine_resources = job_resources
task_resources = job_resources


@dataclass(frozen=True, slots=True)
class _Queued:
    """A store batch in flight and the domain events it becomes once durable."""

    pending: PendingWrite
    changes: list[Change]
    ticket: int


class ManagerBase:
    """State, write plumbing and shared transitions; see the module docstring."""

    def __init__(self, store: JobStore, clock: Clock, settings: Settings | None = None) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings or Settings()
        self.lock = threading.RLock()
        # Each agent's long poll waits on its own condition (all share the one lock), so a change for one
        # agent wakes only that agent's poll; log uploads have theirs.
        self._agent_changed: dict[str, threading.Condition] = {}
        self._logs_changed = threading.Condition(self.lock)
        self.jobs: dict[str, Job] = {}
        self.tasks: dict[str, Task] = {}
        self.tasks_by_job: dict[str, dict[str, Task]] = {}
        self.agents: dict[str, Agent] = {}
        self.archived: OrderedDict[str, tuple[Job, list[Task]]] = OrderedDict()
        self.idempotency: dict[str, str] = {}
        # Submissions with an Idempotency-Key whose write is not durable yet: a retry waits for it.
        self._idempotent_in_flight: dict[str, _Queued] = {}
        self.epoch = 0
        self.cluster_id = ""  # the store's (master/cluster_identity.py); agents remember it
        self.leading_since_ms = 0
        self._in_flight = 0  # writes queued to the store and not yet durable (or refused)
        self._settled = threading.Condition(threading.Lock())
        self.fenced = False
        self.store_corrupted = ""  # why, once a write found the store's files damaged
        self.archive_loaded = threading.Event()  # set once finished jobs are read back after start()
        self.schedule_wanted = threading.Event()
        self.on_fenced: Callable[[], None] = lambda: None
        # Byte-range log reads (GET /tasks/{id}/logs) waiting for the agent's answer, by request id; the
        # agent sees them in its desired set ("logReads") and answers with a chunk (task_log_range).
        self._log_reads: dict[str, dict[str, Any]] = {}
        self._log_chunks: dict[str, dict[str, Any]] = {}
        self.closing = False
        # Event-driven scheduling state: a pass looks at new tasks only, unless capacity changed (an agent
        # came, went or freed resources), when every pending task gets another chance.
        self._new_pending: set[str] = set()
        self._delayed: dict[str, int] = {}
        self._full_pass = True
        # Shapes (resources, capacity group) the engine found unplaceable since capacity last changed.
        self._infeasible: dict[tuple[Resources, str], tuple[str, PendingReason]] = {}
        self.capacity_groups: dict[str, CapacityGroup] = {DEFAULT_GROUP: default_group()}
        self.instance_groups: dict[str, InstanceGroup] = {}
        self._agent_lifecycles: dict[str, tuple[str, str, int]] = {}  # stored phase-outs, applied on register
        # Where resources come from and how desired sets reach the hosts (master/resource_backend.py).
        self.backend: ResourceBackend = NativeBackend()
        # Derived state, maintained from every task write (master/state.py, master/timers.py), and the
        # engine's input built from it (master/snapshot.py).
        self.index = TaskIndex()
        self.events = EventLog(clock)
        self.events.subscribe(log_event)
        self.observer: Observer = _NoObserver()
        self.timers = TaskTimers()
        self.snapshots = SnapshotBuilder()
        self._task_job: dict[str, str] = {}  # every task held in memory (active, recent, archived) -> job
        # The eviction service's memory (master/eviction.py): evictions allowed, owners told, refusals logged.
        self.eviction_ledger = EvictionLedger()
        self._eviction_refusals: dict[str, str] = {}

    def close(self) -> None:
        """Release long polls at once so the HTTP server can stop without waiting them out."""
        with self.lock:
            self.closing = True
            for cond in self._agent_changed.values():
                cond.notify_all()
            self._logs_changed.notify_all()
        self.events.wake()

    def _agent_condition(self, agent_id: str) -> threading.Condition:
        cond = self._agent_changed.get(agent_id)
        if cond is None:
            cond = self._agent_changed[agent_id] = threading.Condition(self.lock)
        return cond

    def _wake_agent(self, agent_id: str) -> None:
        cond = self._agent_changed.get(agent_id)
        if cond is not None:
            cond.notify_all()

    def start(self, init_cluster: bool = False, expected_cluster_id: str = "", where: str = "") -> None:
        """Take leadership: check the store's cluster identity (master/cluster_identity.py), fence older
        writers, then rebuild memory from the store. Raises ClusterIdentityError when the store holds no
        cluster (and `init_cluster` is not set) or another cluster than `expected_cluster_id`."""
        self.store.migrate()
        identity = self.store.load_active("cluster")
        has_data = bool(identity) or any(
            self.store.load_active(kind) for kind in ("job", "task", "capacity_group", "instance_group")
        )
        verdict = decide(
            str(identity[0].record["id"]) if identity else None,
            has_data,
            init_cluster,
            expected_cluster_id,
            _new_id(),
            where or "this master's store",
        )
        self.epoch = self.store.acquire_epoch()
        self.events.start_term(self.epoch)
        if verdict.write:
            self.store.apply(self.epoch, [Write("cluster", "identity", 0, {"id": verdict.cluster_id})])
        self.cluster_id = verdict.cluster_id
        log.info("store of %s", verdict.note)
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
                    self._task_job[task.id] = task.job_id
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
            for task in self.tasks.values():
                self._observe(task)
        log.info("leader epoch %d: loaded %d jobs, %d tasks", self.epoch, len(self.jobs), len(self.tasks))
        self.schedule_wanted.set()
        # Finished jobs and tasks stay listed across restarts; read back after taking over, so that a
        # failover does not wait for them (they are served from the store by id meanwhile).
        threading.Thread(target=self._reload_archive, name="archive-reload", daemon=True).start()

    def _reload_archive(self) -> None:
        """The newest archived jobs and tasks back into memory, for listings (oldest are evicted first)."""
        try:
            jobs = self.store.list_archived("job", self.settings.archive_memory_jobs)
            tasks = self.store.list_archived("task", self.settings.archive_reload_tasks)
        except Exception as exc:  # a store closed or failing under us: listings only lack the old ones
            log.warning("finished jobs could not be read back for listings: %s", exc)
            self.archive_loaded.set()
            return
        by_job: dict[str, list[Task]] = {}
        for stored in tasks:
            task = Task.from_record(stored.record, stored.version)
            by_job.setdefault(task.job_id, []).append(task)
        with self.lock:
            for stored in jobs:  # newest first: each goes in front of what is already there
                job = Job.from_record(stored.record, stored.version)
                if job.id in self.archived or job.id in self.jobs:
                    continue
                finished = by_job.get(job.id, [])
                self.archived[job.id] = (job, finished)
                self.archived.move_to_end(job.id, last=False)
                for task in finished:
                    self._task_job.setdefault(task.id, job.id)
            for job_id, finished in by_job.items():
                active = self.tasks_by_job.get(job_id)
                if active is None or job_id not in self.jobs:
                    continue
                for task in reversed(finished):  # oldest first, as they ended
                    if task.id not in active:
                        active[task.id] = task
                        self._task_job[task.id] = job_id
                self._trim_finished(self.jobs[job_id])
            while len(self.archived) > self.settings.archive_memory_jobs:
                _, (_, evicted) = self.archived.popitem(last=False)
                for t in evicted:
                    self._task_job.pop(t.id, None)
        log.info("read back %d finished jobs and %d finished tasks for listings", len(jobs), len(tasks))
        self.archive_loaded.set()

    def _queue(self, writes: list[Write]) -> _Queued:
        if self.fenced:
            raise NotLeader("this master is fenced and may not write")
        pending = self.store.begin_apply(self.epoch, writes)
        with self._settled:
            self._in_flight += 1
        changes = [
            Change(
                w.kind,
                w.id,
                w.expected_version + 1,
                str(w.record.get("status", {}).get("state", "")) if w.kind in ("job", "task") else "",
                w.archived,
                w.id if w.kind == "job" else str(w.record.get("jobId", "")) if w.kind == "task" else "",
            )
            for w in writes
        ]
        return _Queued(pending, changes, self.events.reserve())

    @property
    def writes_in_flight(self) -> int:
        return self._in_flight

    @property
    def pending_new(self) -> int:
        return len(self._new_pending)

    def wait_writes_settled(self, timeout_s: float) -> bool:
        """After fencing: wait until every queued write is durable or refused (graceful handoff)."""
        with self._settled:
            return self._settled.wait_for(lambda: self._in_flight == 0, timeout=timeout_s)

    def _wait(self, queued: _Queued) -> None:
        published: list[Change] = []
        try:
            queued.pending.wait()
            published = queued.changes  # only what the store has: DESIGN.md #3 and #5
        except StaleEpoch as exc:
            self._fence(f"a newer leader exists: {exc}")
            raise NotLeader(str(exc)) from exc
        except StoreCorrupted as exc:
            self.store_corrupted = str(exc)
            self._fence(f"the store is damaged: {exc}")
            raise NotLeader(str(exc)) from exc
        except StoreError as exc:
            # Memory has changes the store refused: it can no longer be trusted to be the truth.
            self._fence(f"store write failed: {exc}")
            raise NotLeader(str(exc)) from exc
        finally:
            self.events.publish(queued.ticket, published)
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

    def _task_write(self, task: Task, archived: bool = False) -> Write:
        """The one point every task change passes: queue its write and bring the indexes in line."""
        w = Write("task", task.id, task.version, task.to_record(), archived)
        task.version += 1
        self._observe(task)
        return w

    def _observe(self, task: Task) -> None:
        job = self.jobs[task.job_id]
        agent = self.agents.get(task.agent_id) if task.agent_id is not None else None
        zone = agent.attributes.get("zone", "") if agent is not None else ""
        self.index.observe(task, job_resources(job), job.descriptor.capacityGroup, zone)
        batch = job.descriptor.batch
        self.timers.observe(task, batch.runtimeLimitSec * 1000 if batch is not None else None)

    @staticmethod
    def _set_service(job: Job, **changes: Any) -> None:
        data = job.descriptor.to_json()
        data["service"].update(changes)
        job.descriptor = JobDescriptor.model_validate(data, context=STORED)

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
            _new_id(),
            job.id,
            index,
            StatusMachine(states.TASK_TRANSITIONS, Status(states.ACCEPTED, "normal", "", now)),
        )
        if replaces is not None:
            platform = platform_caused(replaces)
            task.retries_done = replaces.retries_done + (0 if platform else 1)
            task.system_retries = replaces.system_retries + (1 if platform else 0)
            task.original_id = replaces.original_id or replaces.id
            task.resubmit_of = replaces.id
            task.predecessor_evicted_ms = replaces.evicted_ms  # the eviction history outlives the original
        task.not_before_ms = now + delay_ms
        if delay_ms:
            task.pending_reason = f"waiting {delay_ms} ms before retry {task.retries_done}"
            task.pending_detail = None
        self.tasks[task.id] = task
        self.tasks_by_job[job.id][task.id] = task
        self._task_job[task.id] = job.id
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
        elif task.state == states.DISCONNECTED:
            # Nobody can confirm the kill now; the task ends here, and should its agent come back still
            # running it, registration makes it a stale task, killed at once (master/reconcile.py).
            task.machine.move(
                states.FINISHED, reason, f"{message}; its agent {task.agent_id} is disconnected", now
            )
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
        for other in self.tasks_by_job[job.id].values():
            if other.migrating_to == task.id and other.active:
                other.migrating_to = ""  # the move failed: the old task keeps its slot
                task.replace = False
                writes.append(self._task_write(other))
        if task.migrating_to:
            task.migrating_to = ""
        delay = replacement_delay(job, task)
        if delay is not None:
            self._new_task(job, task.index, now, writes, replaces=task, delay_ms=delay)
        self._trim_finished(job)

    def _trim_finished(self, job: Job) -> None:
        tasks = self.tasks_by_job[job.id]
        finished = [t for t in tasks.values() if not t.active]
        for old in finished[: max(0, len(finished) - self.settings.finished_tasks_per_job)]:
            del tasks[old.id]
            self._task_job.pop(old.id, None)

    def _reconcile_job(self, job: Job, now: int, writes: list[Write]) -> None:
        """Apply what the pure reconciliation (master/reconcile.py) decides for the job."""
        for action in reconcile(job, list(self.tasks_by_job[job.id].values())):
            if isinstance(action, CreateTask):
                self._new_task(job, action.index, now, writes)
            elif isinstance(action, KillTask):
                task = self.tasks[action.task_id]
                if not action.replace:
                    task.replace = False
                self._kill(task, action.reason, action.message, now, writes)
            else:
                job.machine.move(states.JOB_FINISHED, action.reason, action.message, now)
                self._archive_job(job, writes)

    def _archive_job(self, job: Job, writes: list[Write]) -> None:
        writes.append(self._job_write(job, archived=True))
        tasks = list(self.tasks_by_job.pop(job.id).values())
        del self.jobs[job.id]
        self.archived[job.id] = (job, tasks)
        self.snapshots.forget_job(job.id)
        while len(self.archived) > self.settings.archive_memory_jobs:
            _, (_, evicted) = self.archived.popitem(last=False)
            for t in evicted:
                self._task_job.pop(t.id, None)

    def _bump_agent(self, agent_id: str | None) -> None:
        if agent_id is not None and agent_id in self.agents:
            self.agents[agent_id].version += 1
            self._wake_agent(agent_id)
            self.backend.agent_changed(agent_id)

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
            log.warning(
                "agent %s reported illegal move of %s to %s",
                agent.id,
                task.id,
                u.state,
                extra={"agent_id": agent.id, "task_id": task.id, "job_id": task.job_id},
            )
            return
        if u.state == states.STARTED:
            task.started_ms = now
        writes.append(self._task_write(task))
        if u.state == states.STARTED and task.resubmit_of:
            drained = self.tasks.get(task.resubmit_of)
            if drained is not None and drained.migrating_to == task.id and not drained.kill_reason:
                drained.replace = False
                self._kill(drained, states.REASON_KILLED, f"drained: replaced by {task.id}", now, writes)

    def _used(self, agent_id: str) -> Resources:
        return self.index.used_by(agent_id)

    def tier_of_group(self, name: str) -> str:
        group = self.capacity_groups.get(name)
        return group.tier if group is not None else "flex"

    def capacity_group_exists(self, name: str) -> bool:
        return name in self.capacity_groups

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

    def agent_views(self) -> list[dict[str, Any]]:
        with self.lock:
            views = []
            for a in sorted(self.agents.values(), key=lambda a: a.id):
                task_ids = [t.id for t in self.index.on_agent(a.id)]
                view = a.to_wire(self.index.used_by(a.id), task_ids)
                view["lifecycle"] = self.agent_lifecycle(a)
                view["lifecycleDetail"] = a.lifecycle_detail
                group = self.instance_groups.get(view["instanceGroupId"])
                if group is not None:
                    view["tier"] = group.tier
                view["idleSince"] = None if task_ids else max(a.registered_ms, a.idle_since_ms or 0)
                views.append(view)
            return views
