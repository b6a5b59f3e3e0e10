"""Where the leader's resources come from, and how placed work reaches the hosts.

Everything above placement (API, store, state machines, capacity groups, tiers, why-pending) is the same
whatever the backend. Two backends exist:

- native: our agents register, heartbeat and long-poll their desired sets (DESIGN.md #1). The backend
  itself does nothing: `JobManager` already is that channel.
- mesos (master/mesos/): the Mesos master offers resources. Each agent that has offers becomes an `Agent`
  whose free resources are what is offered, the pure engine places tasks exactly as for native agents, and
  the backend turns the desired sets the engine changed into ACCEPT and KILL calls.

The helpers below are the only way a backend other than native touches the manager's state; they keep
the manager's rules (one lock, writes queued under it, durability awaited outside it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from master.api.models import TaskUpdate
from master.core import states
from master.scheduler.model import Resources
from master.store.base import Write

if TYPE_CHECKING:
    from master.job_manager import Agent, JobManager

log = logging.getLogger("titus.master.backend")


class ResourceBackend(Protocol):
    def start(self) -> None:
        """Begin talking to the resource manager; called once the manager holds leadership."""

    def stop(self) -> None:
        """Stop at once (fenced or shutting down); running tasks are left for the next leader."""

    def agent_changed(self, agent_id: str) -> None:
        """The agent's desired set changed. Called under the manager's lock: must not block or do I/O."""


class NativeBackend:
    """Our own agents: they pull their desired sets, so there is nothing to push."""

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def agent_changed(self, agent_id: str) -> None:
        pass


_IMPLEMENTS: type[ResourceBackend] = NativeBackend


def offered_agent(manager: JobManager, agent_id: str, free: Resources,
                  attributes: Mapping[str, str]) -> None:
    """Show the engine an externally managed agent with `free` resources on top of what our tasks use there.

    Total = free + used keeps the engine's arithmetic (free = total - used) right while offers come and go.
    A new agent's instance group is created as for a registering agent, so tiers and lifecycles apply.
    """
    from master.job_manager import Agent

    now = manager.clock()
    with manager.lock:
        agent = manager.agents.get(agent_id)
        total = free.add(manager._used(agent_id))
        writes: list[Write] = []
        if agent is None:
            agent = Agent(agent_id, total, dict(attributes), 0, now, now)
            stored = manager._agent_lifecycles.get(agent_id)
            if stored is not None:
                agent.lifecycle, agent.lifecycle_detail, agent.record_version = stored
            manager.agents[agent_id] = agent
            manager._instance_group_for(agent, writes)
        else:
            agent.resources, agent.lost = total, False
            agent.attributes = dict(attributes) or agent.attributes
            agent.last_heartbeat_ms = now
        manager._full_pass = True
        pending = manager._queue(writes)
    manager._wait(pending)
    manager.schedule_wanted.set()


def keep_alive(manager: JobManager, agent_ids: Iterable[str]) -> None:
    """The resource manager vouches for these agents; the heartbeat timer must not declare them lost."""
    now = manager.clock()
    with manager.lock:
        for agent_id in agent_ids:
            agent = manager.agents.get(agent_id)
            if agent is not None and not agent.lost:
                agent.last_heartbeat_ms = now


def agent_gone(manager: JobManager, agent_id: str) -> None:
    """The resource manager says the agent is gone: the next timer pass marks it lost, with its tasks."""
    with manager.lock:
        agent = manager.agents.get(agent_id)
        if agent is not None:
            agent.last_heartbeat_ms = -manager.settings.heartbeat_timeout_ms - 1


def apply_updates(manager: JobManager, agent_id: str, updates: Iterable[TaskUpdate]) -> None:
    """Task status from the resource manager, through the same transitions as an agent's report."""
    now = manager.clock()
    with manager.lock:
        agent = manager.agents.get(agent_id)
        if agent is None:
            return
        writes: list[Write] = []
        for update in updates:
            manager._apply_update(agent, update, now, writes)
        pending = manager._queue(writes)
    manager._wait(pending)
    if writes:
        manager.schedule_wanted.set()


def snapshot(manager: JobManager) -> dict[str, list[dict[str, Any]]]:
    """Per agent, the tasks it should hold (the same desired set a native agent polls for)."""
    with manager.lock:
        out: dict[str, list[dict[str, Any]]] = {}
        for task in manager.tasks.values():
            if task.agent_id is None or task.state not in states.TASK_ON_AGENT:
                continue
            job = manager.jobs[task.job_id]
            c = job.descriptor.container
            batch = job.descriptor.batch
            out.setdefault(task.agent_id, []).append({
                "taskId": task.id, "jobId": task.job_id, "state": task.state, "image": c.image.reference,
                "entryPoint": list(c.entryPoint), "command": list(c.command), "env": dict(c.env),
                "resources": c.resources.to_json(),
                "runtimeLimitSec": batch.runtimeLimitSec if batch else None,
                "kill": task.state == states.KILL_INITIATED, "killGraceMs": manager.settings.kill_grace_ms,
                "applicationName": job.descriptor.applicationName,
            })
        return out


def pending_count(manager: JobManager) -> int:
    with manager.lock:
        return sum(1 for t in manager.tasks.values() if t.state == states.ACCEPTED)


def agent_of(manager: JobManager, agent_id: str) -> Agent | None:
    with manager.lock:
        return manager.agents.get(agent_id)


def load_record(manager: JobManager, record_id: str) -> tuple[dict[str, Any], int] | None:
    stored = manager.store.get("framework", record_id)
    return None if stored is None else (stored.record, stored.version)


def save_record(manager: JobManager, record_id: str, version: int, record: dict[str, Any]) -> None:
    """Durable before it returns, under the leader's epoch (a fenced master cannot overwrite it)."""
    with manager.lock:
        pending = manager._queue([Write("framework", record_id, version, record)])
    manager._wait(pending)
