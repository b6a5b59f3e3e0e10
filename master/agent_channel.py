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
            known = running | set(reg.exitedTaskIds)  # exited ones get their real end in the next report
            mine = list(self.index.on_agent(reg.id))
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

    def log_upload(
        self, agent_id: str, task_id: str, session: int, stdout: str, stderr: str, found: bool
    ) -> None:
        """Accepted only for a task placed on this agent whose logs a reader is waiting for right now.

        So an agent cannot put text into another agent's task logs, and uploads nobody asked for (made-up
        task ids) are refused instead of piling up in memory: at most one upload per waiting reader is kept,
        and the reader takes it away.
        """
        with self.lock:
            agent = self._agent_session(agent_id, session)
            task = self.tasks.get(task_id)
            if task is None or task.agent_id != agent_id:
                raise Forbidden(f"task {task_id} is not assigned to agent {agent_id}")
            if task_id not in agent.log_requests:
                raise NotFound(f"no log request is pending for task {task_id}")
            self._log_uploads[task_id] = (stdout, stderr, found)
            self._logs_changed.notify_all()
