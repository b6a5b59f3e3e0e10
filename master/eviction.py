"""The eviction service: every system-initiated stop of a task asks here first, and is refused with a reason
when its job's disruption budget (or the system budget) does not allow it.

System-initiated stops are the drain of a PhasedOut instance group or agent (master/timer_pass.py), which is
also how the capacity controller's consolidation and scale-in and an upgrade's drain move tasks, and a
termination asked for through `DELETE /api/v3/eviction/tasks/{id}`. The decisions are the pure functions of
master/core/disruption.py; this part of `JobManager` builds their inputs from the live jobs and tasks (a
task's health is its own state: Started and not already leaving), applies the system token bucket, and keeps
the history the rate limits read (`EvictionLedger`, in memory; each evicted task's record carries
`evictedMs` and its replacement the same time, from which a new leader rebuilds the history, so a failover
does not reset the rates).

Quotas follow Titus's eviction API (`EvictionQuota`: target, quota, message): per job, the minimum over its
budget's trackers and the system bucket; per capacity group and per tier, the system quota capped by the sum
of the quotas of the jobs in it (our reading: nothing in the group could be evicted beyond that).
"""

from __future__ import annotations

import logging
from typing import Any

from master.core import states
from master.core.disruption import (
    REASON_POLICY_VIOLATION,
    Budget,
    Decision,
    Eviction,
    JobView,
    Policy,
    Quota,
    TaskHealth,
    decide,
    job_quota,
    system_quota,
)
from master.core.entities import Job, Task
from master.manager_base import ManagerBase, NotFound
from master.store.base import Write

log = logging.getLogger("titus.master")

#: Titus's reason code when the system budget, not the job's, refused.
REASON_SYSTEM_BUDGET = "aboveSystemDisruptionBudget"
#: Titus tier names (titus_base.proto `Tier`) for our lower-case tiers.
TIER_WIRE = {"flex": "Flex", "critical": "Critical"}


def _desired(job: Job) -> int:
    if job.descriptor.service is not None:
        return job.descriptor.service.capacity.desired
    assert job.descriptor.batch is not None
    return job.descriptor.batch.size


