"""Capacity groups (Titus ApplicationSLA) and instance groups (agent pools, one per ASG).

A job's capacity group decides its tier and the reservation its tasks draw on; an instance group's tier
and lifecycle decide which tasks its agents may take. Both are small, change rarely, and are written
through the JobManager's store with its epoch, under its lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from master.api.models import ApplicationSla
from master.scheduler.model import Resources

DEFAULT_GROUP = "DEFAULT"
LIFECYCLES = ("Active", "PhasedOut", "Removable")


@dataclass
class CapacityGroup:
    sla: ApplicationSla
    version: int = 0

    @property
    def name(self) -> str:
        return self.sla.appName

    @property
    def tier(self) -> str:
        return self.sla.tier.lower()

    @property
    def reservation(self) -> Resources:
        d = self.sla.resourceDimension
        return Resources(float(d.cpu), d.memoryMB, d.diskMB, d.networkMbps, d.gpu).scale(
            self.sla.instanceCount
        )

    def to_wire(self) -> dict[str, Any]:
        wire = self.sla.to_json()
        wire["tier"] = self.tier
        return wire


def default_group() -> CapacityGroup:
    """DEFAULT always exists: flex tier, no reservation, as in Titus."""
    return CapacityGroup(
        ApplicationSla.model_validate(
            {
                "appName": DEFAULT_GROUP,
                "tier": "flex",
                "instanceCount": 0,
                "resourceDimension": {"cpu": 1, "memoryMB": 1, "diskMB": 1, "networkMbps": 1},
            }
        )
    )


@dataclass
class InstanceGroup:
    id: str
    tier: str
    lifecycle: str = "Active"
    detail: str = ""
    version: int = 0

    def to_record(self) -> dict[str, Any]:
        return {"id": self.id, "tier": self.tier, "lifecycleState": self.lifecycle, "detail": self.detail}

    @staticmethod
    def from_record(r: dict[str, Any], version: int) -> InstanceGroup:
        return InstanceGroup(r["id"], r["tier"], r["lifecycleState"], r.get("detail", ""), version)
