"""The placement engine: pure decisions about which agent runs which pending task.

`schedule(request) -> reply` takes plain data and performs no I/O; the master's scheduling loop builds
the request from its stores and carries out the reply.
"""

from master.scheduler.constraints import KNOWN_CONSTRAINTS, validate_constraints
from master.scheduler.model import (
    AgentView,
    Assignment,
    CapacityGroupView,
    FitnessWeights,
    PendingReason,
    PendingTask,
    Resources,
    ScheduleReply,
    ScheduleRequest,
)
from master.scheduler.placement import schedule

__all__ = [
    "KNOWN_CONSTRAINTS",
    "AgentView",
    "Assignment",
    "CapacityGroupView",
    "FitnessWeights",
    "PendingReason",
    "PendingTask",
    "Resources",
    "ScheduleReply",
    "ScheduleRequest",
    "schedule",
    "validate_constraints",
]
