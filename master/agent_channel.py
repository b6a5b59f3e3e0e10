"""The agent channel: registration, desired-set long polls (one condition per agent), status reports.

Agents initiate every exchange (DESIGN.md #1). A registration reconciles what the agent runs with what the
master placed there; a report applies task updates through the same transitions as every other path.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from master.api.models import (
    AgentRegistration,
    AgentStatusReport,
)
from master.core import states
from master.core.agent import Agent
from master.manager_base import Forbidden, ManagerBase, NotFound, StaleSession
from master.reconcile import job_fault_policy, reconcile_agent
from master.scheduler.model import Resources
from master.store.base import Write

log = logging.getLogger("titus.master")


class AgentChannel(ManagerBase):
    """One part of `JobManager` (master/job_manager.py); see the module docstring."""

    def register_agent(self, reg: AgentRegistration) -> dict[str, Any]:
        now = self.clock()
        res = reg.resources
        with self.lock:
            session = (self.epoch << 32) | secrets.randbits(31)
            previous = self.agents.get(reg.id)
            agent = Agent(
                reg.id,
                Resources(float(res.cpu), res.memoryMB, res.diskMB, res.networkMbps, res.gpu),
                dict(reg.attributes),
                session,
                now,
                now,
                version=(previous.version + 1) if previous else 1,
            )
            self.agents[reg.id] = agent
            self._full_pass = True
            self.index.rezone(reg.id, agent.attributes.get("zone", ""))
            if previous is not None:
                agent.lifecycle, agent.lifecycle_detail = previous.lifecycle, previous.lifecycle_detail
                agent.record_version, agent.idle_since_ms = previous.record_version, previous.idle_since_ms
            elif reg.id in self._agent_lifecycles:
                agent.lifecycle, agent.lifecycle_detail, agent.record_version = self._agent_lifecycles[reg.id]
            writes: list[Write] = []
            self._instance_group_for(agent, writes)
            running = set(reg.runningTaskIds)
            # Pure: what the agent's word means for the tasks placed there (master/reconcile.py).
            verdict = reconcile_agent(list(self.index.on_agent(reg.id)), running, set(reg.exitedTaskIds))
            # What the agent runs that is not wanted there any more (its tasks were replaced while it was
            # away) must die before it gets new work.
            agent.stale_tasks = set(verdict.stale)
            if agent.stale_tasks:
                log.warning(
                    "agent %s runs %d stale task(s); they are killed at once and it gets no new work "
                    "until they are gone",
                    reg.id,
                    len(agent.stale_tasks),
                )
            for move in verdict.moves:
                task = self.tasks[move.task_id]
                task.machine.move(move.state, move.reason, move.message, now)
                if move.state == states.FINISHED:
                    self._finished(task, now, writes)
                    self._reconcile_job(self.jobs[task.job_id], now, writes)
                    continue
                if move.state == states.STARTED and task.started_ms is None:
                    task.started_ms = now
                writes.append(self._task_write(task))
            pending = self._queue(writes)
            self._wake_agent(reg.id)
        self._wait(pending)
        self.schedule_wanted.set()
        log.info(
            "agent %s registered (session %d, %d running)",
            reg.id,
            session,
            len(running),
            extra={"agent_id": reg.id},
        )
        return {
            "agentId": reg.id,
            "sessionEpoch": session,
            "heartbeatIntervalMs": 1000,
            "heartbeatTimeoutMs": self.settings.heartbeat_timeout_ms,
            # The agent remembers the cluster it joined and refuses orders from any other (agent/cluster.py).
            "clusterId": self.cluster_id,
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
                self._agent_condition(agent_id).wait_for(
                    lambda: agent.version != since or self.agents.get(agent_id) is not agent or self.closing,
                    timeout=wait_s,
                )
            agent = self._agent_session(agent_id, session)
            tasks = []
            for task in self.index.on_agent(agent_id):
                if task.state == states.DISCONNECTED:
                    continue  # registration settles these before any poll; never hand one out blind
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
                        "resubmitNumber": task.resubmit_number,
                        # The job opted into self-fencing (master/core/fault_policy.py, agent/fence.py).
                        "selfFence": job_fault_policy(job, self.settings.disconnect_defaults).self_fence,
                    }
                )
            for task_id in sorted(agent.stale_tasks):
                # Already replaced elsewhere: no grace, the overlap has lasted long enough.
                tasks.append({"taskId": task_id, "kill": True, "killGraceMs": 0, "stale": True})
            reads = [r for r in self._log_reads.values() if r["agentId"] == agent_id]
            return {"version": agent.version, "tasks": tasks, "logReads": reads}

    def agent_report(self, agent_id: str, report: AgentStatusReport) -> None:
        now = self.clock()
        self.observer.on_report()
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
                    task.record_usage(now, float(usage.cpuPct), float(usage.rssMB), usage.processes)
            became_schedulable = agent.schedulable and not was_schedulable
            if became_schedulable:
                self._full_pass = True  # capacity appeared: every pending task gets another chance
            pending = self._queue(writes)
        self._wait(pending)
        if writes or became_schedulable:
            self.schedule_wanted.set()

    def log_chunk(
        self, agent_id: str, task_id: str, session: int, request_id: str, chunk: dict[str, Any]
    ) -> None:
        """The agent's answer to one byte-range read, kept only for the read it answers: one this master
        asked of this very agent, for this task, that a reader still waits for. So an agent cannot put text
        into another agent's task logs (403), and answers nobody waits for (late, or for made-up reads) are
        refused (404) instead of piling up in memory; the reader takes the one kept answer away."""
        with self.lock:
            self._agent_session(agent_id, session)
            read = self._log_reads.get(request_id)
            if read is not None and (read["agentId"] != agent_id or read["taskId"] != task_id):
                raise Forbidden(f"log read {request_id} was not asked of agent {agent_id} for task {task_id}")
            if read is None:
                task = self.tasks.get(task_id)
                if task is None or task.agent_id != agent_id:
                    raise Forbidden(f"task {task_id} is not assigned to agent {agent_id}")
                raise NotFound(f"no log read {request_id} is pending for task {task_id}")
            self._log_chunks[request_id] = chunk
            self._logs_changed.notify_all()
