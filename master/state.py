"""Indexed views of the active tasks, kept in step with every task write.

The manager changes a task and then queues its write; `TaskIndex.observe` is called at that one point
(`JobManager._task_write`), so every index below follows exactly what the store is told, and no reader has
to scan all tasks to learn what runs where. The indexes:

- `by_agent`: the tasks placed on each agent (Launched..KillInitiated): its desired set;
- `by_state`: task ids per state (the pending set is `by_state[Accepted]`);
- `used`: per agent, the resources its tasks hold, maintained by adding and subtracting, never re-summed;
- `job_counts`: per agent, how many tasks of each job run there (uniqueHost, exclusiveHost);
- `zone_counts`: per job, how many of its tasks run in each zone (zoneBalance);
- `group_used`: per capacity group, the resources its placed tasks hold;
- `agent_rev`: per agent, a counter bumped whenever any of the above changes for it, which the snapshot
  builder (master/snapshot.py) uses to rebuild only the agents that changed.

Every method is called under the manager's lock; the index itself holds no lock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from master.core import states
from master.core.entities import Task
from master.scheduler.model import Resources


@dataclass(frozen=True, slots=True)
class _Placed:
    """What the index last recorded for a task placed on an agent (to undo it on the next change)."""

    agent_id: str
    job_id: str
    group: str
    zone: str
    resources: Resources


class TaskIndex:
    def __init__(self) -> None:
        self.by_agent: dict[str, dict[str, Task]] = {}
        self.by_state: dict[str, set[str]] = {s: set() for s in states.TASK_ACTIVE}
        self.used: dict[str, Resources] = {}
        self.job_counts: dict[str, dict[str, int]] = {}
        self.zone_counts: dict[str, dict[str, int]] = {}
        self.group_used: dict[str, Resources] = {}
        self.agent_rev: dict[str, int] = {}
        self._state_of: dict[str, str] = {}
        self._placed: dict[str, _Placed] = {}

    # ---------------------------------------------------------------------------------------- updates
    def observe(self, task: Task, resources: Resources, group: str, zone: str) -> None:
        """Record the task as it is now (after a change, at the moment its write is queued)."""
        state = task.state
        old_state = self._state_of.get(task.id)
        if old_state != state:
            if old_state is not None:
                self.by_state[old_state].discard(task.id)
            if state in states.TASK_ACTIVE:
                self.by_state[state].add(task.id)
                self._state_of[task.id] = state
            else:
                self._state_of.pop(task.id, None)
        placed = self._placed.get(task.id)
        on_agent = task.agent_id is not None and state in states.TASK_ON_AGENT
        if placed is not None and (not on_agent or placed.agent_id != task.agent_id):
            self._unplace(task.id, placed)
            placed = None
        if on_agent and placed is None:
            assert task.agent_id is not None
            self._place(task, _Placed(task.agent_id, task.job_id, group, zone, resources))

    def forget(self, task_id: str) -> None:
        """The task left memory without a final write (never happens for placed tasks; kept for safety)."""
        old_state = self._state_of.pop(task_id, None)
        if old_state is not None:
            self.by_state[old_state].discard(task_id)
        placed = self._placed.get(task_id)
        if placed is not None:
            self._unplace(task_id, placed)

    def rezone(self, agent_id: str, zone: str) -> None:
        """An agent registered again with another zone: move its tasks' zone counts along."""
        for task_id in list(self.by_agent.get(agent_id, {})):
            placed = self._placed[task_id]
            if placed.zone != zone:
                task = self.by_agent[agent_id][task_id]
                self._unplace(task_id, placed)
                self._place(task, _Placed(agent_id, placed.job_id, placed.group, zone, placed.resources))

    def _place(self, task: Task, p: _Placed) -> None:
        self._placed[task.id] = p
        self.by_agent.setdefault(p.agent_id, {})[task.id] = task
        self.used[p.agent_id] = self.used.get(p.agent_id, Resources()).add(p.resources)
        jobs = self.job_counts.setdefault(p.agent_id, {})
        jobs[p.job_id] = jobs.get(p.job_id, 0) + 1
        zones = self.zone_counts.setdefault(p.job_id, {})
        zones[p.zone] = zones.get(p.zone, 0) + 1
        self.group_used[p.group] = self.group_used.get(p.group, Resources()).add(p.resources)
        self.agent_rev[p.agent_id] = self.agent_rev.get(p.agent_id, 0) + 1

    def _unplace(self, task_id: str, p: _Placed) -> None:
        del self._placed[task_id]
        mine = self.by_agent[p.agent_id]
        del mine[task_id]
        jobs = self.job_counts[p.agent_id]
        jobs[p.job_id] -= 1
        if not jobs[p.job_id]:
            del jobs[p.job_id]
        if mine:
            self.used[p.agent_id] = _tidy(self.used[p.agent_id].sub(p.resources))
        else:  # exactly zero, not the float residue of the sums
            del self.by_agent[p.agent_id], self.job_counts[p.agent_id], self.used[p.agent_id]
        zones = self.zone_counts[p.job_id]
        zones[p.zone] -= 1
        if not zones[p.zone]:
            del zones[p.zone]
        if not zones:
            del self.zone_counts[p.job_id]
        self.group_used[p.group] = _tidy(self.group_used[p.group].sub(p.resources))
        self.agent_rev[p.agent_id] = self.agent_rev.get(p.agent_id, 0) + 1

    # ---------------------------------------------------------------------------------------- queries
    def on_agent(self, agent_id: str) -> Iterable[Task]:
        return self.by_agent.get(agent_id, {}).values()

    def used_by(self, agent_id: str) -> Resources:
        return self.used.get(agent_id, Resources())

    def count(self, state: str) -> int:
        return len(self.by_state.get(state, ()))


def _tidy(r: Resources) -> Resources:
    """Round away the float residue that adding and subtracting fractional cpus leaves behind."""
    return Resources(round(r.cpu, 9), r.memory_mb, r.disk_mb, r.network_mbps, r.gpu)
