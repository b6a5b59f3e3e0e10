"""The capacity planner: a pure function from the cluster's state and `now` to a `CapacityPlan`.

It never talks to AWS or the master; the controller carries the plan out (Ray autoscaler v2 style: the
plan is data). Two rules make it safe to run against live groups:

* Desired capacity only ever goes *up* through `DesiredSize`. Shrinking happens by terminating exact,
  empty, phased-out instances with decrement, because lowering an ASG's desired capacity lets AWS pick the
  victims, and it may pick an agent running critical tasks.
* Every decision, including "did nothing because of a cooldown", carries a reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from capacity.model import (
    ActionKind,
    Agent,
    AgentAction,
    AgentState,
    CapacityPlan,
    DesiredSize,
    Lifecycle,
    NodeGroupState,
    PlanInputs,
    Report,
    Resources,
    RunningTask,
    TaskMove,
    Tier,
    TierConfig,
    instances_needed,
)
from master.core.disruption import STARTED, Eviction, JobView, Policy, TaskHealth, decide

Vec = list[float]


@dataclass(slots=True)
class _TierDemand:
    overdue: Vec = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])
    pending: Vec = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])
    overdue_count: int = 0
    pending_count: int = 0
    oldest_wait: float = 0.0
    next_overdue_at: float | None = None


@dataclass(slots=True)
class _GroupView:
    state: NodeGroupState
    size: Resources
    agents: list[Agent]
    registered: int
    in_flight: int
    last_up: float | None
    last_down: float | None


@dataclass(slots=True)
class _Out:
    desired: list[DesiredSize] = field(default_factory=list)
    phase_out: list[AgentAction] = field(default_factory=list)
    reactivate: list[AgentAction] = field(default_factory=list)
    terminate: list[AgentAction] = field(default_factory=list)
    moves: list[TaskMove] = field(default_factory=list)
    reports: list[Report] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    wakeups: list[float] = field(default_factory=list)
    required: dict[str, Resources] = field(default_factory=dict)


def plan(inputs: PlanInputs, now: float) -> CapacityPlan:
    """Decide desired sizes, phase-outs and terminations for every tier's groups."""
    demand = _pending_demand(inputs, now)
    agents_by_group: dict[str, list[Agent]] = {}
    for agent in inputs.agents:
        agents_by_group.setdefault(agent.node_group_id, []).append(agent)
    last_up: dict[str, float] = {}
    last_down: dict[str, float] = {}
    ours = set(inputs.owned_agents)
    ours |= {a.agent_id for a in inputs.recent_actions if a.kind is ActionKind.PHASE_OUT and a.agent_id}
    for action in inputs.recent_actions:
        # Terminations follow phase-outs already decided, so only a phase-out starts a scale-down cooldown.
        if action.kind in (ActionKind.SCALE_UP, ActionKind.PHASE_OUT):
            book = last_up if action.kind is ActionKind.SCALE_UP else last_down
            book[action.node_group_id] = max(book.get(action.node_group_id, action.at), action.at)

    groups_by_tier: dict[Tier, list[_GroupView]] = {}
    for ng in sorted(inputs.node_groups, key=lambda g: g.id):
        agents = agents_by_group.get(ng.id, [])
        registered = sum(1 for a in agents if a.state is AgentState.REGISTERED)
        size = _instance_size(ng, agents)
        view = _GroupView(
            state=ng,
            size=size,
            agents=agents,
            registered=registered,
            in_flight=max(0, ng.desired - registered),
            last_up=last_up.get(ng.id),
            last_down=last_down.get(ng.id),
        )
        groups_by_tier.setdefault(ng.tier, []).append(view)

    out = _Out()
    for tier in Tier:
        groups = groups_by_tier.get(tier, [])
        cfg = inputs.tiers.get(tier) or TierConfig.default(tier)
        tier_demand = demand.get(tier, _TierDemand())
        if tier_demand.next_overdue_at is not None:
            out.wakeups.append(tier_demand.next_overdue_at)
        if not groups:
            if tier_demand.pending_count:
                out.reports.append(
                    Report("", tier, f"{tier_demand.pending_count} {tier} tasks pending; the tier has no ASG")
                )
            continue
        _plan_tier(inputs, cfg, groups, tier_demand, ours, now, out)

    future = [t for t in out.wakeups if t > now]
    return CapacityPlan(
        now=now,
        desired=tuple(out.desired),
        phase_out=tuple(out.phase_out),
        reactivate=tuple(out.reactivate),
        terminate=tuple(out.terminate),
        moves=tuple(out.moves),
        reports=tuple(out.reports),
        notes=tuple(out.notes),
        next_decision_at=min(future) if future else None,
        required=out.required,
    )


