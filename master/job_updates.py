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
from master.api.models import JobDescriptor, JobDisruptionBudget, ServiceJobProcesses
from master.core import states
from master.core.entities import Job
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
            job.descriptor = JobDescriptor.model_validate(data)
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
