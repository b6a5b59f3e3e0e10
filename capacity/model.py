"""Plain data the capacity planner reads and writes.

Everything here is immutable and free of I/O so the planner stays a pure function of its inputs and
`now`: adapters (boto3, the master's HTTP API, the simulator) build these objects, the planner returns a
`CapacityPlan`, and the controller carries the plan out. Times are epoch seconds (floats).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from master.core.disruption import Eviction, JobView
from titus.cluster_tags import TIER_CRITICAL, TIER_FLEX

#: Resource dimensions in the order used by every tuple in the planner.
DIMENSIONS: tuple[str, ...] = ("cpu", "memory_mb", "disk_mb", "network_mbps")


@dataclass(frozen=True, slots=True)
class Resources:
    """A resource vector; one type for instance sizes, task asks, reservations and free capacity."""

    cpu: float = 0.0
    memory_mb: float = 0.0
    disk_mb: float = 0.0
    network_mbps: float = 0.0

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.cpu, self.memory_mb, self.disk_mb, self.network_mbps)

    @staticmethod
    def of(values: Iterable[float]) -> Resources:
        cpu, mem, disk, net = values
        return Resources(cpu, mem, disk, net)

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            self.cpu + other.cpu,
            self.memory_mb + other.memory_mb,
            self.disk_mb + other.disk_mb,
            self.network_mbps + other.network_mbps,
        )

    def __sub__(self, other: Resources) -> Resources:
        return Resources(
            self.cpu - other.cpu,
            self.memory_mb - other.memory_mb,
            self.disk_mb - other.disk_mb,
            self.network_mbps - other.network_mbps,
        )

    def scaled(self, factor: float) -> Resources:
        return Resources(
            self.cpu * factor, self.memory_mb * factor, self.disk_mb * factor, self.network_mbps * factor
        )

    def clamped(self) -> Resources:
        """Negative free capacity (over-commit seen through stale data) counts as none."""
        return Resources(
            max(self.cpu, 0.0), max(self.memory_mb, 0.0), max(self.disk_mb, 0.0), max(self.network_mbps, 0.0)
        )

    def to_json(self) -> dict[str, float]:
        return {
            "cpu": self.cpu,
            "memoryMB": self.memory_mb,
            "diskMB": self.disk_mb,
            "networkMbps": self.network_mbps,
        }


def instances_needed(demand: tuple[float, ...] | Resources, size: Resources) -> int:
    """Max over dimensions of ceil(demand / instance size); a dimension the instance lacks is ignored.

    A tiny epsilon keeps float sums such as 0.1 * 30 from rounding up to an extra instance.
    """
    values = demand.as_tuple() if isinstance(demand, Resources) else demand
    needed = 0
    for want, have in zip(values, size.as_tuple(), strict=True):
        if want > 1e-9 and have > 0:
            needed = max(needed, math.ceil(want / have - 1e-9))
    return needed


class Tier(StrEnum):
    CRITICAL = TIER_CRITICAL
    FLEX = TIER_FLEX


class Lifecycle(StrEnum):
    """Agent lifecycle as the master defines it (issue 4): PhasedOut agents get no new placements."""

    ACTIVE = "Active"
    PHASED_OUT = "PhasedOut"
    REMOVABLE = "Removable"


class AgentState(StrEnum):
    REGISTERED = "Registered"
    LOST = "Lost"


@dataclass(frozen=True, slots=True)
class TierConfig:
    """Knobs per tier. Defaults follow cluster-autoscaler's where one exists (scale-down delay after add)."""

    tier: Tier
    #: Fraction added to the critical reservation per dimension so small growth never waits for a boot.
    buffer_fraction: float = 0.05
    #: A pending task counts as unmet demand once it waited this long. The master schedules on events
    #: (a placeable task is placed within milliseconds), so even 2 s (the flex default) separates
    #: "unplaceable" from "not yet placed"; every second of it is added to a burst's wait.
    pending_threshold_s: float = 10.0
    #: An empty agent is phased out after this much idle time.
    idle_threshold_s: float = 300.0
    #: Minimum time between two scale-ups of one group. Booting instances are already subtracted from the
    #: demand, so the flex default is 0 (as cluster-autoscaler, which counts upcoming nodes).
    scale_up_cooldown_s: float = 30.0
    #: No scale-down in a group this soon after it scaled up (cluster-autoscaler: scale-down-delay-after-add).
    scale_down_delay_after_up_s: float = 300.0
    #: Minimum time between two scale-down actions of one group.
    scale_down_cooldown_s: float = 30.0
    #: Rate limit: most instances one decision may add to a group.
    max_scale_up_step: int = 200
    #: Rate limit: most agents one decision may phase out or terminate in a group.
    max_scale_down_step: int = 50
    #: Whether the tier is sized by the capacity groups' reservations (the critical tier).
    reserve: bool = False
    #: Agents used below this fraction (max over dimensions) are phased out so they drain as their tasks
    #: end and can then be terminated empty; nothing is evicted. 0 disables draining.
    drain_utilisation: float = 0.0
    #: Draining stops while Active agents would keep less than this fraction of their capacity free.
    drain_headroom: float = 0.15
    #: Consolidation (Karpenter's, within disruption budgets): an Active agent used below this fraction
    #: whose service tasks all fit on the other Active agents, each move allowed by its job's budget, is
    #: phased out and its service tasks moved (replacement Started before the original stops); its batch
    #: tasks finish in place. Then the empty agent's exact instance is terminated. 0 disables it.
    consolidate_utilisation: float = 0.0
    #: Most agents one decision may start consolidating in a tier.
    max_consolidations: int = 4
    #: Only agents with at most this many service tasks to move are consolidated (0: no limit). Every move
    #: is a stop, however gentle; an agent that needs few of them frees the same instance for less.
    max_moves_per_agent: int = 0

    @staticmethod
    def default(tier: Tier) -> TierConfig:
        if tier is Tier.CRITICAL:
            return TierConfig(tier=tier, reserve=True, idle_threshold_s=900.0)
        # Chosen on bench.capacity's traces (docs/capacity.md): react 2 s after a task is found unplaceable
        # (booting instances are subtracted from demand, so no cooldown), let empty agents go after two
        # minutes, consolidate agents under half used that need a single move, keep 5% headroom.
        return TierConfig(
            tier=tier,
            pending_threshold_s=2.0,
            scale_up_cooldown_s=0.0,
            idle_threshold_s=120.0,
            scale_down_delay_after_up_s=120.0,
            drain_utilisation=0.25,
            drain_headroom=0.05,
            consolidate_utilisation=0.5,
            max_moves_per_agent=1,
        )