def _pending_demand(inputs: PlanInputs, now: float) -> dict[Tier, _TierDemand]:
    """One pass over pending tasks (the hot loop for 50,000 tasks: locals only, no allocation per task)."""
    result: dict[Tier, _TierDemand] = {}
    thresholds = {
        tier: (inputs.tiers.get(tier) or TierConfig.default(tier)).pending_threshold_s for tier in Tier
    }
    for task in inputs.pending_tasks:
        tier = task.tier
        d = result.get(tier)
        if d is None:
            d = result[tier] = _TierDemand()
        res = task.resources
        p = d.pending
        p[0] += res.cpu
        p[1] += res.memory_mb
        p[2] += res.disk_mb
        p[3] += res.network_mbps
        d.pending_count += 1
        waited = now - task.pending_since
        if waited >= thresholds[tier]:
            o = d.overdue
            o[0] += res.cpu
            o[1] += res.memory_mb
            o[2] += res.disk_mb
            o[3] += res.network_mbps
            d.overdue_count += 1
            if waited > d.oldest_wait:
                d.oldest_wait = waited
        else:
            due = task.pending_since + thresholds[tier]
            if d.next_overdue_at is None or due < d.next_overdue_at:
                d.next_overdue_at = due
    return result


def _instance_size(ng: NodeGroupState, agents: Sequence[Agent]) -> Resources:
    """What agents report beats the instance-type table: it is what the scheduler can actually use."""
    for agent in agents:
        if agent.state is AgentState.REGISTERED and agent.resources.cpu > 0:
            return agent.resources
    return ng.instance_resources


def _sub(a: Sequence[float], b: Sequence[float]) -> Vec:
    return [max(x - y, 0.0) for x, y in zip(a, b, strict=True)]


def _distribute(
    demand: Sequence[float], groups: Sequence[_GroupView], caps: Sequence[int]
) -> tuple[list[int], Vec]:
    """Split a demand vector evenly over groups (spreading zones), each bounded by its cap.

    What one group cannot take because of its cap flows to the following groups; what is left at the
    end is returned so the caller can report it.
    """
    remaining = list(demand)
    counts = [0] * len(groups)
    order = sorted(range(len(groups)), key=lambda i: caps[i])  # tight groups first, others absorb overflow
    for pos, i in enumerate(order):
        left = len(order) - pos
        share = [r / left for r in remaining]
        size = groups[i].size
        n = min(instances_needed(tuple(share), size), caps[i])
        counts[i] = n
        remaining = _sub(remaining, size.scaled(n).as_tuple())
    return counts, remaining


