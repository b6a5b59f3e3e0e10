"""The master's view of one agent host: what it offers, who it is, and whether it may take work.

One `Agent` type for every backend: native agents register and heartbeat; the Mesos backend makes one
from offers. What runs there and what that uses is not kept here but in the task index (master/state.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from master.scheduler.model import Resources


@dataclass
class Agent:
    id: str
    resources: Resources
    attributes: dict[str, str]
    session_epoch: int
    registered_ms: int
    last_heartbeat_ms: int
    lost: bool = False  # silent past the heartbeat timeout: its tasks are Disconnected (or lost)
    gone: bool = False  # the resource manager (Mesos) says the host itself is gone
    version: int = 1  # bumped whenever the agent's desired set changes; agents long-poll on it
    host: dict[str, float] = field(default_factory=dict)
    lifecycle: str = "Active"  # an operator's or the capacity controller's phase-out of this one agent
    lifecycle_detail: str = ""
    record_version: int = 0  # version of the stored lifecycle record
    idle_since_ms: int | None = None  # when its last task left; None while it runs something
    # False for an agent known only from its tasks after a master restart: it must register within the
    # heartbeat timeout, or it is declared lost and its tasks are replaced.
    registered: bool = True
    # Tasks the agent runs that the master no longer wants there (it was declared lost and they were
    # replaced). The agent gets no new work until its reports show them gone: fencing by task id.
    stale_tasks: set[str] = field(default_factory=set)
    unavailable_reason: str = ""  # the agent's own word on why it takes no new work (e.g. memory short)

    @property
    def schedulable(self) -> bool:
        return self.registered and not self.lost and not self.stale_tasks and not self.unavailable_reason

    def to_wire(self, used: Resources, task_ids: list[str]) -> dict[str, Any]:
        def res(r: Resources) -> dict[str, Any]:
            return {
                "cpu": r.cpu,
                "memoryMB": r.memory_mb,
                "diskMB": r.disk_mb,
                "networkMbps": r.network_mbps,
                "gpu": r.gpu,
            }

        state = "Lost" if self.lost else "Registered" if self.registered else "AwaitingRegistration"
        return {
            "id": self.id,
            "state": state,
            "acceptingWork": self.schedulable,
            "unavailableReason": self.unavailable_reason,
            "staleTaskIds": sorted(self.stale_tasks),
            "lifecycle": "Active",
            "tier": self.attributes.get("tier", "flex"),
            "instanceGroupId": self.attributes.get("instanceGroup", "default"),
            "resources": res(self.resources),
            "used": res(used),
            "attributes": dict(self.attributes),
            "taskIds": task_ids,
            "lastHeartbeat": self.last_heartbeat_ms,
            "registeredAt": self.registered_ms,
            "host": dict(self.host),
        }
