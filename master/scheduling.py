"""Scheduling passes: the engine's request from the indexes, the pure engine outside the lock, the plan
applied under it and checked against the state as it is then.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from master.core import states
from master.core.agent import Agent
from master.core.entities import Task
from master.manager_base import ManagerBase
from master.scheduler import model as sched
from master.scheduler.model import Resources
from master.scheduler.placement import schedule as place
from master.snapshot import job_resources
from master.store.base import Write

log = logging.getLogger("titus.master")


class Scheduling(ManagerBase):
    """One part of `JobManager` (master/job_manager.py); see the module docstring."""

    def schedule_once(self) -> int:
        """One placement pass through the pure engine; returns how many tasks were placed."""
        started = time.perf_counter()
        placed = self._schedule_pass()
        if placed >= 0:
            self.observer.on_pass(time.perf_counter() - started, placed)
        return max(placed, 0)

    def _schedule_pass(self) -> int:
        """-1 when there was nothing to do (not counted as a pass)."""
        now = self.clock()
        with self.lock:
            if self.fenced:
                return -1
            if self._full_pass:
                candidates: Iterable[Task] = (self.tasks[i] for i in self.index.by_state[states.ACCEPTED])
            else:
                candidates = (self.tasks[i] for i in self._new_pending if i in self.tasks)
            pending = [t for t in candidates if t.state == states.ACCEPTED and t.not_before_ms <= now]
            if self._full_pass:
                self._infeasible.clear()  # capacity changed: every verdict is open again
            self._full_pass = False
            self._new_pending.clear()
            pending = self._skip_known_infeasible(pending)
            if not pending:
                return -1
            pending.sort(key=lambda t: (t.machine.status.timestamp_ms, t.job_id, t.index))
            request = self._schedule_request(pending, now)
        # The engine runs on the immutable snapshot outside the lock (Nomad's plan/apply split): requests,
        # heartbeats and reports go on meanwhile. Only this thread places, so what changed in the meantime
        # can only be tasks that ended or were killed, agents that went away or shrank, lifecycles that
        # changed: each assignment is checked against the state as it is now, and one that no longer
        # holds is dropped and its task tried again in the next pass.
        reply = place(request)
        with self.lock:
            if self.fenced:
                return -1
            writes: list[Write] = []
            touched: set[str] = set()
            placed = 0
            for a in reply.assignments:
                task = self.tasks.get(a.task_id)
                if task is None or task.state != states.ACCEPTED:
                    continue
                if not self._still_fits(task, a.agent_id):
                    self._new_pending.add(task.id)
                    self.schedule_wanted.set()
                    continue
                task.agent_id = a.agent_id
                task.pending_reason, task.pending_detail = "", None
                task.machine.move(states.LAUNCHED, "normal", f"placed on {a.agent_id}", now)
                writes.append(self._task_write(task))
                touched.add(a.agent_id)
                self.agents[a.agent_id].idle_since_ms = None
                placed += 1
            # Verdicts are remembered only from a pass that placed nothing while capacity stood still.
            remember = not reply.assignments and not self._full_pass
            if reply.assignments:
                self._infeasible.clear()
            for task_id, why in reply.unplaced.items():
                unplaced = self.tasks.get(task_id)
                if unplaced is not None:
                    unplaced.pending_reason, unplaced.pending_detail = why.summary, why
                    shape = self._shape(unplaced)
                    if remember and shape is not None and why.task_reason is None:
                        self._infeasible[shape] = (unplaced.pending_reason, why)
            queued = self._queue(writes)
        self._wait(queued)
        with self.lock:
            for agent_id in touched:  # hand work to agents only once it is durable
                self._bump_agent(agent_id)
        return placed

    def _shape(self, task: Task) -> tuple[Resources, str] | None:
        """What decides whether a task fits anywhere, for tasks whose job has no hard constraint."""
        job = self.jobs[task.job_id]
        if job.descriptor.container.hardConstraints.constraints:
            return None  # uniqueHost, zoneBalance...: the answer depends on the job's own tasks
        return job_resources(job), job.descriptor.capacityGroup

    def _skip_known_infeasible(self, pending: list[Task]) -> list[Task]:
        """Tasks shaped like one the engine could not place, with no capacity change since, cannot be
        placed either (placements only take room; anything that frees room or adds agents sets
        `_full_pass`, which clears these verdicts): they get the same reason without an engine call. This
        is what keeps a growing backlog of unplaceable work from costing every submission an O(agents)
        pass (Nomad's blocked evaluations work the same way)."""
        if not self._infeasible:
            return pending
        out = []
        for t in pending:
            shape = self._shape(t)
            known = self._infeasible.get(shape) if shape is not None else None
            if known is None:
                out.append(t)
            else:
                t.pending_reason, t.pending_detail = known
        return out

    def _still_fits(self, task: Task, agent_id: str) -> bool:
        """An assignment made on the snapshot still holds: the agent takes work and has room for the task."""
        agent = self.agents.get(agent_id)
        if agent is None or not agent.schedulable or self.agent_lifecycle(agent) != "Active":
            return False
        free = agent.resources.sub(self.index.used_by(agent_id))
        return job_resources(self.jobs[task.job_id]).fits(free)

    def _schedule_request(self, pending: list[Task], now: int) -> sched.ScheduleRequest:
        """The cluster as the engine's plain data (DESIGN.md #6), from the indexes and the snapshot cache."""

        def tier_of(a: Agent) -> str:
            group = self.instance_groups.get(a.attributes.get("instanceGroup", "default"))
            return group.tier if group is not None else a.attributes.get("tier", "flex")

        agents = self.snapshots.agent_views(
            self.agents.values(), self.index, self.agent_lifecycle, tier_of, self.jobs
        )
        tasks = self.snapshots.pending_tasks(pending, self.jobs, self.tier_of_group)
        # Copies: the engine reads them outside the lock while tasks keep ending.
        zone_counts = {
            job_id: dict(self.index.zone_counts[job_id])
            for job_id in {t.job_id for t in pending}
            if job_id in self.index.zone_counts
        }
        groups = [
            sched.CapacityGroupView(
                g.name,
                "critical" if g.tier == "critical" else "flex",
                g.reservation,
                self.index.group_used.get(g.name, sched.Resources()),
            )
            for g in self.capacity_groups.values()
        ]
        return sched.ScheduleRequest(
            tasks=tasks, agents=agents, capacity_groups=groups, job_zone_counts=zone_counts, now=now / 1000
        )