def _plan_tier(
    inputs: PlanInputs,
    cfg: TierConfig,
    groups: list[_GroupView],
    demand: _TierDemand,
    ours: set[str],
    now: float,
    out: _Out,
) -> None:
    tier = cfg.tier
    # Reservation floor (critical): sum of the tier's capacity groups plus the buffer, per dimension.
    floors = [0] * len(groups)
    if cfg.reserve:
        reserved = Resources()
        for cg in inputs.capacity_groups:
            if cg.tier is tier:
                reserved = reserved + cg.reservation()
        required = reserved.scaled(1.0 + cfg.buffer_fraction)
        out.required[str(tier)] = required
        floors, short = _distribute(required.as_tuple(), groups, [g.state.max_size for g in groups])
        if any(s > 1e-9 for s in short):
            missing = Resources.of(short)
            out.reports.append(
                Report(
                    ",".join(g.state.id for g in groups),
                    tier,
                    "ASG max too small for the critical reservation plus buffer: "
                    f"short by cpu={missing.cpu:g} memoryMB={missing.memory_mb:g} diskMB={missing.disk_mb:g} "
                    f"networkMbps={missing.network_mbps:g}",
                )
            )

    # Demand scale-up: overdue tasks minus what is already booting.
    in_flight_cap = [0.0, 0.0, 0.0, 0.0]
    for g in groups:
        for k, v in enumerate(g.size.scaled(g.in_flight).as_tuple()):
            in_flight_cap[k] += v
    unmet = _sub(demand.overdue, in_flight_cap)
    if demand.overdue_count and any(u > 1e-9 for u in unmet):
        unmet = _reactivate(groups, ours, unmet, demand, out)
    extra = [0] * len(groups)
    if demand.overdue_count and any(u > 1e-9 for u in unmet):
        caps = []
        for idx, g in enumerate(groups):
            base = max(g.state.desired, floors[idx], g.state.min_size)
            headroom = max(0, g.state.max_size - base)
            if g.last_up is not None and now - g.last_up < cfg.scale_up_cooldown_s:
                out.notes.append(
                    f"{g.state.id}: scale-up held by cooldown until {g.last_up + cfg.scale_up_cooldown_s:.0f}"
                )
                out.wakeups.append(g.last_up + cfg.scale_up_cooldown_s)
                headroom = 0
            caps.append(min(headroom, cfg.max_scale_up_step))
        extra, short = _distribute(unmet, groups, caps)
        if any(s > 1e-9 for s in short):
            missing = Resources.of(short)
            out.reports.append(
                Report(
                    ",".join(g.state.id for g in groups),
                    tier,
                    f"cannot add enough {tier} capacity now (max, cooldown or rate limit): short by "
                    f"cpu={missing.cpu:g} memoryMB={missing.memory_mb:g}",
                )
            )
    elif demand.overdue_count:
        out.notes.append(
            f"{tier}: {demand.overdue_count} overdue tasks fit on "
            f"{sum(g.in_flight for g in groups)} booting instances"
        )

    pending_left = _sub(demand.pending, in_flight_cap)
    for idx, g in enumerate(groups):
        ng = g.state
        target = ng.desired
        reasons: list[str] = []
        if ng.min_size > target:
            target = ng.min_size
            reasons.append(f"desired {ng.desired} below ASG min {ng.min_size}")
        if floors[idx] > target:
            target = min(floors[idx], ng.max_size)
            reasons.append(
                f"critical reservation plus {cfg.buffer_fraction:.0%} buffer needs {floors[idx]} instances"
            )
        if extra[idx]:
            new_target = min(target + extra[idx], ng.max_size)
            if new_target > target:
                reasons.append(
                    f"{demand.overdue_count} tasks waited over {cfg.pending_threshold_s:g}s "
                    f"(oldest {demand.oldest_wait:.0f}s); unmet demand needs {extra[idx]} more "
                    f"{ng.instance_type}"
                )
                target = new_target
        if target > ng.desired:
            out.desired.append(DesiredSize(ng.id, tier, ng.desired, target, "; ".join(reasons)))
        else:
            out.desired.append(DesiredSize(ng.id, tier, ng.desired, ng.desired, "no change"))
        scaled_up = target > ng.desired or demand.overdue_count > 0
        keep_for_pending = instances_needed(tuple(pending_left), g.size)
        _plan_scale_down(
            inputs,
            cfg,
            g,
            max(ng.min_size, floors[idx]),
            keep_for_pending,
            scaled_up,
            pending_left,
            ours,
            now,
            out,
        )


def _free(agent: Agent) -> tuple[float, float, float, float]:
    return (agent.resources - agent.used).clamped().as_tuple()


def _utilisation(agent: Agent) -> float:
    used, total = agent.used.as_tuple(), agent.resources.as_tuple()
    return max((u / t for u, t in zip(used, total, strict=True) if t > 0), default=1.0)


def _reactivate(
    groups: Sequence[_GroupView], ours: set[str], unmet: Vec, demand: _TierDemand, out: _Out
) -> Vec:
    """Agents this controller phased out to drain are the cheapest capacity when demand returns."""
    candidates = [
        a
        for g in groups
        for a in g.agents
        if a.id in ours and a.lifecycle is Lifecycle.PHASED_OUT and a.state is AgentState.REGISTERED
    ]
    candidates.sort(key=lambda a: (-_free(a)[0], a.id))
    for agent in candidates:
        if not any(u > 1e-9 for u in unmet):
            break
        out.reactivate.append(
            AgentAction(
                agent.id,
                agent.instance_id,
                agent.node_group_id,
                f"{demand.overdue_count} tasks overdue; reactivating an agent this controller was draining",
            )
        )
        unmet = _sub(unmet, _free(agent))
    return unmet


