"""Titus's job and task update operations that change a job's spec or a task's attributes in place, and the
consistent snapshot the job event stream (master/api/observe.py) starts from.

UpdateJobProcesses, UpdateJobDisruptionBudget, Update/DeleteJobAttributes and Update/DeleteTaskAttributes:
each validates against the entity's current state under the lock, replaces the frozen descriptor (or the
task's attribute map) and answers only once the write is durable, as every other write does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from master.api import mapper
from master.api.models import STORED, JobDescriptor, JobDisruptionBudget, ServiceJobProcesses
from master.core import states
from master.core.entities import Job, Task
from master.manager_base import Conflict, ManagerBase, NotFound


class JobUpdates(ManagerBase):
    def _updatable_job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            if job_id in self.archived or self.store.get("job", job_id) is not None:
                raise Conflict(f"job {job_id} is already Finished")
            raise NotFound(f"job {job_id} not found")
        if job.state != states.JOB_ACCEPTED:
            raise Conflict(f"job {job_id} is {job.state}; its spec can no longer change")
        return job

    def _replace_descriptor(
        self, job_id: str, change: Callable[[dict[str, Any]], None], service_only: str = ""
    ) -> None:
        """`change` edits the descriptor's wire form in place; read, change and write happen under one hold
        of the lock, so concurrent updates of one job never lose each other's keys."""
        with self.lock:
            job = self._updatable_job(job_id)
            if service_only and job.descriptor.service is None:
                raise Conflict(f"only service jobs have {service_only}")
            data = job.descriptor.to_json()
            change(data)
            job.descriptor = JobDescriptor.model_validate(data, context=STORED)
            pending = self._queue([self._job_write(job)])
        self._wait(pending)

    def update_job_processes(self, job_id: str, processes: ServiceJobProcesses) -> None:
        """Titus's UpdateJobProcesses: later capacity updates honour disableIncrease/DecreaseDesired."""

        def change(data: dict[str, Any]) -> None:
            data["service"]["serviceJobProcesses"] = processes.to_json()

        self._replace_descriptor(job_id, change, service_only="job processes")

    def update_disruption_budget(self, job_id: str, budget: JobDisruptionBudget) -> None:
        """Titus's UpdateJobDisruptionBudget; the eviction and drain paths read the stored budget."""
        self._replace_descriptor(job_id, lambda data: data.update(disruptionBudget=budget.to_json()))

    def update_job_attributes(self, job_id: str, attributes: Mapping[str, str]) -> None:
        """Adds or replaces the given keys of the job descriptor's attributes (Titus's semantics)."""
        def change(data: dict[str, Any]) -> None:
            data["attributes"] = {**data["attributes"], **attributes}

        self._replace_descriptor(job_id, change)

    def delete_job_attributes(self, job_id: str, keys: Iterable[str]) -> None:
        drop = set(keys)

        def change(data: dict[str, Any]) -> None:
            data["attributes"] = {k: v for k, v in data["attributes"].items() if k not in drop}

        self._replace_descriptor(job_id, change)

    def update_task_attributes(self, task_id: str, attributes: Mapping[str, str]) -> None:
        self._change_task_attributes(task_id, lambda current: {**current, **attributes})

    def delete_task_attributes(self, task_id: str, keys: Iterable[str]) -> None:
        drop = set(keys)
        self._change_task_attributes(
            task_id, lambda current: {k: v for k, v in current.items() if k not in drop}
        )

    def _change_task_attributes(self, task_id: str, change: Any) -> None:
        with self.lock:
            task = self.tasks.get(task_id)
            if task is None:
                if self.store.get("task", task_id) is not None or task_id in self._task_job:
                    raise Conflict(f"task {task_id} is already Finished")
                raise NotFound(f"task {task_id} not found")
            task.attributes = dict(change(task.attributes))
            pending = self._queue([self._task_write(task)])
        self._wait(pending)

    # ------------------------------------------------------------------------------ the job event stream
    def stream_snapshot(
        self, job_id: str | None = None
    ) -> tuple[int, list[tuple[dict[str, Any], list[dict[str, Any]]]]]:
        """The observe stream's first phase: every active job (or the one asked for) with its active tasks,
        in Titus's wire form, and the last event sequence the snapshot already reflects. Taken under the
        lock, so it is one consistent cut; later events (> that sequence) carry every change after it."""
        with self.lock:
            seq = self.events.last_seq
            if job_id is not None:
                job = self.jobs.get(job_id)
                jobs = [job] if job is not None else []
            else:
                jobs = sorted(self.jobs.values(), key=lambda j: (j.created_ms, j.id))
            out = []
            for job in jobs:
                tier = self.tier_of_group(job.descriptor.capacityGroup)
                tasks = sorted(
                    (t for t in self.tasks_by_job.get(job.id, {}).values() if t.active),
                    key=lambda t: (t.index, t.id),
                )
                out.append((mapper.job_to_wire(job), [mapper.task_to_wire(t, job, tier) for t in tasks]))
            return seq, out

    # ------------------------------------------------------------------------------------------ MoveTask
    def move_task(self, source_id: str, target_id: str, task_id: str) -> None:
        """Titus's MoveTask: a Started task of one service job becomes a task of another, compatible one;
        the source's desired drops by one and the target's grows by one, in the same durable write, and the
        task keeps running where it is (its agent learns the new job id on its next poll)."""
        now = self.clock()
        with self.lock:
            if source_id == target_id:
                raise Conflict("sourceJobId and targetJobId must differ")
            source, target = self._updatable_job(source_id), self._updatable_job(target_id)
            src, dst = source.descriptor.service, target.descriptor.service
            if src is None or dst is None:
                raise Conflict("tasks move only between service jobs")
            task = self.tasks.get(task_id)
            if task is None or task.job_id != source_id:
                raise NotFound(f"task {task_id} is not an active task of job {source_id}")
            if task.state != states.STARTED or task.kill_reason:
                raise Conflict(f"only a Started task can move; {task_id} is {task.state}")
            difference = incompatibility(source.descriptor, target.descriptor)
            if difference:
                raise Conflict(f"jobs {source_id} and {target_id} are not compatible: {difference}")
            if src.capacity.desired - 1 < src.capacity.min:
                raise Conflict(f"moving would take job {source_id} below its min ({src.capacity.min})")
            if dst.capacity.desired + 1 > dst.capacity.max:
                raise Conflict(f"moving would take job {target_id} above its max ({dst.capacity.max})")
            if src.serviceJobProcesses.disableDecreaseDesired:
                raise Conflict(f"job {source_id} disables decreasing desired (serviceJobProcesses)")
            if dst.serviceJobProcesses.disableIncreaseDesired:
                raise Conflict(f"job {target_id} disables increasing desired (serviceJobProcesses)")
            shrunk, grown = src.capacity.to_json(), dst.capacity.to_json()
            shrunk["desired"] -= 1
            grown["desired"] += 1
            self._set_service(source, capacity=shrunk)
            self._set_service(target, capacity=grown)
            self.index.forget(task.id)  # placed under the source job: placed again under the target below
            del self.tasks_by_job[source_id][task.id]
            self.tasks_by_job[target_id][task.id] = task
            self._task_job[task.id] = target_id
            task.job_id, task.moved_from = target_id, source_id
            writes = [self._job_write(source), self._job_write(target), self._task_write(task)]
            self._reconcile_job(source, now, writes)
            self._reconcile_job(target, now, writes)
            pending = self._queue(writes)
            agent_id = task.agent_id
        self._wait(pending)
        with self.lock:  # the agent hears of the new job id only once it is durable
            self._bump_agent(agent_id)


