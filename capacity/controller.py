"""One controller iteration as a function of time: read, plan, carry out, remember.

`run_once(now)` follows cluster-autoscaler's `RunOnce(now)`: tests and the simulator pass the clock.
A failure on one group or one agent is logged with its id and the iteration goes on (huey's consumer
loop); the next iteration re-reads the world and decides again.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from capacity.cluster import ClusterView
from capacity.leader import AlwaysLeader, LeaderElection
from capacity.model import (
    ActionKind,
    CapacityPlan,
    Lifecycle,
    NodeGroupState,
    PlanInputs,
    RecentAction,
    Tier,
    TierConfig,
)
from capacity.node_group import NodeGroup, NodeGroupProvider, snapshot
from capacity.planner import plan
from master.core.disruption import Eviction

log = logging.getLogger("capacity.controller")

#: The start of the lifecycle detail the controller writes when it phases an agent out. The master keeps it
#: with the agent's lifecycle, so ownership survives a controller restart, and an agent someone else phased
#: out (or phased out again after us, as an upgrade's drain does) is visibly theirs.
OWNER_MARK = "capacity-controller:"


def owns(detail: str) -> bool:
    return detail.startswith(OWNER_MARK)


@dataclass(frozen=True, slots=True)
class ActionResult:
    kind: ActionKind
    node_group_id: str
    target: str
    at: float
    ok: bool
    reason: str
    error: str = ""
    dry_run: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "kind": str(self.kind),
            "nodeGroupId": self.node_group_id,
            "target": self.target,
            "at": self.at,
            "ok": self.ok,
            "reason": self.reason,
            "error": self.error,
            "dryRun": self.dry_run,
        }


@dataclass
class ControllerStatus:
    leader: bool = False
    last_run_at: float | None = None
    last_plan: CapacityPlan | None = None
    errors: list[str] = field(default_factory=list)


class StaticProvider:
    """A fixed list of node groups (tests, simulator, or a config that names ASGs)."""

    def __init__(self, groups: Sequence[NodeGroup]) -> None:
        self._groups = list(groups)

    def node_groups(self) -> Sequence[NodeGroup]:
        return self._groups


class Controller:
    def __init__(
        self,
        cluster: ClusterView,
        provider: NodeGroupProvider,
        tiers: Mapping[Tier, TierConfig] | None = None,
        leader: LeaderElection | None = None,
        dry_run: bool = False,
        action_memory_s: float = 3600.0,
        history: int = 500,
    ) -> None:
        self.cluster = cluster
        self.provider = provider
        self.tiers = dict(tiers or {t: TierConfig.default(t) for t in Tier})
        self.leader = leader or AlwaysLeader()
        self.dry_run = dry_run
        self._memory_s = action_memory_s
        self._recent: list[RecentAction] = []
        #: Agents this controller phased out: its mark of ownership. Only these are ever terminated or
        #: reactivated; an agent someone else phased out (an upgrade's drain) is left to them.
        self.owned: set[str] = set()
        #: Stops the controller's plans caused (consolidation moves), for the budgets' rate limits.
        self.evictions: list[Eviction] = []
        self._eviction_memory_s = 24 * 3600.0
        self.actions: deque[ActionResult] = deque(maxlen=history)
        self.status = ControllerStatus()
        self._lock = threading.Lock()

    def run_once(self, now: float) -> CapacityPlan | None:
        """Plan and act once if leader; returns the plan (None when standing by or the read failed)."""
        leader = self.leader.is_leader()
        errors: list[str] = []
        if not leader:
            with self._lock:
                self.status = ControllerStatus(False, now, self.status.last_plan, ["not leader: standing by"])
            return None
        try:
            view = self.cluster.snapshot()
        except Exception as exc:  # the master may be restarting; try again next iteration
            log.warning("cluster read failed: %s", exc, extra={"event": "read_failed"})
            with self._lock:
                self.status = ControllerStatus(
                    True, now, self.status.last_plan, [f"cluster read failed: {exc}"]
                )
            return None
        groups: dict[str, NodeGroup] = {}
        states: list[NodeGroupState] = []
        try:
            discovered = list(self.provider.node_groups())
        except Exception as exc:
            log.warning("node group discovery failed: %s", exc, extra={"event": "discovery_failed"})
            discovered = []
            errors.append(f"node group discovery failed: {exc}")
        for group in discovered:
            try:
                group.refresh()
                states.append(snapshot(group))
                groups[group.id] = group
            except Exception as exc:
                log.warning("node group %s unreadable: %s", group.id, exc, extra={"nodeGroupId": group.id})
                errors.append(f"{group.id}: {exc}")
        self._recent = [a for a in self._recent if now - a.at < self._memory_s]
        self.evictions = [e for e in self.evictions if now - e.at < self._eviction_memory_s]
        # Ownership is the mark the master keeps: a phased-out agent is ours exactly when its lifecycle
        # detail carries OWNER_MARK (an agent that is gone needs no mark).
        phased = [a for a in view.agents if a.lifecycle is not Lifecycle.ACTIVE]
        foreign = {a.id for a in phased if not owns(a.lifecycle_detail)}
        present = {a.id for a in view.agents}
        self.owned = ((self.owned & present) - foreign) | {a.id for a in phased if owns(a.lifecycle_detail)}
        # A phase-out we made that someone else has since taken over is no longer ours to finish.
        self._recent = [replace(r, agent_id="") if r.agent_id in foreign else r for r in self._recent]
        decision = plan(
            PlanInputs(
                tiers=self.tiers,
                capacity_groups=view.capacity_groups,
                pending_tasks=view.pending_tasks,
                agents=view.agents,
                node_groups=tuple(states),
                recent_actions=tuple(self._recent),
                owned_agents=frozenset(self.owned),
                jobs=view.jobs,
                evictions=tuple(self.evictions),
            ),
            now,
        )
        self._log_plan(decision)
        self._carry_out(decision, groups, now)
        with self._lock:
            self.status = ControllerStatus(True, now, decision, errors)
        return decision

    def recent_actions(self) -> list[ActionResult]:
        with self._lock:
            return list(self.actions)

    def _record(self, result: ActionResult, count: int = 1) -> None:
        with self._lock:
            self.actions.append(result)
        if result.ok and not result.dry_run:
            agent_id = result.target if result.kind in (ActionKind.PHASE_OUT, ActionKind.REACTIVATE) else ""
            self._recent.append(RecentAction(result.kind, result.node_group_id, result.at, count, agent_id))
            if result.kind is ActionKind.PHASE_OUT:
                self.owned.add(result.target)
            elif result.kind is ActionKind.REACTIVATE:
                self.owned.discard(result.target)
        log.log(
            logging.INFO if result.ok else logging.WARNING,
            "capacity action %s %s %s",
            result.kind,
            result.target,
            "done" if result.ok else "failed",
            extra={"event": "action", "action": result.to_json()},
        )

    def _carry_out(self, decision: CapacityPlan, groups: Mapping[str, NodeGroup], now: float) -> None:
        for d in decision.desired:
            if d.desired <= d.current:
                continue
            group = groups.get(d.node_group_id)
            try:
                if group is None:
                    raise LookupError(f"node group {d.node_group_id} vanished")
                group.set_target_size(d.desired)
                self._record(
                    ActionResult(
                        ActionKind.SCALE_UP,
                        d.node_group_id,
                        f"{d.current}->{d.desired}",
                        now,
                        True,
                        d.reason,
                        dry_run=self.dry_run,
                    ),
                    d.desired - d.current,
                )
            except Exception as exc:
                self._record(
                    ActionResult(
                        ActionKind.SCALE_UP,
                        d.node_group_id,
                        f"{d.current}->{d.desired}",
                        now,
                        False,
                        d.reason,
                        str(exc),
                    )
                )
        phased: set[str] = set()
        for a in decision.phase_out:
            try:
                if not self.dry_run:
                    self.cluster.set_lifecycle(
                        a.agent_id, Lifecycle.PHASED_OUT, f"{OWNER_MARK} {a.reason}"[:1024]
                    )
                phased.add(a.agent_id)
                self._record(
                    ActionResult(
                        ActionKind.PHASE_OUT,
                        a.node_group_id,
                        a.agent_id,
                        now,
                        True,
                        a.reason,
                        dry_run=self.dry_run,
                    )
                )
            except Exception as exc:
                self._record(
                    ActionResult(
                        ActionKind.PHASE_OUT, a.node_group_id, a.agent_id, now, False, a.reason, str(exc)
                    )
                )
        for m in decision.moves:
            # The master's drain of the phased-out agent carries the move out (replacement Started before
            # the original stops); the stop is booked now so the budgets' rate limits count it at once.
            if m.from_agent not in phased:
                continue
            if not self.dry_run:
                self.evictions.append(Eviction(m.job_id, m.task_id, now))
            self._record(
                ActionResult(
                    ActionKind.MOVE,
                    "",
                    f"{m.task_id}:{m.from_agent}->{m.to_agent}",
                    now,
                    True,
                    m.reason,
                    dry_run=self.dry_run,
                )
            )
        for a in decision.reactivate:
            try:
                if not self.dry_run:
                    self.cluster.set_lifecycle(a.agent_id, Lifecycle.ACTIVE)
                self._record(
                    ActionResult(
                        ActionKind.REACTIVATE,
                        a.node_group_id,
                        a.agent_id,
                        now,
                        True,
                        a.reason,
                        dry_run=self.dry_run,
                    )
                )
            except Exception as exc:
                self._record(
                    ActionResult(
                        ActionKind.REACTIVATE, a.node_group_id, a.agent_id, now, False, a.reason, str(exc)
                    )
                )
        for a in decision.terminate:
            group = groups.get(a.node_group_id)
            try:
                if group is None:
                    raise LookupError(f"node group {a.node_group_id} vanished")
                group.delete_nodes([a.instance_id])
                self._record(
                    ActionResult(
                        ActionKind.TERMINATE,
                        a.node_group_id,
                        a.instance_id,
                        now,
                        True,
                        a.reason,
                        dry_run=self.dry_run,
                    )
                )
            except Exception as exc:
                self._record(
                    ActionResult(
                        ActionKind.TERMINATE, a.node_group_id, a.instance_id, now, False, a.reason, str(exc)
                    )
                )

    def _log_plan(self, decision: CapacityPlan) -> None:
        for report in decision.reports:
            log.warning(
                report.message,
                extra={"event": "report", "nodeGroupId": report.node_group_id, "tier": str(report.tier)},
            )
        if decision.changes():
            log.info("capacity plan", extra={"event": "plan", "plan": decision.to_json()})
        else:
            log.debug("capacity plan: no change", extra={"event": "plan", "notes": list(decision.notes)})