def _plan_scale_down(
    inputs: PlanInputs,
    cfg: TierConfig,
    g: _GroupView,
    floor: int,
    keep_for_pending: int,
    scaled_up: bool,
    pending_left: Vec,
    ours: set[str],
    now: float,
    out: _Out,
) -> None:
    ng = g.state
    size = ng.desired
    reactivated = {a.agent_id for a in out.reactivate}
    # Step 2 of a scale-down: phased-out agents that stayed empty are terminated, exact instance, decrement.
    # Only agents this controller phased out: one someone else phased out (an upgrade draining it) is theirs.
    foreign = [
        a
        for a in g.agents
        if a.lifecycle in (Lifecycle.PHASED_OUT, Lifecycle.REMOVABLE) and not a.task_ids and a.id not in ours
    ]
    if foreign:
        out.notes.append(
            f"{ng.id}: {len(foreign)} empty agents phased out by someone else left alone "
            f"({', '.join(sorted(a.id for a in foreign)[:5])})"
        )
    removable = [
        a
        for a in g.agents
        if a.lifecycle in (Lifecycle.PHASED_OUT, Lifecycle.REMOVABLE)
        and a.id in ours
        and not a.task_ids
        and a.critical_task_count == 0
        and a.instance_id in ng.instance_ids
        and a.id not in reactivated
    ]
    removable.sort(key=lambda a: (a.idle_since if a.idle_since is not None else now, a.id))
    room = max(0, size - floor)
    for agent in removable[: min(room, cfg.max_scale_down_step)]:
        out.terminate.append(
            AgentAction(
                agent.id,
                agent.instance_id,
                ng.id,
                f"phased out and empty; terminating {agent.instance_id} with decrement "
                f"({ng.id} {size} -> {size - 1}, floor {floor})",
            )
        )
        size -= 1
    if len(removable) > room:
        out.notes.append(
            f"{ng.id}: {len(removable) - room} empty phased-out agents kept: group at its floor {floor}"
        )

    # Step 1: phase out agents idle longer than the threshold; only empty ones, never one with critical tasks.
    if scaled_up:
        return
    if g.last_up is not None and now - g.last_up < cfg.scale_down_delay_after_up_s:
        out.wakeups.append(g.last_up + cfg.scale_down_delay_after_up_s)
        out.notes.append(f"{ng.id}: no scale-down within {cfg.scale_down_delay_after_up_s:g}s of a scale-up")
        return
    if g.last_down is not None and now - g.last_down < cfg.scale_down_cooldown_s:
        out.wakeups.append(g.last_down + cfg.scale_down_cooldown_s)
        out.notes.append(f"{ng.id}: scale-down cooldown until {g.last_down + cfg.scale_down_cooldown_s:.0f}")
        return
    idle: list[Agent] = []
    for a in g.agents:
        if (
            a.lifecycle is Lifecycle.ACTIVE
            and a.state is AgentState.REGISTERED
            and not a.task_ids
            and a.critical_task_count == 0
            and a.idle_since is not None
        ):
            if now - a.idle_since >= cfg.idle_threshold_s:
                idle.append(a)
            else:
                out.wakeups.append(a.idle_since + cfg.idle_threshold_s)
    idle.sort(key=lambda a: (a.idle_since or 0.0, a.id))
    pending_phased = sum(
        1 for a in g.agents if a.lifecycle is not Lifecycle.ACTIVE and a.state is AgentState.REGISTERED
    ) - len([t for t in out.terminate if t.node_group_id == ng.id])
    room = size - floor - max(pending_phased, 0)
    allowed = min(len(idle) - keep_for_pending, room, cfg.max_scale_down_step)
    if idle and allowed <= 0:
        why = []
        if keep_for_pending:
            why.append(f"{keep_for_pending} kept for pending tasks")
        if room <= 0:
            why.append(f"group at its floor {floor}")
        out.notes.append(f"{ng.id}: {len(idle)} idle agents kept ({', '.join(why) or 'rate limit'})")
    chosen = idle[: max(allowed, 0)]
    for agent in chosen:
        out.phase_out.append(
            AgentAction(
                agent.id,
                agent.instance_id,
                ng.id,
                f"idle for {now - (agent.idle_since or now):.0f}s (threshold {cfg.idle_threshold_s:g}s); "
                "phasing out before terminating",
            )
        )
    if cfg.consolidate_utilisation > 0:
        _plan_consolidation(
            inputs,
            cfg,
            g,
            room - len(chosen),
            cfg.max_scale_down_step - len(chosen),
            pending_left,
            chosen,
            now,
            out,
        )
    elif cfg.drain_utilisation > 0:
        _plan_drain(
            cfg, g, room - len(chosen), cfg.max_scale_down_step - len(chosen), pending_left, chosen, out
        )