#: What Titus ignores when it compares two jobs for MoveTask (JobManagementService.MoveTask).
_IGNORED_FOR_MOVE = ("owner", "applicationName", "jobGroupInfo", "disruptionBudget", "service")
_KEPT_ATTRIBUTE_PREFIXES = ("titus.", "titusParameter.")


def incompatibility(a: JobDescriptor, b: JobDescriptor) -> str:
    """The first top-level part in which two descriptors differ for MoveTask, or "" when compatible:
    identical but for owner, application name, job group, disruption budget, the service spec, and
    attributes (job and container) not prefixed `titus.` / `titusParameter.`."""

    def key(d: JobDescriptor) -> dict[str, Any]:
        data = d.to_json()
        for name in _IGNORED_FOR_MOVE:
            data.pop(name, None)
        data["attributes"] = {
            k: v for k, v in data["attributes"].items() if k.startswith(_KEPT_ATTRIBUTE_PREFIXES)
        }
        container = data["container"]
        container["attributes"] = {
            k: v for k, v in container["attributes"].items() if k.startswith(_KEPT_ATTRIBUTE_PREFIXES)
        }
        return data

    ka, kb = key(a), key(b)
    for name in sorted(set(ka) | set(kb)):
        if ka.get(name) != kb.get(name):
            if name == "container":
                inner = sorted(n for n in set(ka[name]) | set(kb[name]) if ka[name].get(n) != kb[name].get(n))
                return f"container.{inner[0]} differs"
            return f"{name} differs"
    return ""


class SchedulingResults(ManagerBase):
    def scheduling_result(self, task_id: str) -> dict[str, Any]:
        """Titus's GetSchedulingResult: why a task waits (or that it was placed)."""
        with self.lock:
            task = self.tasks.get(task_id)
            if task is not None:
                return mapper.scheduling_result(task)
        stored = self.store.get("task", task_id)
        if stored is None:
            raise NotFound(f"task {task_id} not found")
        return mapper.scheduling_result(Task.from_record(stored.record, stored.version))