@dataclass(frozen=True, slots=True)
class CapacityGroup:
    """Titus ApplicationSLA: `instance_count` instances of `resource_dimension` reserved for `name`."""

    name: str
    tier: Tier
    resource_dimension: Resources
    instance_count: int

    def reservation(self) -> Resources:
        return self.resource_dimension.scaled(self.instance_count)


@dataclass(frozen=True, slots=True)
class PendingTask:
    id: str
    tier: Tier
    resources: Resources
    #: When the task entered Accepted; how long it waited is `now - pending_since`.
    pending_since: float
    capacity_group: str = ""


@dataclass(frozen=True, slots=True)
class RunningTask:
    """A task on an agent, as consolidation needs it: what it asks for, its job, and whether it is batch
    (waited for, never moved) or service (moved within its job's disruption budget)."""

    id: str
    job_id: str
    resources: Resources
    batch: bool = False


@dataclass(frozen=True, slots=True)
class Agent:
    id: str
    instance_id: str
    node_group_id: str
    tier: Tier
    lifecycle: Lifecycle
    state: AgentState
    resources: Resources
    used: Resources
    task_ids: tuple[str, ...] = ()
    #: Running tasks that belong to critical capacity groups; such an agent is never terminated.
    critical_task_count: int = 0
    #: When the agent last became empty; None while it runs tasks.
    idle_since: float | None = None
    #: The tasks behind `task_ids` with job and resources; consolidation only considers an agent whose
    #: every task is listed here.
    tasks: tuple[RunningTask, ...] = ()
    #: Who phased the agent out and why, as the master stores it (`lifecycleDetail`); the controller's own
    #: phase-outs carry `OWNER_MARK`, which is how it knows, even after a restart, what it owns.
    lifecycle_detail: str = ""


@dataclass(frozen=True, slots=True)
class NodeGroupState:
    """One autoscaling group as read from the cloud."""

    id: str
    tier: Tier
    min_size: int
    max_size: int
    desired: int
    instance_type: str
    instance_resources: Resources
    instance_ids: tuple[str, ...] = ()


