"""First-fit placement: the pure decision of which agent runs which pending task.

A stand-in for the bin-packing engine; it already has the engine's shape (plain data in, plain plan out,
no I/O) and the one property that matters most: an agent is never over-committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DIMENSIONS = ("cpu", "memory_mb", "disk_mb", "network_mbps")
_LABELS = {"cpu": "cpu", "memory_mb": "memory", "disk_mb": "disk", "network_mbps": "network"}


@dataclass(frozen=True)
class Resources:
    cpu: float
    memory_mb: int
    disk_mb: int
    network_mbps: int

    def fits_in(self, free: Resources) -> bool:
        return all(getattr(self, d) <= getattr(free, d) + 1e-9 for d in DIMENSIONS)

    def minus(self, other: Resources) -> Resources:
        return Resources(self.cpu - other.cpu, self.memory_mb - other.memory_mb,
                         self.disk_mb - other.disk_mb, self.network_mbps - other.network_mbps)

    def plus(self, other: Resources) -> Resources:
        return Resources(self.cpu + other.cpu, self.memory_mb + other.memory_mb,
                         self.disk_mb + other.disk_mb, self.network_mbps + other.network_mbps)

    def short_of(self, free: Resources) -> list[str]:
        return [_LABELS[d] for d in DIMENSIONS if getattr(self, d) > getattr(free, d) + 1e-9]


ZERO = Resources(0.0, 0, 0, 0)


@dataclass(frozen=True)
class PendingTask:
    task_id: str
    resources: Resources


@dataclass(frozen=True)
class AgentCapacity:
    agent_id: str
    free: Resources


@dataclass(frozen=True)
class Placement:
    assignments: dict[str, str]  # task id -> agent id
    unplaced: dict[str, str]  # task id -> why, in words a user can act on


def first_fit(tasks: Sequence[PendingTask], agents: Sequence[AgentCapacity]) -> Placement:
    free = {a.agent_id: a.free for a in agents}
    order = [a.agent_id for a in agents]
    assignments: dict[str, str] = {}
    unplaced: dict[str, str] = {}
    for task in tasks:
        chosen = next((aid for aid in order if task.resources.fits_in(free[aid])), None)
        if chosen is not None:
            free[chosen] = free[chosen].minus(task.resources)
            assignments[task.task_id] = chosen
            continue
        if not order:
            unplaced[task.task_id] = "no agents registered"
            continue
        shortages: dict[str, int] = {}
        for aid in order:
            for label in task.resources.short_of(free[aid]):
                shortages[label] = shortages.get(label, 0) + 1
        unplaced[task.task_id] = "; ".join(
            f"insufficient {label} on {count} agent{'s' if count != 1 else ''}"
            for label, count in sorted(shortages.items()))
    return Placement(assignments, unplaced)
