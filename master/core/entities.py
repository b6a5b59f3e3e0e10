"""Jobs and tasks as the master holds them: plain data with a versioned record form for the store.

Their wire form (Titus's `Job` and `Task` messages) is master/api/mapper.py's business, not theirs.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from master.api.models import STORED, JobDescriptor
from master.core import states
from master.core.states import Status, StatusMachine
from master.scheduler.model import PendingReason

TAIL_LIMIT = 16_384  # bytes of each stream kept with a finished task, so logs outlive the agent


@dataclass
class Job:
    id: str
    descriptor: JobDescriptor
    machine: StatusMachine
    created_ms: int
    version: int = 0  # version of the stored record; 0 = not stored yet
    idempotency_key: str | None = None
    _descriptor_json: tuple[JobDescriptor, dict[str, Any]] | None = field(
        default=None, repr=False, compare=False
    )

    @property
    def state(self) -> str:
        return self.machine.status.state

    @property
    def is_batch(self) -> bool:
        return self.descriptor.batch is not None

    def descriptor_json(self) -> dict[str, Any]:
        """The spec as JSON, computed once per descriptor (it is frozen; a change replaces it)."""
        cached = self._descriptor_json
        if cached is None or cached[0] is not self.descriptor:
            cached = self._descriptor_json = (self.descriptor, self.descriptor.to_json())
        return cached[1]

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "jobDescriptor": self.descriptor_json(),
            "status": self.machine.status.to_json(),
            "statusHistory": [s.to_json() for s in self.machine.history],
            "createdMs": self.created_ms,
            "idempotencyKey": self.idempotency_key,
        }

    @staticmethod
    def from_record(record: dict[str, Any], version: int) -> Job:
        machine = StatusMachine(
            states.JOB_TRANSITIONS,
            Status.from_json(record["status"]),
            [Status.from_json(s) for s in record["statusHistory"]],
        )
        return Job(
            record["id"],
            JobDescriptor.model_validate(record["jobDescriptor"], context=STORED),
            machine,
            record["createdMs"],
            version,
            record.get("idempotencyKey"),
        )


#: Usage samples kept per task, at most one per USAGE_SAMPLE_MS: 360 x 5 s, the last 30 minutes.
USAGE_SAMPLES = 360
USAGE_SAMPLE_MS = 5_000


@dataclass
class Task:
    id: str
    job_id: str
    index: int  # batch: the slot 0..size-1; service: a creation counter, for display only
    machine: StatusMachine
    retries_done: int = 0
    original_id: str = ""
    resubmit_of: str = ""
    agent_id: str | None = None
    not_before_ms: int = 0  # retry delay: the scheduler leaves the task alone until then
    kill_reason: str = ""  # the reason the task will finish with once the agent confirms a kill
    replace: bool = True  # False when a kill shrank the job, so nothing may take its place
    exit_code: int | None = None
    started_ms: int | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    version: int = 0
    usage: dict[str, float] = field(default_factory=dict)
    #: (at_ms, cpuPct, rssMB, processes), one sample per USAGE_SAMPLE_MS at most: the console's usage over
    #: time. In memory only: usage is not state worth a store write a second per task, so a new leader
    #: starts the history afresh.
    usage_history: deque[tuple[int, float, float, int]] = field(
        default_factory=lambda: deque(maxlen=USAGE_SAMPLES), repr=False, compare=False
    )
    pending_reason: str = ""
    #: The engine's verdict behind pending_reason (agents excluded per reason), for the scheduling result.
    pending_detail: PendingReason | None = field(default=None, repr=False, compare=False)
    migrating_to: str = ""  # drain: the replacement that must start before this task is stopped
    evicted_ms: int | None = None  # when the eviction service allowed stopping it (rebuilds the history)
    predecessor_evicted_ms: int | None = None  # the same, for the task this one replaces
    attributes: dict[str, str] = field(default_factory=dict)  # Titus's user-defined task attributes
    moved_from: str = ""  # MoveTask: the job this task was moved from ("task.movedFromJob")
    # Resubmits caused by the platform (lost, transientSystemError, localSystemError): they do not count
    # against the user's retry budget, which `retries_done` is (master/core/states.py PLATFORM_REASONS).
    system_retries: int = 0

    def record_usage(self, at_ms: int, cpu_pct: float, rss_mb: float, processes: int) -> None:
        """The latest usage, and a sample of it for the history when the last one is USAGE_SAMPLE_MS old."""
        self.usage = {"cpuPct": cpu_pct, "rssMB": rss_mb, "processes": processes, "timestamp": at_ms}
        if not self.usage_history or at_ms - self.usage_history[-1][0] >= USAGE_SAMPLE_MS:
            self.usage_history.append((at_ms, cpu_pct, rss_mb, processes))

    @property
    def resubmit_number(self) -> int:
        """Every resubmit in this task's chain, the user's and the platform's (Titus's resubmitNumber)."""
        return self.retries_done + self.system_retries

    @property
    def state(self) -> str:
        return self.machine.status.state

    @property
    def active(self) -> bool:
        return self.state != states.FINISHED

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "jobId": self.job_id,
            "index": self.index,
            "status": self.machine.status.to_json(),
            "statusHistory": [s.to_json() for s in self.machine.history],
            "retriesDone": self.retries_done,
            "originalId": self.original_id,
            "resubmitOf": self.resubmit_of,
            "agentId": self.agent_id,
            "notBeforeMs": self.not_before_ms,
            "killReason": self.kill_reason,
            "replace": self.replace,
            "exitCode": self.exit_code,
            "startedMs": self.started_ms,
            "stdoutTail": self.stdout_tail,
            "stderrTail": self.stderr_tail,
            "migratingTo": self.migrating_to,
            "evictedMs": self.evicted_ms,
            "predecessorEvictedMs": self.predecessor_evicted_ms,
            "attributes": self.attributes,
            "movedFromJob": self.moved_from,
            "systemRetries": self.system_retries,
        }

    @staticmethod
    def from_record(r: dict[str, Any], version: int) -> Task:
        machine = StatusMachine(
            states.TASK_TRANSITIONS,
            Status.from_json(r["status"]),
            [Status.from_json(s) for s in r["statusHistory"]],
        )
        return Task(
            r["id"],
            r["jobId"],
            r["index"],
            machine,
            r["retriesDone"],
            r["originalId"],
            r["resubmitOf"],
            r["agentId"],
            r["notBeforeMs"],
            r["killReason"],
            r["replace"],
            r["exitCode"],
            r["startedMs"],
            r["stdoutTail"],
            r["stderrTail"],
            version,
            migrating_to=r.get("migratingTo", ""),
            evicted_ms=r.get("evictedMs"),
            predecessor_evicted_ms=r.get("predecessorEvictedMs"),
            attributes=dict(r.get("attributes") or {}),
            moved_from=str(r.get("movedFromJob") or ""),
            system_retries=r.get("systemRetries", 0),
        )
