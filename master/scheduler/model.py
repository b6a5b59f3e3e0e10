"""Plain data the placement engine takes and returns.

The engine is a pure function of these values (and `now`), so the API, the store and later a Mesos
offer adapter can all build a `ScheduleRequest` from whatever they hold and carry out the reply
themselves. Everything is frozen so a request can be shared with a test or a benchmark without fear
that one pass mutates the next one's input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

Tier = Literal["critical", "flex"]
Lifecycle = Literal["Active", "PhasedOut", "Removable"]

TIER_CRITICAL: Final = "critical"
TIER_FLEX: Final = "flex"
LIFECYCLE_ACTIVE: Final = "Active"

#: Names of the resource dimensions, in the order reasons are reported.
DIMENSIONS: Final = ("cpu", "memory", "disk", "network", "gpu")


@dataclass(frozen=True, slots=True)
class Resources:
    """An amount of every schedulable dimension; cpu is fractional, the rest are whole units."""

    cpu: float = 0.0
    memory_mb: int = 0
    disk_mb: int = 0
    network_mbps: int = 0
    gpu: int = 0

    def fits(self, free: Resources) -> bool:
        """True when this amount fits in `free` on every dimension (so nothing is ever over-committed)."""
        return (
            self.cpu <= free.cpu + 1e-9
            and self.memory_mb <= free.memory_mb
            and self.disk_mb <= free.disk_mb
            and self.network_mbps <= free.network_mbps
            and self.gpu <= free.gpu
        )

    def add(self, other: Resources) -> Resources:
        return Resources(
            self.cpu + other.cpu,
            self.memory_mb + other.memory_mb,
            self.disk_mb + other.disk_mb,
            self.network_mbps + other.network_mbps,
            self.gpu + other.gpu,
        )

    def sub(self, other: Resources) -> Resources:
        return Resources(
            self.cpu - other.cpu,
            self.memory_mb - other.memory_mb,
            self.disk_mb - other.disk_mb,
            self.network_mbps - other.network_mbps,
            self.gpu - other.gpu,
        )

    def scale(self, factor: int) -> Resources:
        """`factor` copies of this amount: a capacity group reserves resourceDimension x instanceCount."""
        return Resources(
            self.cpu * factor,
            self.memory_mb * factor,
            self.disk_mb * factor,
            self.network_mbps * factor,
            self.gpu * factor,
        )

    def as_tuple(self) -> tuple[float, int, int, int, int]:
        return (self.cpu, self.memory_mb, self.disk_mb, self.network_mbps, self.gpu)


@dataclass(frozen=True, slots=True)
class PendingTask:
    """A task waiting for an agent.

    Constraints are Titus v3 maps of name to value; see `master.scheduler.constraints` for the names.
    They are trusted here: the API validates them with `validate_constraints` before a job is accepted.
    `spread` asks for the spreading fitness instead of bin packing (critical service jobs).
    """

    task_id: str
    job_id: str
    resources: Resources
    capacity_group: str
    tier: Tier = "flex"
    hard_constraints: Mapping[str, str] = field(default_factory=dict)
    soft_constraints: Mapping[str, str] = field(default_factory=dict)
    spread: bool = False


@dataclass(frozen=True, slots=True)
class AgentView:
    """What the scheduler may know about one agent.

    `attributes` holds at least "zone", "instanceType" and "id" (attribute names match case-insensitively).
    `job_task_counts` counts the tasks of each job already running there, which uniqueHost and
    exclusiveHost need; `exclusive` is true when a task running there holds the host exclusively.
    """

    agent_id: str
    instance_group: str
    tier: Tier
    lifecycle: Lifecycle
    total: Resources
    used: Resources
    attributes: Mapping[str, str] = field(default_factory=dict)
    job_task_counts: Mapping[str, int] = field(default_factory=dict)
    exclusive: bool = False


@dataclass(frozen=True, slots=True)
class CapacityGroupView:
    """A Titus ApplicationSLA: `reservation` is resourceDimension x instanceCount; `used` what runs now."""

    name: str
    tier: Tier
    reservation: Resources
    used: Resources


@dataclass(frozen=True, slots=True)
class FitnessWeights:
    """How much each dimension counts when judging how full an agent is.

    Bin packing prefers the agent that is fullest by this weighted measure, so empty agents stay
    empty and can be scaled down. Cpu and memory order the free index; disk and network, when set,
    break ties between agents with the same free cpu and memory (they rarely run out first, and
    leaving them at zero keeps the fast path free of the extra look).
    """

    cpu: float = 1.0
    memory: float = 1.0
    disk: float = 0.0
    network: float = 0.0

    def __post_init__(self) -> None:
        values = (self.cpu, self.memory, self.disk, self.network)
        if any(v < 0 for v in values) or sum(values) <= 0:
            raise ValueError("fitness weights must be non-negative and not all zero")


@dataclass(frozen=True, slots=True)
class ScheduleRequest:
    """One scheduling pass: a snapshot of pending work and of the cluster.

    `job_zone_counts` counts each job's running tasks per zone (zoneBalance); `max_diagnoses` bounds how
    many distinct why-pending evaluations (each a scan of the tier's agents) one pass may spend.
    """

    tasks: Sequence[PendingTask]
    agents: Sequence[AgentView]
    capacity_groups: Sequence[CapacityGroupView] = ()
    job_zone_counts: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    weights: FitnessWeights = field(default_factory=FitnessWeights)
    now: float = 0.0
    max_diagnoses: int = 200


@dataclass(frozen=True, slots=True)
class Assignment:
    task_id: str
    agent_id: str


#: How each exclusion reason reads in a summary; constraint names not listed render as "<name> excluded N".
_RESOURCE_WORDS: Final = {
    "cpu": "cpu",
    "memory": "memory",
    "disk": "disk",
    "network": "network bandwidth",
    "gpu": "gpus",
}
REASON_OTHER_TIER: Final = "otherTier"


def _plural(n: int) -> str:
    return "agent" if n == 1 else "agents"


def render_reason(reason: str, count: int) -> str:
    """One clause of a why-pending summary, phrased the way an operator would say it."""
    if reason in _RESOURCE_WORDS:
        return f"insufficient {_RESOURCE_WORDS[reason]} on {count} {_plural(count)}"
    if reason in ("PhasedOut", "Removable"):
        return f"{count} {_plural(count)} {reason}"
    if reason == REASON_OTHER_TIER:
        return f"{count} {_plural(count)} in another tier"
    return f"{reason} excluded {count}"


@dataclass(frozen=True, slots=True)
class PendingReason:
    """Why a task is still pending after a pass.

    `excluded` counts agents by the first rule that excluded them (each agent counted once), and
    `by_instance_group` breaks the same counts down per agent class so an operator sees which pool
    is short. `task_reason` holds a cause that is about the task rather than any agent (capacity
    group headroom, diagnosis budget).
    """

    excluded: Mapping[str, int] = field(default_factory=dict)
    by_instance_group: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    task_reason: str | None = None

    @property
    def summary(self) -> str:
        order = {name: i for i, name in enumerate((*DIMENSIONS, "PhasedOut", "Removable", REASON_OTHER_TIER))}
        ranked = sorted(self.excluded.items(), key=lambda kv: (-kv[1], order.get(kv[0], -1), kv[0]))
        parts = [render_reason(reason, count) for reason, count in ranked if count > 0]
        if self.task_reason:
            parts.insert(0, self.task_reason)
        return "; ".join(parts) if parts else "no agents"


@dataclass(frozen=True, slots=True)
class ScheduleReply:
    assignments: tuple[Assignment, ...]
    unplaced: Mapping[str, PendingReason]