def _plan_drain(
    cfg: TierConfig,
    g: _GroupView,
    room: int,
    budget: int,
    pending_left: Vec,
    chosen: list[Agent],
    out: _Out,
) -> None:
    """Phase out lightly used agents while the rest keep enough headroom; their tasks finish in place.

    Bin-packing sends new work to fuller agents, so a lightly used agent is one the cluster can do
    without; phasing it out (never evicting) lets it empty, after which step 2 terminates it.
    """
    if room <= 0 or budget <= 0:
        return
    skip = {a.id for a in chosen}
    active = [
        a
        for a in g.agents
        if a.lifecycle is Lifecycle.ACTIVE and a.state is AgentState.REGISTERED and a.id not in skip
    ]
    capacity = [0.0, 0.0, 0.0, 0.0]
    free = [0.0, 0.0, 0.0, 0.0]
    for a in active:
        for k, (c, f) in enumerate(zip(a.resources.as_tuple(), _free(a), strict=True)):
            capacity[k] += c
            free[k] += f
    candidates = [
        a
        for a in active
        if a.task_ids and a.critical_task_count == 0 and _utilisation(a) < cfg.drain_utilisation
    ]
    candidates.sort(key=lambda a: (_utilisation(a), a.id))
    for agent in candidates[: min(room, budget)]:
        agent_free = _free(agent)
        agent_cap = agent.resources.as_tuple()
        after_free = [f - af for f, af in zip(free, agent_free, strict=True)]
        after_cap = [c - ac for c, ac in zip(capacity, agent_cap, strict=True)]
        after_need = [cfg.drain_headroom * c + p for c, p in zip(after_cap, pending_left, strict=True)]
        if any(f < n for f, n in zip(after_free, after_need, strict=True)):
            break
        free, capacity = after_free, after_cap
        out.phase_out.append(
            AgentAction(
                agent.id,
                agent.instance_id,
                g.state.id,
                f"{_utilisation(agent):.0%} used (drain threshold {cfg.drain_utilisation:.0%}); "
                "phasing out so its tasks finish in place and it can be terminated empty",
            )
        )


def _fits(free: Sequence[float], ask: Sequence[float]) -> bool:
    return all(f + 1e-9 >= a for f, a in zip(free, ask, strict=True))


def _job_with_replacements(job: JobView, extra: int) -> JobView:
    """The job as it will be when its moves stop their originals: each replacement Started first."""
    if extra <= 0:
        return job
    ghosts = tuple(TaskHealth(f"{job.id}/replacement-{n}", STARTED) for n in range(extra))
    return replace(job, tasks=job.tasks + ghosts)


def _in_flight_stops(g: _GroupView, jobs: Mapping[str, JobView]) -> dict[str, int]:
    """Service tasks still on agents being drained: stops that will happen, so they spend budget now."""
    counts: dict[str, int] = {}
    for a in g.agents:
        if a.lifecycle is Lifecycle.ACTIVE:
            continue
        for t in a.tasks:
            if not t.batch and t.job_id in jobs:
                counts[t.job_id] = counts.get(t.job_id, 0) + 1
    return counts