class EvictionService(ManagerBase):
    """One part of `JobManager` (master/job_manager.py); see the module docstring. Call under the lock."""

    def _job_view(self, job: Job) -> JobView:
        budget_doc = job.descriptor.disruptionBudget
        budget = Budget.from_wire(
            budget_doc.model_dump(mode="json", exclude_none=True) if budget_doc is not None else None,
            job.descriptor.batch is not None,
        )
        tasks = tuple(
            TaskHealth(
                t.id,
                t.state,
                # A task already leaving (being drained or killed) no longer counts towards availability.
                False if (t.migrating_to or t.kill_reason) else None,
                t.original_id,
            )
            for t in self.tasks_by_job.get(job.id, {}).values()
            if t.active
        )
        return JobView(job.id, _desired(job), budget, tasks, job.descriptor.batch is not None)

    def _system_quota(self, now_s: float) -> Quota:
        return system_quota(self.settings.system_disruption_budget, self.eviction_ledger.history, now_s)

    def _job_quota(self, job: Job, now_s: float) -> Quota:
        quota = job_quota(self._job_view(job), self.eviction_ledger.for_job(job.id), now_s)
        system = self._system_quota(now_s)
        if system.quota < quota.quota:
            return Quota(job.id, system.quota, system.message, "system", system.next_change_at)
        return quota

    def _eviction_decision(self, job: Job, task: Task, now_ms: int) -> Decision:
        """May the system stop `task` now? Self-managed owners are told (the clock starts) on first ask."""
        now_s = now_ms / 1000.0
        view = self._job_view(job)
        notified = (
            self.eviction_ledger.notify(task.id, now_s) if view.budget.policy is Policy.SELF_MANAGED else None
        )
        decision = decide(view, task.id, self.eviction_ledger.for_job(job.id), now_s, notified)
        if not decision.allowed:
            return decision
        system = self._system_quota(now_s)
        if system.quota < 1:
            return Decision(False, REASON_SYSTEM_BUDGET, system.message, system)
        return decision

    def start(self, init_cluster: bool = False, expected_cluster_id: str = "", where: str = "") -> None:
        """After loading the state: rebuild the eviction history from the tasks that carry `evictedMs`."""
        super().start(init_cluster, expected_cluster_id, where)
        self._rebuild_eviction_history()

    def _rebuild_eviction_history(self) -> None:
        """A new leader's rate limits count the evictions its predecessor allowed, read from the active
        tasks alone (no store scan on the takeover path): a task being moved carries `evictedMs`, and a
        replacement carries its evicted predecessor's time. An eviction whose replacement has itself ended
        is forgotten, the one way a failover can loosen a rate limit."""
        now_s = self.clock() / 1000.0
        with self.lock:
            found: dict[str, Eviction] = {}
            for task in self.tasks.values():
                if task.evicted_ms is not None:
                    found[task.id] = Eviction(
                        task.job_id, task.id, task.evicted_ms / 1000.0, task.original_id
                    )
                if task.predecessor_evicted_ms is not None and task.resubmit_of:
                    found.setdefault(
                        task.resubmit_of,
                        Eviction(
                            task.job_id,
                            task.resubmit_of,
                            task.predecessor_evicted_ms / 1000.0,
                            task.original_id,
                        ),
                    )
            for eviction in sorted(found.values(), key=lambda e: e.at):
                if now_s - eviction.at < self.eviction_ledger.keep_s:
                    self.eviction_ledger.record(eviction)
        if found:
            log.info("eviction history: %d evictions rebuilt from the active tasks", len(found))

    def _record_eviction(self, task: Task, now_ms: int, cause: str) -> None:
        """Book an eviction; the caller writes the task, whose `evictedMs` keeps it across a failover."""
        task.evicted_ms = now_ms
        self.eviction_ledger.record(Eviction(task.job_id, task.id, now_ms / 1000.0, task.original_id))
        self._eviction_refusals.pop(task.id, None)
        log.info(
            "evicting %s: %s",
            task.id,
            cause,
            extra={"task_id": task.id, "job_id": task.job_id, "agent_id": task.agent_id},
        )

    def _eviction_refused(self, task: Task, decision: Decision, cause: str) -> None:
        """Log a refusal once per task and reason, not on every timer tick."""
        if self._eviction_refusals.get(task.id) == decision.reason_message:
            return
        self._eviction_refusals[task.id] = decision.reason_message
        if len(self._eviction_refusals) > 10_000:  # forget tasks that ended some other way
            self._eviction_refusals = {k: v for k, v in self._eviction_refusals.items() if k in self.tasks}
        log.info(
            "not evicting %s (%s): %s: %s",
            task.id,
            cause,
            decision.reason_code,
            decision.reason_message,
            extra={"task_id": task.id, "job_id": task.job_id, "agent_id": task.agent_id},
        )

    # ---------------------------------------------------------------------------------------- the API
    def eviction_quota_job(self, job_id: str) -> dict[str, Any]:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                raise NotFound(f"job {job_id} not found or not active")
            return self._job_quota(job, self.clock() / 1000.0).to_wire()

    def eviction_quota_system(self) -> dict[str, Any]:
        with self.lock:
            quota = self._system_quota(self.clock() / 1000.0)
            return {"target": {"system": {}}, "quota": quota.quota, "message": quota.message}

    def eviction_quota_scope(
        self, tier: str | None = None, capacity_group: str | None = None
    ) -> dict[str, Any]:
        """A tier's or capacity group's quota: the system quota, capped by the sum over its jobs."""
        with self.lock:
            now_s = self.clock() / 1000.0
            if capacity_group is not None:
                if capacity_group not in self.capacity_groups:
                    raise NotFound(f"capacity group {capacity_group} not found")
                jobs = [j for j in self.jobs.values() if j.descriptor.capacityGroup == capacity_group]
                target: dict[str, Any] = {"capacityGroup": capacity_group}
            else:
                assert tier is not None
                jobs = [
                    j for j in self.jobs.values() if self.tier_of_group(j.descriptor.capacityGroup) == tier
                ]
                target = {"tier": TIER_WIRE[tier]}
            system = self._system_quota(now_s)
            total = sum(
                job_quota(self._job_view(j), self.eviction_ledger.for_job(j.id), now_s).quota for j in jobs
            )
            if system.quota <= total:
                return {"target": target, "quota": system.quota, "message": system.message}
            return {"target": target, "quota": total, "message": f"sum of the quotas of {len(jobs)} jobs"}

    def terminate_task(self, task_id: str, reason: str) -> dict[str, Any]:
        """Titus's TerminateTask: stop a service task if the budgets allow it (it is replaced at once).

        Batch tasks are refused: the system waits for them and never kills them.
        """
        now = self.clock()
        with self.lock:
            task = self.tasks.get(task_id)
            if task is None or not task.active:
                raise NotFound(f"task {task_id} not found or not active")
            job = self.jobs[task.job_id]
            if job.descriptor.batch is not None:
                refused = Decision(
                    False,
                    REASON_POLICY_VIOLATION,
                    "batch tasks are waited for, never evicted",
                    self._job_quota(job, now / 1000.0),
                )
                return refused.to_wire()
            if task.state not in states.TASK_ON_AGENT or task.kill_reason or task.migrating_to:
                refused = Decision(
                    False,
                    REASON_POLICY_VIOLATION,
                    f"task {task_id} is {task.state}"
                    + (" and already leaving" if task.kill_reason or task.migrating_to else ""),
                    self._job_quota(job, now / 1000.0),
                )
                return refused.to_wire()
            decision = self._eviction_decision(job, task, now)
            if not decision.allowed:
                self._eviction_refused(task, decision, f"terminate: {reason}")
                return decision.to_wire()
            writes: list[Write] = []
            self._record_eviction(task, now, f"terminate: {reason}")
            self._kill(task, states.REASON_KILLED, f"evicted: {reason or 'no reason given'}", now, writes)
            queued = self._queue(writes)
        self._wait(queued)
        self.schedule_wanted.set()
        return {"allowed": True, "reasonCode": "normal", "reasonMessage": "Terminated"}
