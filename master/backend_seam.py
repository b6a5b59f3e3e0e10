"""What a resource backend other than native (master/mesos) may do to the manager's state, and nothing
else: show offered agents, vouch for them, report them gone, apply their task updates, read desired sets.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from master.api.models import (
    TaskUpdate,
)
from master.core import states
from master.core.agent import Agent
from master.manager_base import ManagerBase
from master.scheduler.model import Resources
from master.store.base import Write

log = logging.getLogger("titus.master")


class BackendSeam(ManagerBase):
    """One part of `JobManager` (master/job_manager.py); see the module docstring."""

    def offered_agent(self, agent_id: str, free: Resources,
                      attributes: Mapping[str, str]) -> None:
        """Show the engine an externally managed agent with `free` resources on top of what our tasks use.

        Total = free + used keeps the engine's arithmetic (free = total - used) right while offers come
        and go.
        A new agent's instance group is created as for a registering agent, so tiers and lifecycles apply.
        """
        now = self.clock()
        with self.lock:
            agent = self.agents.get(agent_id)
            total = free.add(self._used(agent_id))
            writes: list[Write] = []
            if agent is None:
                agent = Agent(agent_id, total, dict(attributes), 0, now, now)
                stored = self._agent_lifecycles.get(agent_id)
                if stored is not None:
                    agent.lifecycle, agent.lifecycle_detail, agent.record_version = stored
                self.agents[agent_id] = agent
                self._instance_group_for(agent, writes)
            else:
                agent.resources, agent.lost, agent.gone = total, False, False
                agent.attributes = dict(attributes) or agent.attributes
                agent.last_heartbeat_ms = now
            self._full_pass = True
            pending = self._queue(writes)
        self._wait(pending)
        self.schedule_wanted.set()

    def keep_alive(self, agent_ids: Iterable[str]) -> None:
        """The resource manager vouches for these agents; the heartbeat timer must not declare them lost."""
        now = self.clock()
        with self.lock:
            for agent_id in agent_ids:
                agent = self.agents.get(agent_id)
                if agent is not None and not agent.lost:
                    agent.last_heartbeat_ms = now

    def agent_gone(self, agent_id: str) -> None:
        """The resource manager says the agent is gone: the next timer pass marks it lost, with its tasks."""
        with self.lock:
            agent = self.agents.get(agent_id)
            if agent is not None:
                agent.gone = True  # not merely silent: its tasks are lost, not Disconnected
                agent.last_heartbeat_ms = -self.settings.heartbeat_timeout_ms - 1

    def apply_updates(self, agent_id: str, updates: Iterable[TaskUpdate]) -> None:
        """Task status from the resource manager, through the same transitions as an agent's report."""
        now = self.clock()
        with self.lock:
            agent = self.agents.get(agent_id)
            if agent is None:
                return
            writes: list[Write] = []
            for update in updates:
                self._apply_update(agent, update, now, writes)
            pending = self._queue(writes)
        self._wait(pending)
        if writes:
            self.schedule_wanted.set()

    def desired_sets(self) -> dict[str, list[dict[str, Any]]]:
        """Per agent, the tasks it should hold (the same desired set a native agent polls for)."""
        with self.lock:
            out: dict[str, list[dict[str, Any]]] = {}
            for task in self.tasks.values():
                if task.agent_id is None or task.state not in states.TASK_ON_AGENT:
                    continue
                job = self.jobs[task.job_id]
                c = job.descriptor.container
                batch = job.descriptor.batch
                out.setdefault(task.agent_id, []).append({
                    "taskId": task.id, "jobId": task.job_id, "state": task.state, "image": c.image.reference,
                    "entryPoint": list(c.entryPoint), "command": list(c.command), "env": dict(c.env),
                    "resources": c.resources.to_json(),
                    "runtimeLimitSec": batch.runtimeLimitSec if batch else None,
                    "kill": task.state == states.KILL_INITIATED, "killGraceMs": self.settings.kill_grace_ms,
                    "applicationName": job.descriptor.applicationName,
                })
            return out

    def pending_count(self) -> int:
        with self.lock:
            return self.index.count(states.ACCEPTED)

    def agent_of(self, agent_id: str) -> Agent | None:
        with self.lock:
            return self.agents.get(agent_id)

    def load_record(self, record_id: str) -> tuple[dict[str, Any], int] | None:
        stored = self.store.get("framework", record_id)
        return None if stored is None else (stored.record, stored.version)

    def save_record(self, record_id: str, version: int, record: dict[str, Any]) -> None:
        """Durable before it returns, under the leader's epoch (a fenced master cannot overwrite it)."""
        with self.lock:
            pending = self._queue([Write("framework", record_id, version, record)])
        self._wait(pending)