def _plan_consolidation(
    inputs: PlanInputs,
    cfg: TierConfig,
    g: _GroupView,
    room: int,
    budget: int,
    pending_left: Vec,
    chosen: list[Agent],
    now: float,
    out: _Out,
) -> None:
    """Karpenter-style consolidation within disruption budgets (plans as data; nothing is stopped here).

    Candidates are Active agents used below `consolidate_utilisation`, fewest service tasks first (the
    cheapest disruption). A candidate is taken only if every service task fits on another Active agent
    that is not itself being emptied (best fit, fullest first) and its job's budget allows the stop that
    the move ends with, counting moves already planned or in flight; batch tasks are never moved, the
    agent waits for them. The rest of the tier must keep `drain_headroom` free plus room for what is
    pending. A taken candidate is phased out (no new work) and its moves listed, each with a reason.
    """
    limit = min(room, budget, cfg.max_consolidations)
    if limit <= 0:
        return
    skip = {a.id for a in chosen}
    active = [
        a
        for a in g.agents
        if a.lifecycle is Lifecycle.ACTIVE and a.state is AgentState.REGISTERED and a.id not in skip
    ]
    free: dict[str, list[float]] = {a.id: list(_free(a)) for a in active}
    capacity = [0.0, 0.0, 0.0, 0.0]
    total_free = [0.0, 0.0, 0.0, 0.0]
    for a in active:
        for k, (c, f) in enumerate(zip(a.resources.as_tuple(), free[a.id], strict=True)):
            capacity[k] += c
            total_free[k] += f
    jobs = inputs.jobs
    planned: dict[str, int] = _in_flight_stops(g, jobs)
    history: list[Eviction] = list(inputs.evictions)

    def service(agent: Agent) -> list[RunningTask]:
        return [t for t in agent.tasks if not t.batch]

    candidates = [
        a
        for a in active
        if a.task_ids
        and a.critical_task_count == 0
        and len(a.tasks) == len(a.task_ids)
        and _utilisation(a) < cfg.consolidate_utilisation
        and (cfg.max_moves_per_agent <= 0 or len(service(a)) <= cfg.max_moves_per_agent)
    ]
    candidates.sort(key=lambda a: (len(service(a)), _utilisation(a), a.id))
    emptied: set[str] = set()
    targets: set[str] = set()
    taken = 0
    examined = 0
    for agent in candidates:
        if taken >= limit:
            break
        if agent.id in targets:
            continue  # it just received moved tasks
        moving = [0.0, 0.0, 0.0, 0.0]
        for t in service(agent):
            moving = [m + r for m, r in zip(moving, t.resources.as_tuple(), strict=True)]
        # The others lose what they had free on this agent and take its service tasks.
        after_free = [f - af - mv for f, af, mv in zip(total_free, free[agent.id], moving, strict=True)]
        after_cap = [c - ac for c, ac in zip(capacity, agent.resources.as_tuple(), strict=True)]
        need = [cfg.drain_headroom * c + p for c, p in zip(after_cap, pending_left, strict=True)]
        if not _fits(after_free, need):
            out.notes.append(
                f"{g.state.id}: consolidation stops at {agent.id}: the rest would keep too little free"
            )
            break
        examined += 1
        if examined > 4 * cfg.max_consolidations:
            out.notes.append(f"{g.state.id}: consolidation looked at {examined - 1} candidates this pass")
            break
        # Changes of this candidate's trial only (copying every agent's free vector per candidate would make
        # a pass over 10,000 agents quadratic).
        trial: dict[str, list[float]] = {}
        barred = emptied | {agent.id}
        trial_planned = dict(planned)
        moves: list[TaskMove] = []
        refused = ""
        for task in sorted(service(agent), key=lambda t: (-t.resources.cpu, t.id)):
            job = jobs.get(task.job_id)
            if job is None:
                refused = f"job {task.job_id} of task {task.id} unknown"
                break
            if job.budget.policy is Policy.SELF_MANAGED:
                refused = f"task {task.id}: job {job.id} moves its own tasks (selfManaged)"
                break
            ask = task.resources.as_tuple()
            spots = [k for k, f in free.items() if k not in barred and _fits(trial.get(k, f), ask)]
            if not spots:
                refused = f"task {task.id} fits on no other agent"
                break
            target = min(
                spots, key=lambda k: (sum(trial.get(k, free[k])[:2]), k)
            )  # best fit: least left over
            already = trial_planned.get(job.id, 0)
            # At its stop the move's own replacement is Started; other moves of the job are make-before-
            # break too, so they leave availability where it was and only spend rate (the ghosts below).
            view = _job_with_replacements(job, 1)
            ghosts = [Eviction(job.id, f"{job.id}/planned-{n}", now) for n in range(already)]
            verdict = decide(view, task.id, history + ghosts, now)
            if not verdict.allowed:
                refused = f"task {task.id}: {verdict.reason_message}"
                break
            trial[target] = [f - a for f, a in zip(trial.get(target, free[target]), ask, strict=True)]
            trial_planned[job.id] = already + 1
            moves.append(
                TaskMove(
                    task.id,
                    job.id,
                    agent.id,
                    target,
                    f"consolidating {agent.id} ({_utilisation(agent):.0%} used): budget allows it "
                    f"({verdict.quota.message})",
                )
            )
        if refused:
            out.notes.append(f"{g.state.id}: not consolidating {agent.id}: {refused}")
            continue
        batch = len(agent.tasks) - len(moves)
        free.update(trial)
        free.pop(agent.id, None)
        planned = trial_planned
        emptied.add(agent.id)
        targets.update(m.to_agent for m in moves)
        total_free, capacity = after_free, after_cap
        taken += 1
        out.moves.extend(moves)
        wait = f"; waits for {batch} batch tasks to finish" if batch else ""
        out.phase_out.append(
            AgentAction(
                agent.id,
                agent.instance_id,
                g.state.id,
                f"consolidation: {_utilisation(agent):.0%} used; {len(moves)} service tasks move to other "
                f"agents within their budgets{wait}; terminated once empty",
            )
        )