class ActionKind(StrEnum):
    SCALE_UP = "scale_up"
    PHASE_OUT = "phase_out"
    REACTIVATE = "reactivate"
    TERMINATE = "terminate"
    MOVE = "move"


@dataclass(frozen=True, slots=True)
class RecentAction:
    """An action the controller carried out; cooldowns are computed from these."""

    kind: ActionKind
    node_group_id: str
    at: float
    count: int = 1
    #: The agent acted on (phase-out): only agents this controller phased out are ever reactivated.
    agent_id: str = ""


@dataclass(frozen=True, slots=True)
class PlanInputs:
    tiers: dict[Tier, TierConfig]
    capacity_groups: tuple[CapacityGroup, ...]
    pending_tasks: tuple[PendingTask, ...]
    agents: tuple[Agent, ...]
    node_groups: tuple[NodeGroupState, ...]
    recent_actions: tuple[RecentAction, ...] = ()
    #: Agents this controller phased out (its mark, kept for as long as the agent lives): only these are
    #: ever terminated or reactivated, so a drain someone else started (an upgrade) is left alone.
    owned_agents: frozenset[str] = frozenset()
    #: Jobs of the tasks on agents, with their disruption budgets, desired sizes and task health.
    jobs: Mapping[str, JobView] = field(default_factory=dict)
    #: System-initiated stops that happened (the rate limits and relocation limits read them).
    evictions: tuple[Eviction, ...] = ()


@dataclass(frozen=True, slots=True)
class DesiredSize:
    node_group_id: str
    tier: Tier
    current: int
    desired: int
    reason: str


@dataclass(frozen=True, slots=True)
class AgentAction:
    """Phase out, reactivate or terminate one agent (its exact instance for termination)."""

    agent_id: str
    instance_id: str
    node_group_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class TaskMove:
    """Move one service task: start a replacement on `to_agent`, stop the original once it is Started."""

    task_id: str
    job_id: str
    from_agent: str
    to_agent: str
    reason: str


@dataclass(frozen=True, slots=True)
class Report:
    """Something an operator must fix, such as an ASG max too small for the reservation."""

    node_group_id: str
    tier: Tier
    message: str


@dataclass(frozen=True, slots=True)
class CapacityPlan:
    now: float
    desired: tuple[DesiredSize, ...] = ()
    phase_out: tuple[AgentAction, ...] = ()
    reactivate: tuple[AgentAction, ...] = ()
    terminate: tuple[AgentAction, ...] = ()
    #: Consolidation moves; their source agents are in `phase_out` of the same plan.
    moves: tuple[TaskMove, ...] = ()
    reports: tuple[Report, ...] = ()
    #: Notes for groups left alone (cooldown, rate limit, nothing to do), so "why not" is visible too.
    notes: tuple[str, ...] = ()
    #: Earliest time at which a decision could differ (a task crossing the threshold, a cooldown ending);
    #: the controller may wake then instead of waiting for its timer.
    next_decision_at: float | None = None
    required: dict[str, Resources] = field(default_factory=dict)

    def changes(self) -> bool:
        return bool(
            [d for d in self.desired if d.desired != d.current]
            or self.phase_out
            or self.reactivate
            or self.terminate
            or self.moves
        )

    def to_json(self) -> dict[str, object]:
        return {
            "now": self.now,
            "desired": [
                {
                    "nodeGroupId": d.node_group_id,
                    "tier": str(d.tier),
                    "current": d.current,
                    "desired": d.desired,
                    "reason": d.reason,
                }
                for d in self.desired
            ],
            "phaseOut": [_action_json(a) for a in self.phase_out],
            "reactivate": [_action_json(a) for a in self.reactivate],
            "terminate": [_action_json(a) for a in self.terminate],
            "moves": [
                {
                    "taskId": m.task_id,
                    "jobId": m.job_id,
                    "fromAgent": m.from_agent,
                    "toAgent": m.to_agent,
                    "reason": m.reason,
                }
                for m in self.moves
            ],
            "reports": [
                {"nodeGroupId": r.node_group_id, "tier": str(r.tier), "message": r.message}
                for r in self.reports
            ],
            "notes": list(self.notes),
            "nextDecisionAt": self.next_decision_at,
            "required": {tier: res.to_json() for tier, res in self.required.items()},
        }


def _action_json(action: AgentAction) -> dict[str, str]:
    return {
        "agentId": action.agent_id,
        "instanceId": action.instance_id,
        "nodeGroupId": action.node_group_id,
        "reason": action.reason,
    }
