"""The timer pass: what no event reports (silent agents and the Disconnected timeouts of their tasks,
stuck launches, runtime limits, retry delays that came due, drains of phased-out agents); deadlines come
from the heaps in master/timers.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from master.core import states
from master.core.entities import Task
from master.eviction import REASON_SYSTEM_BUDGET, EvictionService
from master.reconcile import Move, disconnected_expired, on_agent_silent
from master.store.base import Write

log = logging.getLogger("titus.master")


class TimerPass(EvictionService):
    """One part of `JobManager` (master/job_manager.py); see the module docstring."""

    def _drain(self, now: int, writes: list[Write]) -> None:
        """Move service tasks off PhasedOut agents, each move allowed by the eviction service first.

        A move is make-before-break: a replacement is created and the old task keeps running (and keeps
        counting towards desired) until the replacement reports Started, then it is stopped. A task being
        moved no longer counts as healthy, so a job's availability budget bounds its concurrent moves, and
        its rate bounds how many start per interval (master/eviction.py). Batch tasks are left to finish
        where they are: waited for, never killed.
        """
        draining = [a.id for a in self.agents.values() if not a.lost and self.agent_lifecycle(a) != "Active"]
        blocked: set[str] = set()  # jobs whose quota is 0 this tick: their other tasks need no decision
        for agent_id in draining:
            for task in list(self.index.on_agent(agent_id)):
                job = self.jobs.get(task.job_id)
                if (
                    task.state != states.STARTED
                    or task.kill_reason
                    or task.migrating_to
                    or job is None
                    or job.descriptor.service is None
                    or job.state != states.JOB_ACCEPTED
                    or job.id in blocked
                ):
                    continue
                cause = f"drain of phased-out agent {agent_id}"
                decision = self._eviction_decision(job, task, now)
                if not decision.allowed:
                    self._eviction_refused(task, decision, cause)
                    if decision.reason_code == REASON_SYSTEM_BUDGET:
                        return  # the system bucket is empty: no job may lose a task this tick
                    if decision.quota.quota < 1:
                        blocked.add(job.id)
                    continue
                self._record_eviction(task, now, cause)
                replacement = self._new_task(job, task.index, now, writes, replaces=task)
                replacement.retries_done = task.retries_done  # a move is the platform's, not a retry
                replacement.system_retries = task.system_retries + 1
                task.migrating_to = replacement.id
                writes.append(self._task_write(task))
                log.info(
                    "draining %s from %s: replacement %s",
                    task.id,
                    agent_id,
                    replacement.id,
                    extra={"task_id": task.id, "job_id": job.id, "agent_id": agent_id},
                )

    def tick(self) -> None:
        """Timers: lost agents, runtime limits, stuck launches, retry delays that came due."""
        now = self.clock()
        with self.lock:
            if self.fenced:
                return
            writes: list[Write] = []
            for agent in self.agents.values():
                if not agent.lost and now - agent.last_heartbeat_ms > self.settings.heartbeat_timeout_ms:
                    agent.lost = True
                    self._full_pass = True
                    log.warning(
                        "agent %s lost: no heartbeat for %d ms; its tasks are Disconnected",
                        agent.id,
                        now - agent.last_heartbeat_ms,
                        extra={"agent_id": agent.id},
                    )
                    why = f"no heartbeat from agent {agent.id} for {now - agent.last_heartbeat_ms} ms"
                    self._agent_silent(agent.id, why, now, writes, gone=agent.gone)
            # A new leader knows only the agents that registered with it: tasks on an agent that has not
            # come back within a heartbeat timeout of the takeover are treated as if it had stopped beating.
            if now - self.leading_since_ms > self.settings.heartbeat_timeout_ms:
                for agent_id in [a for a in self.index.by_agent if a not in self.agents]:
                    why = f"agent {agent_id} did not register with the new leader"
                    self._agent_silent(agent_id, why, now, writes)
            # Disconnected tasks whose job's timeout ran out are lost and replaced.
            defaults = self.settings.disconnect_defaults
            for task_id in list(self.index.by_state[states.DISCONNECTED]):
                task = self.tasks[task_id]
                expired = disconnected_expired(self.jobs[task.job_id], task, now, defaults)
                if expired is not None:
                    self._apply_move(task, expired, now, writes)
            # Deadlines come from heaps (master/timers.py): only tasks whose time is up are looked at.
            for task_id in self.timers.due("runtime", now, 0, self._runtime_entry_applies):
                task = self.tasks[task_id]
                batch = self.jobs[task.job_id].descriptor.batch
                assert batch is not None
                self._kill(
                    task,
                    states.REASON_RUNTIME_LIMIT,
                    f"ran longer than runtimeLimitSec={batch.runtimeLimitSec}",
                    now,
                    writes,
                )
            launch_timeout = self.settings.launch_timeout_ms
            launched = self._state_entry(states.LAUNCHED)
            for task_id in self.timers.due("launched", now, launch_timeout, launched):
                task = self.tasks[task_id]
                task.machine.move(
                    states.FINISHED,
                    states.REASON_STUCK,
                    f"no progress from Launched in {launch_timeout} ms",
                    now,
                )
                self._bump_agent(task.agent_id)
                self._finished(task, now, writes)
                self._reconcile_job(self.jobs[task.job_id], now, writes)
            for task_id in self.timers.due(
                "start_initiated", now, launch_timeout, self._state_entry(states.START_INITIATED)
            ):
                # The agent has it, so it must confirm the end: a replacement must not start meanwhile.
                self._kill(
                    self.tasks[task_id],
                    states.REASON_STUCK,
                    f"no progress from StartInitiated in {launch_timeout} ms",
                    now,
                    writes,
                )
            self._drain(now, writes)
            for task_id, due in list(self._delayed.items()):
                if due <= now:
                    del self._delayed[task_id]
                    self._new_pending.add(task_id)
                    self.schedule_wanted.set()
            queued = self._queue(writes)
        self._wait(queued)
        if writes:
            self.schedule_wanted.set()

    def _agent_silent(
        self, agent_id: str, why: str, now: int, writes: list[Write], gone: bool = False
    ) -> None:
        """Its tasks become Disconnected, or end, per master/reconcile.py. `gone`: the resource manager
        (Mesos) says the agent itself is gone, so nothing of it can come back: its tasks are lost now."""
        defaults = self.settings.disconnect_defaults
        for task in list(self.index.on_agent(agent_id)):
            if gone:
                reason = task.kill_reason or states.REASON_LOST
                move: Move | None = Move(task.id, states.FINISHED, reason, f"agent {agent_id} is gone")
            else:
                move = on_agent_silent(self.jobs[task.job_id], task, defaults, why)
            if move is not None:
                self._apply_move(task, move, now, writes)

    def _apply_move(self, task: Task, move: Move, now: int, writes: list[Write]) -> None:
        task.machine.move(move.state, move.reason, move.message, now)
        if move.state == states.FINISHED:
            self._finished(task, now, writes)
            self._reconcile_job(self.jobs[task.job_id], now, writes)
        else:
            writes.append(self._task_write(task))

    def _runtime_entry_applies(self, deadline: int, task_id: str) -> bool:
        task = self.tasks.get(task_id)
        if task is None or task.state != states.STARTED or task.kill_reason or task.started_ms is None:
            return False
        batch = self.jobs[task.job_id].descriptor.batch
        return batch is not None and task.started_ms + batch.runtimeLimitSec * 1000 == deadline

    def _state_entry(self, state: str) -> Callable[[int, str], bool]:
        def applies(since: int, task_id: str) -> bool:
            task = self.tasks.get(task_id)
            return (
                task is not None
                and task.state == state
                and not (state == states.START_INITIATED and task.kill_reason)
                and task.machine.status.timestamp_ms == since
            )

        return applies
