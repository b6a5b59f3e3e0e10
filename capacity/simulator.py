"""Deterministic discrete-event simulation of a day of demand through a capacity policy.

The trace (seeded) is a diurnal service load on both tiers plus bursts of short batch jobs on the flex
tier. A best-fit scheduler places tasks on Active agents of their tier; instances take `boot_s` from
launch to a registered agent. Policies see the cluster the way the controller does: `TitusPolicy` runs
the real `capacity.planner.plan`; two baselines stand in for cluster-autoscaler and nomad-autoscaler's
target-value strategy. Everything is driven by one event heap, so a run is a pure function of the seed.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from capacity.model import (
    ActionKind,
    Agent,
    AgentState,
    CapacityGroup,
    Lifecycle,
    NodeGroupState,
    PendingTask,
    PlanInputs,
    RecentAction,
    Resources,
    Tier,
    TierConfig,
    instances_needed,
)
from capacity.planner import plan

Vec = tuple[float, float, float, float]
INSTANCE = Resources(cpu=16, memory_mb=65536, disk_mb=200 * 1024, network_mbps=10_000)
DAY_S = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class TraceTask:
    id: int
    tier: Tier
    arrival: float
    duration: float
    res: Vec
    kind: str


@dataclass(frozen=True, slots=True)
class Trace:
    tasks: tuple[TraceTask, ...]
    capacity_groups: tuple[CapacityGroup, ...]
    start: float
    end: float


def _size(rng: random.Random, kind: str) -> Vec:
    cpu = rng.choice((1.0, 2.0, 2.0, 4.0)) if kind == "service" else rng.choice((1.0, 1.0, 2.0))
    mem = cpu * rng.choice((2048.0, 3072.0, 4096.0))
    return (cpu, mem, 10 * 1024.0, rng.choice((100.0, 200.0, 400.0)))


def make_trace(
    seed: int = 7, warmup_s: float = 3 * 3600.0, scale: float = 1.0, length_s: float = DAY_S
) -> Trace:
    """A seeded day: diurnal services (peak mid-afternoon) on both tiers, batch bursts on flex.

    `scale` multiplies the arrival rates and `length_s` cuts the day short, so tests can replay a small
    version of the same day.
    """
    rng = random.Random(seed)
    tasks: list[TraceTask] = []
    start, end = -warmup_s, length_s

    def diurnal(t: float, low: float, high: float) -> float:
        phase = math.sin(2 * math.pi * (t / DAY_S - 0.375))  # trough ~03:00, peak ~15:00
        return low + (high - low) * (phase + 1) / 2

    def poisson(tier: Tier, low: float, high: float, mean_dur: float) -> None:
        t = start
        while True:
            t += rng.expovariate(high * scale)
            if t >= end:
                return
            if rng.random() * high <= diurnal(t, low, high):  # thinning of a non-homogeneous process
                dur = max(300.0, rng.expovariate(1 / mean_dur))
                tasks.append(TraceTask(0, tier, t, dur, _size(rng, "service"), "service"))

    # Service arrivals (per second) and mean lifetime; steady state = rate * lifetime tasks.
    poisson(Tier.FLEX, 0.10, 0.30, 2700.0)
    poisson(Tier.CRITICAL, 0.015, 0.035, 5400.0)
    for _ in range(10):  # batch bursts: hundreds of short tasks within two minutes
        at = rng.uniform(start + 1800, end - 1800)
        for _ in range(int(rng.randint(150, 600) * scale)):
            dur = rng.uniform(300.0, 1200.0)
            tasks.append(TraceTask(0, Tier.FLEX, at + rng.uniform(0, 120), dur, _size(rng, "batch"), "batch"))
    tasks.sort(key=lambda k: k.arrival)
    numbered = tuple(TraceTask(i, k.tier, k.arrival, k.duration, k.res, k.kind) for i, k in enumerate(tasks))
    groups = (
        CapacityGroup("api", Tier.CRITICAL, Resources(2, 4096, 10240, 200), int(120 * scale) or 1),
        CapacityGroup("payments", Tier.CRITICAL, Resources(4, 8192, 10240, 400), int(40 * scale) or 1),
        CapacityGroup("search", Tier.CRITICAL, Resources(1, 2048, 10240, 100), int(100 * scale) or 1),
    )
    return Trace(numbered, groups, start, end)


# ----------------------------------------------------------------------------------------------------------
# Cluster state


@dataclass(slots=True)
class SimAgent:
    id: str
    group: str
    tier: Tier
    launched_at: float
    ready_at: float
    used: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])
    tasks: set[int] = field(default_factory=set)
    lifecycle: Lifecycle = Lifecycle.ACTIVE
    idle_since: float | None = None
    #: The planner's view of this agent, rebuilt only after the agent changed.
    view: Agent | None = None

    def ready(self, now: float) -> bool:
        return self.ready_at <= now

    def fits(self, res: Vec) -> bool:
        u = self.used
        return (
            u[0] + res[0] <= INSTANCE.cpu + 1e-9
            and u[1] + res[1] <= INSTANCE.memory_mb + 1e-9
            and u[2] + res[2] <= INSTANCE.disk_mb + 1e-9
            and u[3] + res[3] <= INSTANCE.network_mbps + 1e-9
        )

    def utilisation(self) -> float:
        return max(self.used[0] / INSTANCE.cpu, self.used[1] / INSTANCE.memory_mb)


@dataclass(frozen=True, slots=True)
class SimGroup:
    id: str
    tier: Tier
    min_size: int
    max_size: int


@dataclass(slots=True)
class Decision:
    launch: dict[str, int] = field(default_factory=dict)
    phase_out: list[str] = field(default_factory=list)
    reactivate: list[str] = field(default_factory=list)
    terminate: list[str] = field(default_factory=list)
    next_at: float | None = None


class SimState:
    """What a policy may look at: agents (ready or booting), the pending queue, the groups."""

    def __init__(self, trace: Trace, groups: Sequence[SimGroup]) -> None:
        self.trace = trace
        self.groups = {g.id: g for g in groups}
        self.agents: dict[str, SimAgent] = {}
        self.pending: dict[int, float] = {}  # task id -> pending since (insertion order = FIFO)
        self.task_agent: dict[int, str] = {}
        self.serial = 0

    def instances(self, group: str) -> list[SimAgent]:
        return [a for a in self.agents.values() if a.group == group]


class Policy(Protocol):
    name: str

    def decide(self, state: SimState, now: float) -> Decision: ...


# ----------------------------------------------------------------------------------------------------------
# Policies


class TitusPolicy:
    """The real planner, fed the simulated cluster exactly as the controller would feed it."""

    name = "titus"

    def __init__(self, tiers: dict[Tier, TierConfig]) -> None:
        self.tiers = tiers
        self.recent: list[RecentAction] = []

    def decide(self, state: SimState, now: float) -> Decision:
        tasks = state.trace.tasks
        agents = tuple(_view(a) for a in state.agents.values() if a.ready_at <= now)
        pending = tuple(
            PendingTask(str(tid), tasks[tid].tier, Resources.of(tasks[tid].res), since)
            for tid, since in state.pending.items()
        )
        groups = tuple(
            NodeGroupState(
                g.id,
                g.tier,
                g.min_size,
                g.max_size,
                len(inst := state.instances(g.id)),
                "m5.4xlarge",
                INSTANCE,
                tuple(a.id for a in inst),
            )
            for g in state.groups.values()
        )
        self.recent = [r for r in self.recent if now - r.at < 3600]
        p = plan(
            PlanInputs(self.tiers, state.trace.capacity_groups, pending, agents, groups, tuple(self.recent)),
            now,
        )
        decision = Decision(next_at=p.next_decision_at)
        for d in p.desired:
            if d.desired > d.current:
                decision.launch[d.node_group_id] = d.desired - d.current
                self.recent.append(RecentAction(ActionKind.SCALE_UP, d.node_group_id, now))
        for a in p.phase_out:
            decision.phase_out.append(a.agent_id)
            self.recent.append(RecentAction(ActionKind.PHASE_OUT, a.node_group_id, now, 1, a.agent_id))
        decision.reactivate.extend(a.agent_id for a in p.reactivate)
        for a in p.terminate:
            decision.terminate.append(a.agent_id)
            self.recent.append(RecentAction(ActionKind.TERMINATE, a.node_group_id, now))
        return decision


def _view(a: SimAgent) -> Agent:
    if a.view is None:
        a.view = Agent(
            id=a.id,
            instance_id=a.id,
            node_group_id=a.group,
            tier=a.tier,
            lifecycle=a.lifecycle,
            state=AgentState.REGISTERED,
            resources=INSTANCE,
            used=Resources.of(a.used),
            task_ids=tuple(str(t) for t in a.tasks),
            critical_task_count=len(a.tasks) if a.tier is Tier.CRITICAL else 0,
            idle_since=a.idle_since,
        )
    return a.view


def _tier_pending(state: SimState, tier: Tier) -> Vec:
    total = [0.0, 0.0, 0.0, 0.0]
    tasks = state.trace.tasks
    for tid in state.pending:
        if tasks[tid].tier is tier:
            for k in range(4):
                total[k] += tasks[tid].res[k]
    return (total[0], total[1], total[2], total[3])


class ClusterAutoscalerPolicy:
    """cluster-autoscaler's shape: scale up for unschedulable tasks (counting upcoming nodes), scale down
    nodes under a utilisation threshold for `unneeded_s` by draining them (their tasks are evicted and
    rescheduled), at most one non-empty node per loop, none within `delay_after_add_s` of a scale-up."""

    name = "cluster_autoscaler"

    def __init__(
        self, threshold: float = 0.5, unneeded_s: float = 600.0, delay_after_add_s: float = 600.0
    ) -> None:
        self.threshold = threshold
        self.unneeded_s = unneeded_s
        self.delay_after_add_s = delay_after_add_s
        self.unneeded_since: dict[str, float] = {}
        self.last_add: dict[str, float] = {}

    def decide(self, state: SimState, now: float) -> Decision:
        d = Decision()
        for g in state.groups.values():
            inst = state.instances(g.id)
            booting = sum(1 for a in inst if not a.ready(now))
            pending = _tier_pending(state, g.tier)
            need = instances_needed(pending, INSTANCE) - booting
            if need > 0:
                n = min(need, g.max_size - len(inst))
                if n > 0:
                    d.launch[g.id] = n
                    self.last_add[g.id] = now
                continue
            if any(p > 0 for p in pending) or now - self.last_add.get(g.id, -1e18) < self.delay_after_add_s:
                continue
            ready = [a for a in inst if a.ready(now)]
            removable = len(inst) - g.min_size
            empties: list[SimAgent] = []
            busy: list[SimAgent] = []
            for a in ready:
                if a.utilisation() < self.threshold:
                    since = self.unneeded_since.setdefault(a.id, now)
                    if now - since >= self.unneeded_s:
                        (busy if a.tasks else empties).append(a)
                else:
                    self.unneeded_since.pop(a.id, None)
            for a in empties[: min(10, removable)]:
                d.terminate.append(a.id)
                removable -= 1
            if removable > 0 and busy:
                victim = min(busy, key=lambda a: (a.utilisation(), a.id))
                if _fits_elsewhere(state, victim, now):
                    d.terminate.append(victim.id)
        return d


def _fits_elsewhere(state: SimState, victim: SimAgent, now: float) -> bool:
    """cluster-autoscaler only drains a node whose pods fit on the remaining nodes."""
    free = {
        a.id: [INSTANCE.cpu - a.used[0], INSTANCE.memory_mb - a.used[1]]
        for a in state.agents.values()
        if a.group == victim.group and a.id != victim.id and a.ready(now) and a.lifecycle is Lifecycle.ACTIVE
    }
    for tid in victim.tasks:
        res = state.trace.tasks[tid].res
        spot = next((k for k, f in free.items() if f[0] >= res[0] and f[1] >= res[1]), None)
        if spot is None:
            return False
        free[spot][0] -= res[0]
        free[spot][1] -= res[1]
    return True


class TargetUtilisationPolicy:
    """nomad-autoscaler's target-value strategy on allocated cpu/memory: new = ceil(n * metric / target),
    with a cooldown; scale-in drains the least busy nodes."""

    name = "target_utilisation"

    def __init__(self, target: float = 0.75, cooldown_s: float = 120.0) -> None:
        self.target = target
        self.cooldown_s = cooldown_s
        self.last: dict[str, float] = {}

    def decide(self, state: SimState, now: float) -> Decision:
        d = Decision()
        for g in state.groups.values():
            if now - self.last.get(g.id, -1e18) < self.cooldown_s:
                continue
            inst = state.instances(g.id)
            ready = [a for a in inst if a.ready(now)]
            if not ready:
                if state.pending and not inst:
                    d.launch[g.id] = 1
                    self.last[g.id] = now
                continue
            cpu = sum(a.used[0] for a in ready) / (INSTANCE.cpu * len(ready))
            mem = sum(a.used[1] for a in ready) / (INSTANCE.memory_mb * len(ready))
            desired = math.ceil(len(inst) * max(cpu, mem) / self.target)
            desired = max(g.min_size, min(g.max_size, desired))
            if desired > len(inst):
                d.launch[g.id] = desired - len(inst)
                self.last[g.id] = now
            elif desired < len(inst):
                victims = sorted(ready, key=lambda a: (a.utilisation(), a.id))[: len(inst) - desired]
                d.terminate.extend(a.id for a in victims)
                self.last[g.id] = now
        return d


# ----------------------------------------------------------------------------------------------------------
# The event loop

_ARRIVE, _FINISH, _BOOT, _TICK = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class SimResult:
    policy: str
    instance_hours: float
    oracle_instance_hours: float
    instance_hours_ratio: float
    pending_p95_s: float
    critical_below_reservation_minutes: int
    critical_tasks_killed: int
    scale_actions: int
    tasks: int
    #: Task runs killed by a scale-down (evicted and restarted elsewhere), any tier.
    tasks_evicted: int = 0

    def to_json(self) -> dict[str, float | int]:
        return {
            "instance_hours_ratio": round(self.instance_hours_ratio, 4),
            "pending_p95_s": round(self.pending_p95_s, 1),
            "critical_below_reservation_minutes": self.critical_below_reservation_minutes,
            "critical_tasks_killed": self.critical_tasks_killed,
            "scale_actions": self.scale_actions,
            "flex_instance_hours": round(self.instance_hours, 1),
            "oracle_instance_hours": round(self.oracle_instance_hours, 1),
            "tasks": self.tasks,
            "tasks_evicted": self.tasks_evicted,
        }


def oracle_instance_hours(trace: Trace) -> float:
    """Flex instances exactly needed each minute for the tasks that want to run then (perfect packing)."""
    minutes = int((trace.end - 0) // 60)
    deltas = [[0.0] * 4 for _ in range(minutes + 1)]
    for t in trace.tasks:
        if t.tier is not Tier.FLEX:
            continue
        first = max(0, math.ceil(t.arrival / 60))
        last = min(minutes, math.ceil((t.arrival + t.duration) / 60))
        if last <= first:
            continue
        for k in range(4):
            deltas[first][k] += t.res[k]
            deltas[last][k] -= t.res[k]
    total = 0
    run = [0.0] * 4
    for m in range(minutes):
        for k in range(4):
            run[k] += deltas[m][k]
        total += instances_needed(tuple(run), INSTANCE)
    return total / 60.0


def simulate(
    trace: Trace,
    policy: Policy,
    boot_s: float = 90.0,
    tick_s: float = 10.0,
    samples: list[tuple[float, int, int, float, int]] | None = None,
) -> SimResult:
    """Replay the trace; `samples`, if given, receives per minute (t, flex instances, ready, used cpu,
    phased out) for plots and diagnosis."""
    crit_need = instances_needed(
        sum((g.reservation() for g in trace.capacity_groups), Resources()).scaled(1.05), INSTANCE
    )
    groups = [
        SimGroup("critical-a", Tier.CRITICAL, 0, 400),
        SimGroup("flex-a", Tier.FLEX, 0, 2000),
    ]
    if not isinstance(policy, TitusPolicy):
        # Without a reservation-aware controller an operator pins the critical group's min at the
        # reservation; the baselines get that static floor so the comparison is about flex behaviour.
        groups[0] = SimGroup("critical-a", Tier.CRITICAL, crit_need, 400)
    state = SimState(trace, groups)
    tasks = trace.tasks
    events: list[tuple[float, int, int, int | str]] = []
    seq = 0

    def push(at: float, kind: int, payload: int | str) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (at, seq, kind, payload))

    def launch(group: SimGroup, now: float, booted: bool = False) -> None:
        state.serial += 1
        agent = SimAgent(
            f"i-{group.id}-{state.serial:06d}", group.id, group.tier, now, now if booted else now + boot_s
        )
        agent.idle_since = agent.ready_at
        state.agents[agent.id] = agent
        if not booted:
            push(agent.ready_at, _BOOT, agent.id)

    for _ in range(crit_need):
        launch(groups[0], trace.start, booted=True)
    for t in tasks:
        push(t.arrival, _ARRIVE, t.id)
    push(trace.start, _TICK, 0)

    pending_total: dict[int, float] = {}
    finish_gen: dict[int, int] = {}
    critical_killed = 0
    evicted = 0
    scale_actions = 0
    flex_seconds = 0.0
    last_t = trace.start
    below_minutes = 0
    next_minute = 0.0
    reservation = sum((g.reservation() for g in trace.capacity_groups), Resources()).as_tuple()
    tick_gen = 0

    def start(tid: int, agent: SimAgent, now: float) -> None:
        res = tasks[tid].res
        for k in range(4):
            agent.used[k] += res[k]
        agent.tasks.add(tid)
        agent.idle_since = None
        agent.view = None
        state.task_agent[tid] = agent.id
        since = state.pending.pop(tid)
        pending_total[tid] = pending_total.get(tid, 0.0) + (now - since)
        finish_gen[tid] = finish_gen.get(tid, 0) + 1
        push(now + tasks[tid].duration, _FINISH, tid * 1000 + finish_gen[tid] % 1000)

    def place_anywhere(tid: int, now: float) -> bool:
        res = tasks[tid].res
        tier = tasks[tid].tier
        best: SimAgent | None = None
        for a in state.agents.values():
            if (
                a.tier is tier
                and a.lifecycle is Lifecycle.ACTIVE
                and a.ready_at <= now
                and a.fits(res)
                and (best is None or a.used[0] > best.used[0])  # best fit: the fullest agent that fits
            ):
                best = a
        if best is None:
            return False
        start(tid, best, now)
        return True

    def fill(agent: SimAgent, now: float) -> None:
        """Resources grew on one agent only, so only it can take tasks that were waiting."""
        if agent.lifecycle is not Lifecycle.ACTIVE or agent.ready_at > now:
            return
        for tid in list(state.pending):
            if tasks[tid].tier is agent.tier and agent.fits(tasks[tid].res):
                start(tid, agent, now)

    def remove(agent_id: str, now: float) -> None:
        nonlocal critical_killed, evicted
        agent = state.agents.pop(agent_id, None)
        if agent is None:
            return
        evicted += len(agent.tasks)
        for tid in sorted(agent.tasks):
            if tasks[tid].tier is Tier.CRITICAL:
                critical_killed += 1
            del state.task_agent[tid]
            state.pending[tid] = now  # evicted: back to the queue, restarted from scratch
            finish_gen[tid] = finish_gen.get(tid, 0) + 1
        for tid in sorted(agent.tasks):
            place_anywhere(tid, now)

    while events:
        now, _, kind, payload = heapq.heappop(events)
        if now > trace.end:
            break
        # Integrate flex instance-seconds and sample critical capacity per minute over the measured day.
        if now > 0:
            flex_count = sum(1 for a in state.agents.values() if a.tier is Tier.FLEX)
            flex_seconds += flex_count * (now - max(last_t, 0.0))
            while next_minute <= now:
                ready = [
                    a for a in state.agents.values() if a.tier is Tier.CRITICAL and a.ready_at <= next_minute
                ]
                cap = INSTANCE.as_tuple()
                if any(len(ready) * cap[k] < reservation[k] - 1e-9 for k in range(4)):
                    below_minutes += 1
                if samples is not None:
                    flex = [a for a in state.agents.values() if a.tier is Tier.FLEX]
                    samples.append(
                        (
                            next_minute,
                            len(flex),
                            sum(1 for a in flex if a.ready_at <= next_minute),
                            sum(a.used[0] for a in flex),
                            sum(1 for a in flex if a.lifecycle is not Lifecycle.ACTIVE),
                        )
                    )
                next_minute += 60.0
        last_t = now
        if kind == _ARRIVE:
            tid = int(payload)
            state.pending[tid] = now
            place_anywhere(tid, now)
        elif kind == _FINISH:
            tid, gen = divmod(int(payload), 1000)
            if finish_gen.get(tid, 0) % 1000 != gen or tid not in state.task_agent:
                continue  # this run of the task was evicted
            agent = state.agents[state.task_agent.pop(tid)]
            agent.tasks.discard(tid)
            agent.view = None
            res = tasks[tid].res
            for k in range(4):
                agent.used[k] -= res[k]
            if not agent.tasks:
                agent.used = [0.0, 0.0, 0.0, 0.0]
                agent.idle_since = now
            fill(agent, now)
        elif kind == _BOOT:
            booted = state.agents.get(str(payload))
            if booted is not None:
                booted.idle_since = now
                booted.view = None
                fill(booted, now)
        elif kind == _TICK:
            if int(payload) != tick_gen:
                continue  # superseded: an earlier wake-up already decided
            decision = policy.decide(state, now)
            for gid, n in decision.launch.items():
                scale_actions += 1
                for _ in range(n):
                    launch(state.groups[gid], now)
            for aid in decision.phase_out:
                if aid in state.agents:
                    state.agents[aid].lifecycle = Lifecycle.PHASED_OUT
                state.agents[aid].view = None
            for aid in decision.reactivate:
                if aid in state.agents:
                    state.agents[aid].lifecycle = Lifecycle.ACTIVE
                    state.agents[aid].view = None
                    fill(state.agents[aid], now)
            for aid in decision.terminate:
                scale_actions += 1
                remove(aid, now)
            tick_gen += 1
            wake = now + tick_s
            if decision.next_at is not None and now < decision.next_at < wake:
                wake = decision.next_at
            push(wake, _TICK, tick_gen)
    flex_seconds += sum(1 for a in state.agents.values() if a.tier is Tier.FLEX) * max(
        0.0, trace.end - max(last_t, 0.0)
    )
    waits = []
    for t in tasks:
        if t.arrival < 0 or t.arrival > trace.end:
            continue
        wait = pending_total.get(t.id, 0.0)
        if t.id in state.pending:
            wait += trace.end - state.pending[t.id]
        waits.append(wait)
    waits.sort()
    p95 = waits[min(len(waits) - 1, int(0.95 * len(waits)))] if waits else 0.0
    oracle = oracle_instance_hours(trace)
    hours = flex_seconds / 3600.0
    return SimResult(
        policy=policy.name,
        instance_hours=hours,
        oracle_instance_hours=oracle,
        instance_hours_ratio=hours / oracle if oracle else float("inf"),
        pending_p95_s=p95,
        critical_below_reservation_minutes=below_minutes,
        critical_tasks_killed=critical_killed,
        scale_actions=scale_actions,
        tasks=len(waits),
        tasks_evicted=evicted,
    )


def default_tiers() -> dict[Tier, TierConfig]:
    return {Tier.CRITICAL: TierConfig.default(Tier.CRITICAL), Tier.FLEX: TierConfig.default(Tier.FLEX)}
