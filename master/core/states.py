"""Task and job state machines as tables.

Every legal move is listed with the reason it exists; `transition` refuses anything else and appends to
the entity's status history, so the history is the audit trail and the event source (DESIGN.md #5).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

# ------------------------------------------------------------------------------------------- task states
ACCEPTED: Final = "Accepted"
LAUNCHED: Final = "Launched"
START_INITIATED: Final = "StartInitiated"
STARTED: Final = "Started"
KILL_INITIATED: Final = "KillInitiated"
DISCONNECTED: Final = "Disconnected"
FINISHED: Final = "Finished"

# Titus's TaskState enum (titus_job_api.proto), in its order: Disconnected = 5 sits before Finished.
TASK_STATES: Final = (ACCEPTED, LAUNCHED, START_INITIATED, STARTED, KILL_INITIATED, DISCONNECTED, FINISHED)

TASK_TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    # Accepted: persisted, waiting for placement.
    ACCEPTED: frozenset({
        LAUNCHED,  # the scheduler placed it on an agent
        KILL_INITIATED,  # never used for unplaced tasks, kept so callers need no special case
        FINISHED,  # killed or scaled down before placement: nothing runs, so nothing to wait for
    }),
    # Launched: assigned to an agent, which will pick it up on its next poll.
    LAUNCHED: frozenset({
        START_INITIATED,  # the agent began creating the container
        STARTED,  # the agent's first report may already say running
        KILL_INITIATED,  # kill requested; the agent must confirm
        DISCONNECTED,  # the master stopped hearing from the agent: it may or may not have started it
        FINISHED,  # launch failed on the agent, or the agent was lost
    }),
    START_INITIATED: frozenset({STARTED, KILL_INITIATED, DISCONNECTED, FINISHED}),
    STARTED: frozenset({
        KILL_INITIATED,  # kill requested by a user, a scale-down or a runtime limit
        DISCONNECTED,  # the agent went silent: the task most likely still runs, we cannot tell
        FINISHED,  # the process exited, or the agent was lost
    }),
    KILL_INITIATED: frozenset({FINISHED}),  # only the agent (or loss of it) ends a kill
    # Disconnected: the agent holding it stopped reporting. The task keeps its slot (nothing replaces it)
    # until the job's disconnected timeout; the agent's return puts it back where it was.
    DISCONNECTED: frozenset({
        LAUNCHED,  # the agent came back and had not picked it up yet: it will now
        START_INITIATED,  # the agent came back while still starting it
        STARTED,  # the agent came back and runs it (or its end is in the next report)
        FINISHED,  # the timeout ran out (lost, replaced), a user killed it, or the agent came back without it
    }),
    FINISHED: frozenset(),  # terminal
}

#: States in which a task holds resources on an agent.
#: A Disconnected task still holds them: the agent may run it, and it counts until it is known to be gone.
TASK_ON_AGENT: Final = frozenset({LAUNCHED, START_INITIATED, STARTED, KILL_INITIATED, DISCONNECTED})
TASK_ACTIVE: Final = frozenset({ACCEPTED, *TASK_ON_AGENT})

# Reason codes (Titus's common set for Finished plus ours for the other states).
REASON_NORMAL: Final = "normal"
REASON_FAILED: Final = "failed"
REASON_KILLED: Final = "killed"
REASON_SCALED_DOWN: Final = "scaledDown"
REASON_STUCK: Final = "stuckInState"
REASON_RUNTIME_LIMIT: Final = "runtimeLimitExceeded"
REASON_LOST: Final = "lost"
REASON_INVALID: Final = "invalidRequest"
REASON_CRASHED: Final = "crashed"
REASON_LOCAL_ERROR: Final = "localSystemError"
REASON_TRANSIENT: Final = "transientSystemError"
REASON_DISCONNECTED: Final = "disconnected"  # ours: the reason of the Disconnected state itself

#: Ends the platform caused, not the task or its user: the agent or its host went away (lost), the platform
#: stopped the task on purpose (transientSystemError: agent or `titus dev` shutdown), or the agent failed
#: to run it (localSystemError). Always retried, at once, without using the user's retry budget
#: (docs/ARCHITECTURE.md has the full table).
PLATFORM_REASONS: Final = frozenset({REASON_LOST, REASON_TRANSIENT, REASON_LOCAL_ERROR})

#: Finished reasons that count as a failure for retry purposes (the user's budget decides).
RETRYABLE_REASONS: Final = frozenset({REASON_FAILED, REASON_CRASHED, REASON_STUCK, REASON_INVALID})

# -------------------------------------------------------------------------------------------- job states
JOB_ACCEPTED: Final = "Accepted"
JOB_KILL_INITIATED: Final = "KillInitiated"
JOB_FINISHED: Final = "Finished"
JOB_STATES: Final = (JOB_ACCEPTED, JOB_KILL_INITIATED, JOB_FINISHED)

JOB_TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    JOB_ACCEPTED: frozenset({
        JOB_KILL_INITIATED,  # a user killed the job; its tasks are being stopped
        JOB_FINISHED,  # a batch job whose tasks all ended
    }),
    JOB_KILL_INITIATED: frozenset({JOB_FINISHED}),  # the last task ended
    JOB_FINISHED: frozenset(),
}


class IllegalTransition(Exception):
    """A move the table does not allow; the API maps it to 409."""


@dataclass(frozen=True)
class Status:
    state: str
    reason_code: str
    reason_message: str
    timestamp_ms: int

    def to_json(self) -> dict[str, object]:
        return {"state": self.state, "reasonCode": self.reason_code, "reasonMessage": self.reason_message,
                "timestamp": self.timestamp_ms}

    @staticmethod
    def from_json(data: dict[str, object]) -> Status:
        return Status(str(data["state"]), str(data.get("reasonCode", "")), str(data.get("reasonMessage", "")),
                      int(data["timestamp"]))  # type: ignore[call-overload]


@dataclass
class StatusMachine:
    """Current status plus history; `table` decides which moves are legal."""

    table: dict[str, frozenset[str]]
    status: Status
    history: list[Status] = field(default_factory=list)

    def can(self, state: str) -> bool:
        return state in self.table[self.status.state]

    def move(self, state: str, reason_code: str, reason_message: str, now_ms: int) -> Status:
        if not self.can(state):
            raise IllegalTransition(f"cannot move from {self.status.state} to {state}")
        self.history.append(self.status)
        self.status = Status(state, reason_code, reason_message, now_ms)
        return self.status
