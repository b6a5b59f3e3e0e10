"""Deterministic discrete-event simulation of seeded days of demand through a capacity policy.

Three traces (seeded): `day` (diurnal services on both tiers plus bursts of short batch jobs on flex),
`deploys` (a diurnal service mix on flex with deploy waves: a quarter of the jobs are redeployed every four
hours, the new version's tasks arrive while the old ones still run), and `arrays` (a light service base
with storms of large batch arrays). Every task belongs to a job with a Titus disruption budget.

A best-fit scheduler places tasks on Active agents of their tier; an instance takes a boot time drawn from
a distribution (60-180 s uniform by default) from launch to a registered agent. Policies see the cluster
the way their real counterparts do:

* `TitusPolicy` runs the real `capacity.planner.plan`, jobs and eviction history included. Its
  consolidation moves are make-before-break: the replacement starts on the target (taking `task_start_s`)
  and only then is the original stopped.
* `ClusterAutoscalerPolicy` and `KarpenterPolicy` follow the published rules of cluster-autoscaler and
  Karpenter (documented on each class). Both evict through the Kubernetes eviction API, which honours a
  PodDisruptionBudget: a job's `availabilityPercentageLimit` becomes a PDB minAvailable (percentage,
  rounded up, as Kubernetes rounds), `unhealthyTasksLimit` a maxUnavailable; Titus's rates, time windows,
  relocation limits and self-managed policy have no PDB equivalent, so they are not seen. Eviction is
  break-before-make: the evicted task is pending until placed again.
* `TargetUtilisationPolicy` is nomad-autoscaler's target-value strategy.

Every system-initiated stop of a running task (any policy) is judged by the same eviction core
(`master.core.disruption.decide`) at the moment it happens, with the job's state at that moment (for a
make-before-break move, the replacement is already Started); a refusal there is a budget violation. Service
tasks keep their end time across an eviction (the service wants the instance until then); an evicted batch
task starts over (its work is lost). Everything is driven by one event heap, so a run is a pure function
of the trace and the seed.
"""

from __future__ import annotations

import heapq
import math
import random
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
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
    RunningTask,
    Tier,
    TierConfig,
    instances_needed,
)
from capacity.planner import plan
from master.core.disruption import (
    STARTED,
    Budget,
    Eviction,
    JobView,
    TaskHealth,
    decide,
)
from master.core.disruption import Policy as BudgetPolicy

Vec = tuple[float, float, float, float]
INSTANCE = Resources(cpu=16, memory_mb=65536, disk_mb=200 * 1024, network_mbps=10_000)
DAY_S = 24 * 3600.0
#: Simulated time 0 is Monday 2026-03-02 00:00 UTC, so budgets' time windows meet real weekdays.
EPOCH = 1772409600.0


@dataclass(frozen=True, slots=True)
class TraceTask:
    id: int
    tier: Tier
    arrival: float
    duration: float
    res: Vec
    kind: str
    job: str = ""


@dataclass(frozen=True, slots=True)
class SimJob:
    id: str
    tier: Tier
    batch: bool
    budget: Budget


@dataclass(frozen=True, slots=True)
class Trace:
    tasks: tuple[TraceTask, ...]
    capacity_groups: tuple[CapacityGroup, ...]
    start: float
    end: float
    jobs: Mapping[str, SimJob] = field(default_factory=dict)
    name: str = "day"


def _size(rng: random.Random, kind: str) -> Vec:
    cpu = rng.choice((1.0, 2.0, 2.0, 4.0)) if kind == "service" else rng.choice((1.0, 1.0, 2.0))
    mem = cpu * rng.choice((2048.0, 3072.0, 4096.0))
    return (cpu, mem, 10 * 1024.0, rng.choice((100.0, 200.0, 400.0)))


def _service_budget(rng: random.Random) -> Budget:
    """A seeded mix of the budgets service owners pick (every policy and rate, some with windows)."""
    r = rng.random()
    if r < 0.45:
        doc: dict[str, object] = {
            "availabilityPercentageLimit": {"percentageOfHealthyContainers": rng.choice((90, 95))},
            "ratePercentagePerHour": {"maxPercentageOfContainersRelocatedInHour": rng.choice((20, 50))},
        }
    elif r < 0.70:
        doc = {
            "unhealthyTasksLimit": {"limitOfUnhealthyContainers": rng.choice((1, 2, 3))},
            "ratePerInterval": {"intervalMs": 300_000, "limitPerInterval": rng.choice((1, 2))},
        }
    elif r < 0.85:
        doc = {
            "availabilityPercentageLimit": {"percentageOfHealthyContainers": 80},
            "ratePercentagePerInterval": {"intervalMs": 600_000, "percentageLimitPerInterval": 10},
            "timeWindows": [
                {
                    "days": ["Weekdays"],
                    "hourlyTimeWindows": [{"startHour": 9, "endHour": 17}],
                    "timeZone": "America/Los_Angeles",
                }
            ],
        }
    elif r < 0.93:
        doc = {"availabilityPercentageLimit": {"percentageOfHealthyContainers": 75}, "rateUnlimited": {}}
    else:
        doc = {"selfManaged": {"relocationTimeMs": 1_800_000}}
    return Budget.from_wire(doc)


def _batch_budget() -> Budget:
    return Budget.from_wire({"relocationLimit": {"limit": 1}, "rateUnlimited": {}}, batch=True)


class _Builder:
    """Collects a trace's tasks and jobs; job assignment uses its own seeded stream."""

    def __init__(self, seed: int, start: float, end: float, scale: float) -> None:
        self.rng = random.Random(seed)
        self.jrng = random.Random(seed * 7919 + 1)
        self.start, self.end, self.scale = start, end, scale
        self.tasks: list[TraceTask] = []
        self.jobs: dict[str, SimJob] = {}

    def service_jobs(self, prefix: str, tier: Tier, n: int) -> tuple[list[str], list[float]]:
        ids, weights = [], []
        for k in range(n):
            jid = f"{prefix}-{k:02d}"
            self.jobs[jid] = SimJob(jid, tier, False, _service_budget(self.jrng))
            ids.append(jid)
            weights.append(self.jrng.lognormvariate(0, 1))
        return ids, weights

    def poisson(
        self, tier: Tier, low: float, high: float, mean_dur: float, jobs: tuple[list[str], list[float]]
    ) -> None:
        """Non-homogeneous Poisson arrivals by thinning, trough ~03:00, peak ~15:00."""
        t = self.start
        ids, weights = jobs
        while True:
            t += self.rng.expovariate(high * self.scale)
            if t >= self.end:
                return
            phase = math.sin(2 * math.pi * (t / DAY_S - 0.375))
            if self.rng.random() * high <= low + (high - low) * (phase + 1) / 2:
                dur = max(300.0, self.rng.expovariate(1 / mean_dur))
                job = self.jrng.choices(ids, weights)[0]
                self.tasks.append(TraceTask(0, tier, t, dur, _size(self.rng, "service"), "service", job))

    def batch_job(
        self,
        jid: str,
        at: float,
        size: int,
        spread_s: float,
        dur: tuple[float, float],
        res: Vec | None = None,
    ) -> None:
        self.jobs[jid] = SimJob(jid, Tier.FLEX, True, _batch_budget())
        for _ in range(size):
            d = self.rng.uniform(*dur)
            r = res if res is not None else _size(self.rng, "batch")
            self.tasks.append(TraceTask(0, Tier.FLEX, at + self.rng.uniform(0, spread_s), d, r, "batch", jid))

    def build(self, name: str, groups: tuple[CapacityGroup, ...]) -> Trace:
        self.tasks.sort(key=lambda k: (k.arrival, k.job))
        numbered = tuple(
            TraceTask(i, k.tier, k.arrival, k.duration, k.res, k.kind, k.job)
            for i, k in enumerate(self.tasks)
        )
        return Trace(numbered, groups, self.start, self.end, dict(self.jobs), name)


def _critical_groups(scale: float) -> tuple[CapacityGroup, ...]:
    return (
        CapacityGroup("api", Tier.CRITICAL, Resources(2, 4096, 10240, 200), int(120 * scale) or 1),
        CapacityGroup("payments", Tier.CRITICAL, Resources(4, 8192, 10240, 400), int(40 * scale) or 1),
        CapacityGroup("search", Tier.CRITICAL, Resources(1, 2048, 10240, 100), int(100 * scale) or 1),
    )


def make_trace(
    seed: int = 7, warmup_s: float = 3 * 3600.0, scale: float = 1.0, length_s: float = DAY_S
) -> Trace:
    """The `day` trace: diurnal services (peak mid-afternoon) on both tiers, ten batch bursts on flex.

    `scale` multiplies the arrival rates and `length_s` cuts the day short, so tests can replay a small
    version of the same day.
    """
    b = _Builder(seed, -warmup_s, length_s, scale)
    flex_jobs = b.service_jobs("svc", Tier.FLEX, 40)
    crit_jobs = b.service_jobs("crit", Tier.CRITICAL, 12)
    b.poisson(Tier.FLEX, 0.10, 0.30, 2700.0, flex_jobs)
    b.poisson(Tier.CRITICAL, 0.015, 0.035, 5400.0, crit_jobs)
    for n in range(10):  # batch bursts: hundreds of short tasks within two minutes
        at = b.rng.uniform(b.start + 1800, b.end - 1800)
        b.batch_job(f"burst-{n:02d}", at, int(b.rng.randint(150, 600) * scale), 120.0, (300.0, 1200.0))
    return b.build("day", _critical_groups(scale))


def make_deploy_trace(
    seed: int = 11, warmup_s: float = 3 * 3600.0, scale: float = 1.0, length_s: float = DAY_S
) -> Trace:
    """The `deploys` trace: a diurnal service mix with deploy waves (red/black, as Spinnaker deploys).

    Every four hours a quarter of the flex service jobs are redeployed: the new version (a new job with
    the same budget) starts all its tasks within three minutes, and the old version's tasks stop 5-15
    minutes later, so each wave briefly needs the job twice.
    """
    b = _Builder(seed, -warmup_s, length_s, scale)
    flex_jobs = b.service_jobs("svc", Tier.FLEX, 40)
    crit_jobs = b.service_jobs("crit", Tier.CRITICAL, 12)
    b.poisson(Tier.FLEX, 0.12, 0.36, 3600.0, flex_jobs)
    b.poisson(Tier.CRITICAL, 0.015, 0.035, 5400.0, crit_jobs)
    for n in range(3):
        at = b.rng.uniform(b.start + 1800, b.end - 1800)
        b.batch_job(f"burst-{n:02d}", at, int(b.rng.randint(100, 300) * scale), 120.0, (300.0, 900.0))
    waves = [
        w * 4 * 3600.0 + 3600.0 for w in range(int(length_s // (4 * 3600.0)) + 1) if w * 4 * 3600 < length_s
    ]
    version: dict[str, str] = {j: j for j in flex_jobs[0]}
    for w, at in enumerate(waves):
        chosen = set(b.jrng.sample(flex_jobs[0], max(1, len(flex_jobs[0]) // 4)))
        out: list[TraceTask] = []
        for t in b.tasks:
            base = t.job.split("@")[0]
            if t.kind != "service" or base not in chosen or version[base] != t.job:
                out.append(t)
                continue
            end = t.arrival + t.duration
            if t.arrival >= at:  # arrives after the deploy: it is the new version's task
                out.append(TraceTask(0, t.tier, t.arrival, t.duration, t.res, t.kind, f"{base}@v{w}"))
                continue
            if end <= at:
                out.append(t)
                continue
            stop = at + b.rng.uniform(300.0, 900.0)
            out.append(
                TraceTask(0, t.tier, t.arrival, min(t.duration, stop - t.arrival), t.res, t.kind, t.job)
            )
            arrive = at + b.rng.uniform(0.0, 180.0)
            if end - arrive >= 300.0:
                out.append(TraceTask(0, t.tier, arrive, end - arrive, t.res, t.kind, f"{base}@v{w}"))
        for base in chosen:
            new = f"{base}@v{w}"
            b.jobs[new] = SimJob(new, Tier.FLEX, False, b.jobs[base].budget)
            version[base] = new
        b.tasks = out
    return b.build("deploys", _critical_groups(scale))


def make_array_trace(
    seed: int = 13, warmup_s: float = 3 * 3600.0, scale: float = 1.0, length_s: float = DAY_S
) -> Trace:
    """The `arrays` trace: a light service base plus four storms of large batch arrays.

    Each storm submits 3-6 array jobs within ten minutes; an array has 300-1500 identical tasks (same
    resources, durations within 20% of the job's mean of 5-30 minutes) submitted within 30 s.
    """
    b = _Builder(seed, -warmup_s, length_s, scale)
    flex_jobs = b.service_jobs("svc", Tier.FLEX, 30)
    crit_jobs = b.service_jobs("crit", Tier.CRITICAL, 12)
    b.poisson(Tier.FLEX, 0.04, 0.12, 2700.0, flex_jobs)
    b.poisson(Tier.CRITICAL, 0.015, 0.035, 5400.0, crit_jobs)
    for s in range(4):
        storm = b.rng.uniform(b.start + 3600, b.end - 3600)
        for a in range(b.rng.randint(3, 6)):
            at = storm + b.rng.uniform(0, 600)
            mean = b.rng.uniform(300.0, 1800.0)
            cpu = b.rng.choice((1.0, 2.0, 4.0))
            res = (cpu, cpu * b.rng.choice((2048.0, 4096.0)), 10 * 1024.0, 100.0)
            size = int(b.rng.randint(300, 1500) * scale) or 1
            b.batch_job(f"array-{s}-{a}", at, size, 30.0, (0.8 * mean, 1.2 * mean), res)
    return b.build("arrays", _critical_groups(scale))


TRACES = {"day": make_trace, "deploys": make_deploy_trace, "arrays": make_array_trace}


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
    #: Replacements starting here for tasks being moved in (make-before-break); their resources are held.
    incoming: set[int] = field(default_factory=set)
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
    #: Make-before-break moves (task id, target agent id).
    moves: list[tuple[int, str]] = field(default_factory=list)
    next_at: float | None = None


class SimState:
    """What a policy may look at: agents (ready or booting), the pending queue, the groups, the jobs."""

    def __init__(self, trace: Trace, groups: Sequence[SimGroup]) -> None:
        self.trace = trace
        self.groups = {g.id: g for g in groups}
        self.agents: dict[str, SimAgent] = {}
        self.pending: dict[int, float] = {}  # task id -> pending since (insertion order = FIFO)
        self.task_agent: dict[int, str] = {}
        #: Active (pending or running) task ids per job: the job's desired size is their count.
        self.job_active: dict[str, set[int]] = {}
        self.evictions: list[Eviction] = []
        self.serial = 0

    def instances(self, group: str) -> list[SimAgent]:
        return [a for a in self.agents.values() if a.group == group]

    def job_view(self, job: str, replacements: int = 0) -> JobView:
        spec = self.trace.jobs[job]
        active = self.job_active.get(job, set())
        health = tuple(
            TaskHealth(str(t), STARTED if t in self.task_agent else "Accepted") for t in sorted(active)
        )
        health += tuple(TaskHealth(f"{job}/replacement-{n}", STARTED) for n in range(replacements))
        return JobView(job, len(active), spec.budget, health, spec.batch)


class _Jobs(Mapping[str, JobView]):
    """The jobs the planner asks about, built on demand (most jobs are never looked at in a pass)."""

    def __init__(self, state: SimState) -> None:
        self._state = state
        self._cache: dict[str, JobView] = {}

    def __getitem__(self, key: str) -> JobView:
        if key not in self._cache:
            if key not in self._state.trace.jobs:
                raise KeyError(key)
            self._cache[key] = self._state.job_view(key)
        return self._cache[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._state.trace.jobs)

    def __len__(self) -> int:
        return len(self._state.trace.jobs)


class Policy(Protocol):
    name: str

    def decide(self, state: SimState, now: float) -> Decision: ...


# ----------------------------------------------------------------------------------------------------------
# Policies


class TitusPolicy:
    """The real planner, fed the simulated cluster exactly as the controller would feed it.

    Times handed to the planner are epoch seconds (`EPOCH` + simulated time) so that budgets' time
    windows see real weekdays and hours.
    """

    name = "titus"

    def __init__(self, tiers: dict[Tier, TierConfig]) -> None:
        self.tiers = tiers
        self.recent: list[RecentAction] = []
        self.owned: set[str] = set()

    def decide(self, state: SimState, now: float) -> Decision:
        tasks = state.trace.tasks
        at = EPOCH + now
        agents = tuple(_view(a, state) for a in state.agents.values() if a.ready_at <= now)
        pending = tuple(
            PendingTask(str(tid), tasks[tid].tier, Resources.of(tasks[tid].res), EPOCH + since)
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
        self.recent = [r for r in self.recent if at - r.at < 3600]
        self.owned &= set(state.agents)
        recent_evictions = tuple(e for e in state.evictions[-2000:] if at - e.at < 2 * 3600)
        p = plan(
            PlanInputs(
                self.tiers,
                state.trace.capacity_groups,
                pending,
                agents,
                groups,
                tuple(self.recent),
                frozenset(self.owned),
                _Jobs(state),
                recent_evictions,
            ),
            at,
        )
        decision = Decision(next_at=None if p.next_decision_at is None else p.next_decision_at - EPOCH)
        for d in p.desired:
            if d.desired > d.current:
                decision.launch[d.node_group_id] = d.desired - d.current
                self.recent.append(RecentAction(ActionKind.SCALE_UP, d.node_group_id, at))
        for a in p.phase_out:
            decision.phase_out.append(a.agent_id)
            self.owned.add(a.agent_id)
            self.recent.append(RecentAction(ActionKind.PHASE_OUT, a.node_group_id, at, 1, a.agent_id))
        for a in p.reactivate:
            decision.reactivate.append(a.agent_id)
            self.owned.discard(a.agent_id)
        for a in p.terminate:
            decision.terminate.append(a.agent_id)
            self.recent.append(RecentAction(ActionKind.TERMINATE, a.node_group_id, at))
        decision.moves.extend((int(m.task_id), m.to_agent) for m in p.moves)
        return decision


def _view(a: SimAgent, state: SimState) -> Agent:
    if a.view is None:
        tasks = state.trace.tasks
        ids = sorted(a.tasks | a.incoming)
        a.view = Agent(
            id=a.id,
            instance_id=a.id,
            node_group_id=a.group,
            tier=a.tier,
            lifecycle=a.lifecycle,
            state=AgentState.REGISTERED,
            resources=INSTANCE,
            used=Resources.of(a.used),
            task_ids=tuple(str(t) for t in ids),
            critical_task_count=len(ids) if a.tier is Tier.CRITICAL else 0,
            idle_since=None if a.idle_since is None else EPOCH + a.idle_since,
            tasks=tuple(
                RunningTask(str(t), tasks[t].job, Resources.of(tasks[t].res), tasks[t].kind == "batch")
                for t in ids
            ),
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


def pdb_allows(state: SimState, job: str, evicting: int) -> bool:
    """Kubernetes' PodDisruptionBudget check for evicting `evicting` more tasks of `job` at once.

    disruptionsAllowed = currentHealthy - desiredHealthy; minAvailable from availabilityPercentageLimit
    (rounded up, as Kubernetes rounds percentages), desiredHealthy = desired - maxUnavailable from
    unhealthyTasksLimit; other Titus policies have no PDB, so nothing blocks.
    """
    spec = state.trace.jobs.get(job)
    if spec is None:
        return True
    active = state.job_active.get(job, set())
    desired = len(active)
    healthy = sum(1 for t in active if t in state.task_agent)
    if spec.budget.policy is BudgetPolicy.AVAILABILITY_PERCENTAGE_LIMIT:
        min_available = math.ceil(spec.budget.policy_value * desired / 100.0 - 1e-9)
    elif spec.budget.policy is BudgetPolicy.UNHEALTHY_TASKS_LIMIT:
        min_available = desired - int(spec.budget.policy_value)
    else:
        return True
    return healthy - min_available >= evicting


def _node_pdbs_allow(state: SimState, agent: SimAgent) -> bool:
    per_job: dict[str, int] = {}
    for tid in agent.tasks:
        job = state.trace.tasks[tid].job
        per_job[job] = per_job.get(job, 0) + 1
    return all(pdb_allows(state, job, n) for job, n in per_job.items())


def _fits_elsewhere(state: SimState, victim: SimAgent, now: float, exclude: set[str] | None = None) -> bool:
    """Both autoscalers simulate rescheduling: every task of the node must fit on the remaining nodes."""
    skip = exclude or set()
    free = {
        a.id: [INSTANCE.cpu - a.used[0], INSTANCE.memory_mb - a.used[1]]
        for a in state.agents.values()
        if a.group == victim.group
        and a.id != victim.id
        and a.id not in skip
        and a.ready(now)
        and a.lifecycle is Lifecycle.ACTIVE
    }
    for tid in sorted(victim.tasks, key=lambda t: -state.trace.tasks[t].res[0]):
        res = state.trace.tasks[tid].res
        spot = next((k for k, f in free.items() if f[0] >= res[0] and f[1] >= res[1]), None)
        if spot is None:
            return False
        free[spot][0] -= res[0]
        free[spot][1] -= res[1]
    return True


class ClusterAutoscalerPolicy:
    """cluster-autoscaler's rules (defaults of its flags), per node group:

    * scale-up: unschedulable pods are binpacked onto new nodes; nodes still booting count as upcoming;
      no delay for new pods (`--new-pod-scale-up-delay=0`); the loop runs every 10 s (`--scan-interval`).
    * scale-down: a node is unneeded when its requested cpu or memory is below 50% of allocatable
      (`--scale-down-utilization-threshold=0.5`) and all its pods fit elsewhere; after 10 minutes unneeded
      (`--scale-down-unneeded-time`) it is removed, never within 10 minutes of a scale-up
      (`--scale-down-delay-after-add`) nor while pods are unschedulable. Empty nodes go in bulk (up to 10,
      `--max-empty-bulk-delete`); non-empty nodes are drained one at a time (`--max-drain-parallelism=1`),
      and only if every PodDisruptionBudget of their pods allows the evictions.
    """

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
                if _fits_elsewhere(state, victim, now) and _node_pdbs_allow(state, victim):
                    d.terminate.append(victim.id)
        return d


class KarpenterPolicy:
    """Karpenter's rules (v1 defaults), consolidation without Titus's budgets:

    * provisioning: pending pods are batched (1 s idle, 10 s max) and new nodes launched at once for what
      does not fit; in-flight nodes count as capacity.
    * disruption (`consolidationPolicy: WhenEmptyOrUnderutilized`, `consolidateAfter: 0s`): the
      disruption controller runs one command at a time, every 10 s: emptiness (delete the empty nodes, at
      most 10% of the nodes, the NodePool's default disruption budget `nodes: 10%`), else single-node
      consolidation: delete one node whose pods all fit on the other nodes, cheapest disruption first
      (fewest pods, then least used), once the decision held for 15 s (Karpenter's validation delay).
      Multi-node consolidation (several nodes in one command) is left out, which makes this baseline
      evict less than Karpenter would. A node whose pods a PodDisruptionBudget would block is not a
      candidate. Pods are evicted (break-before-make) and rescheduled by the scheduler.

    `honour_pdbs=False` is the same Karpenter in a cluster whose workloads declare no PDBs at all: the
    issue's "consolidation but no budgets" baseline.
    """

    name = "karpenter"

    def __init__(
        self, budget_fraction: float = 0.1, validation_s: float = 15.0, honour_pdbs: bool = True
    ) -> None:
        self.budget_fraction = budget_fraction
        self.validation_s = validation_s
        self.honour_pdbs = honour_pdbs
        if not honour_pdbs:
            self.name = "karpenter_no_pdbs"
        self.candidate_since: dict[str, float] = {}

    def decide(self, state: SimState, now: float) -> Decision:
        d = Decision()
        valid: set[str] = set()
        for g in state.groups.values():
            inst = state.instances(g.id)
            booting = sum(1 for a in inst if not a.ready(now))
            pending = _tier_pending(state, g.tier)
            need = instances_needed(pending, INSTANCE) - booting
            if need > 0:
                n = min(need, g.max_size - len(inst))
                if n > 0:
                    d.launch[g.id] = n
            ready = [a for a in inst if a.ready(now)]
            removable = len(inst) - g.min_size
            allowed = max(1, int(self.budget_fraction * len(inst)))
            chosen: set[str] = set()
            for a in ready:
                if not a.tasks and not a.incoming and len(chosen) < min(allowed, removable):
                    chosen.add(a.id)
            if any(p > 0 for p in pending):
                d.terminate.extend(sorted(chosen))
                continue  # pods are waiting for capacity: they would land on the nodes we would empty
            if chosen:  # emptiness consolidation is this loop's command
                d.terminate.extend(sorted(chosen))
                continue
            candidates = sorted(
                (a for a in ready if a.tasks),
                key=lambda a: (len(a.tasks), a.utilisation(), a.id),
            )
            for a in candidates:
                if removable <= 0:
                    break
                if (self.honour_pdbs and not _node_pdbs_allow(state, a)) or not _fits_elsewhere(
                    state, a, now, chosen
                ):
                    continue
                # The first valid candidate is this loop's command; it runs once it held for 15 s.
                valid.add(a.id)
                since = self.candidate_since.setdefault(a.id, now)
                if now - since >= self.validation_s:
                    chosen.add(a.id)
                break
            d.terminate.extend(sorted(chosen))
        for aid in list(self.candidate_since):  # a decision that no longer holds starts its wait again
            if aid not in valid:
                del self.candidate_since[aid]
        return d


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

_ARRIVE, _FINISH, _BOOT, _TICK, _MOVED = 0, 1, 2, 3, 4


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
    #: System-initiated stops of running tasks (evictions and make-before-break moves), any tier.
    tasks_evicted: int = 0
    pending_p50_s: float = 0.0
    pending_max_s: float = 0.0
    #: Stops the job's disruption budget refused at the moment they happened.
    budget_violations: int = 0
    batch_tasks_evicted: int = 0
    #: Make-before-break moves whose stop the eviction service refused at the last moment (aborted).
    moves_refused: int = 0
    #: Mean wall time of one policy decision in this run, in milliseconds (not part of a run's identity).
    decision_ms: float = field(default=0.0, compare=False)
    trace: str = "day"

    def to_json(self) -> dict[str, float | int | str]:
        return {
            "instance_hours_ratio": round(self.instance_hours_ratio, 4),
            "pending_p50_s": round(self.pending_p50_s, 1),
            "pending_p95_s": round(self.pending_p95_s, 1),
            "pending_max_s": round(self.pending_max_s, 1),
            "tasks_evicted": self.tasks_evicted,
            "batch_tasks_evicted": self.batch_tasks_evicted,
            "critical_tasks_killed": self.critical_tasks_killed,
            "budget_violations": self.budget_violations,
            "moves_refused": self.moves_refused,
            "scale_actions": self.scale_actions,
            "critical_below_reservation_minutes": self.critical_below_reservation_minutes,
            "flex_instance_hours": round(self.instance_hours, 1),
            "oracle_instance_hours": round(self.oracle_instance_hours, 1),
            "tasks": self.tasks,
            "decision_ms": round(self.decision_ms, 2),
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


def _percentile(values: Sequence[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


def simulate(
    trace: Trace,
    policy: Policy,
    boot_s: tuple[float, float] | float = (60.0, 180.0),
    tick_s: float = 10.0,
    samples: list[tuple[float, int, int, float, int]] | None = None,
    seed: int = 0,
    task_start_s: float = 15.0,
) -> SimResult:
    """Replay the trace; each launch boots in a time drawn uniformly from `boot_s` (or exactly `boot_s`)
    with a stream seeded by `seed`. `samples`, if given, receives per minute (t, flex instances, ready,
    used cpu, phased out) for plots and diagnosis."""
    boot_rng = random.Random(seed)
    low, high = (boot_s, boot_s) if isinstance(boot_s, int | float) else boot_s
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
        boot = 0.0 if booted else boot_rng.uniform(low, high)
        agent = SimAgent(f"i-{group.id}-{state.serial:06d}", group.id, group.tier, now, now + boot)
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
    #: A service task's end: the service wants it until then, wherever it runs.
    end_at: dict[int, float] = {}
    moving: dict[int, tuple[str, str]] = {}  # task -> (source, target) while its replacement starts
    critical_killed = 0
    evicted = 0
    batch_evicted = 0
    violations = 0
    moves_refused = 0
    scale_actions = 0
    flex_seconds = 0.0
    last_t = trace.start
    below_minutes = 0
    next_minute = 0.0
    reservation = sum((g.reservation() for g in trace.capacity_groups), Resources()).as_tuple()
    tick_gen = 0
    decide_times: list[float] = []

    def touch(agent: SimAgent) -> None:
        agent.view = None

    def start(tid: int, agent: SimAgent, now: float) -> None:
        res = tasks[tid].res
        for k in range(4):
            agent.used[k] += res[k]
        agent.tasks.add(tid)
        agent.idle_since = None
        touch(agent)
        state.task_agent[tid] = agent.id
        since = state.pending.pop(tid)
        pending_total[tid] = pending_total.get(tid, 0.0) + (now - since)
        finish_gen[tid] = finish_gen.get(tid, 0) + 1
        if tasks[tid].kind == "service":
            end = end_at.setdefault(tid, now + tasks[tid].duration)
        else:
            end = now + tasks[tid].duration  # batch: a restart does the work again
        push(max(end, now), _FINISH, tid * 1000 + finish_gen[tid] % 1000)

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

    def release(agent: SimAgent, tid: int, now: float) -> None:
        res = tasks[tid].res
        for k in range(4):
            agent.used[k] -= res[k]
        if not agent.tasks and not agent.incoming:
            agent.used = [0.0, 0.0, 0.0, 0.0]
            agent.idle_since = now
        touch(agent)

    def judge(tid: int, now: float, replacements: int) -> None:
        """The eviction core's verdict on a stop at the moment it happens; a refusal is a violation."""
        nonlocal violations, evicted, batch_evicted, critical_killed
        job = tasks[tid].job
        evicted += 1
        if tasks[tid].kind == "batch":
            batch_evicted += 1
        if tasks[tid].tier is Tier.CRITICAL:
            critical_killed += 1
        if job in trace.jobs:
            view = state.job_view(job, replacements)
            if not decide(view, str(tid), state.evictions, EPOCH + now).allowed:
                violations += 1
            state.evictions.append(Eviction(job, str(tid), EPOCH + now))

    def remove(agent_id: str, now: float) -> None:
        agent = state.agents.get(agent_id)
        if agent is None or agent.incoming:
            return  # a replacement is starting there: not removable now
        del state.agents[agent_id]
        for tid in sorted(agent.tasks):
            if tid in moving:
                continue  # its move completes elsewhere; the original stops with its agent
            judge(tid, now, 0)
            del state.task_agent[tid]
            state.pending[tid] = now  # evicted: back to the queue
            finish_gen[tid] = finish_gen.get(tid, 0) + 1
        for tid in sorted(agent.tasks):
            if tid in moving:
                complete_move(tid, now, source_gone=True)
        for tid in sorted(agent.tasks):
            if tid in state.pending:
                place_anywhere(tid, now)

    def begin_move(tid: int, target_id: str, now: float) -> None:
        source_id = state.task_agent.get(tid)
        target = state.agents.get(target_id)
        if source_id is None or target is None or tid in moving or source_id == target_id:
            return
        if (
            target.lifecycle is not Lifecycle.ACTIVE
            or not target.ready(now)
            or not target.fits(tasks[tid].res)
        ):
            return
        res = tasks[tid].res
        for k in range(4):
            target.used[k] += res[k]
        target.incoming.add(tid)
        target.idle_since = None
        touch(target)
        moving[tid] = (source_id, target_id)
        push(now + task_start_s, _MOVED, tid)

    def complete_move(tid: int, now: float, source_gone: bool = False) -> None:
        nonlocal moves_refused
        source_id, target_id = moving.pop(tid)
        target = state.agents[target_id]
        job = tasks[tid].job
        if not source_gone and job in trace.jobs:
            # The stop goes through the eviction service, which may refuse now what the plan allowed (a
            # time window closed, a rate slot was taken meanwhile): then the replacement is dropped.
            verdict = decide(state.job_view(job, 1), str(tid), state.evictions, EPOCH + now)
            if not verdict.allowed:
                moves_refused += 1
                target.incoming.discard(tid)
                release(target, tid, now)
                fill(target, now)
                return
        judge(tid, now, 1)  # the replacement is Started: the original stops now
        source = state.agents.get(source_id)
        if source is not None and not source_gone:
            source.tasks.discard(tid)
            release(source, tid, now)
        target.incoming.discard(tid)
        target.tasks.add(tid)
        touch(target)
        state.task_agent[tid] = target_id

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
            state.job_active.setdefault(tasks[tid].job, set()).add(tid)
            place_anywhere(tid, now)
        elif kind == _FINISH:
            tid, gen = divmod(int(payload), 1000)
            if finish_gen.get(tid, 0) % 1000 != gen or tid not in state.task_agent:
                continue  # this run of the task was evicted
            if tid in moving:  # it ended while its replacement was starting: the replacement is dropped
                _, target_id = moving.pop(tid)
                target = state.agents[target_id]
                target.incoming.discard(tid)
                release(target, tid, now)
                fill(target, now)
            agent = state.agents[state.task_agent.pop(tid)]
            agent.tasks.discard(tid)
            state.job_active.get(tasks[tid].job, set()).discard(tid)
            release(agent, tid, now)
            fill(agent, now)
        elif kind == _BOOT:
            booted = state.agents.get(str(payload))
            if booted is not None:
                booted.idle_since = now
                touch(booted)
                fill(booted, now)
        elif kind == _MOVED:
            tid = int(payload)
            if tid in moving:
                source = state.agents.get(moving[tid][0])
                complete_move(tid, now)
                if source is not None:
                    fill(source, now)
        elif kind == _TICK:
            if int(payload) != tick_gen:
                continue  # superseded: an earlier wake-up already decided
            t0 = time.perf_counter()
            decision = policy.decide(state, now)
            decide_times.append(time.perf_counter() - t0)
            for gid, n in decision.launch.items():
                scale_actions += 1
                for _ in range(n):
                    launch(state.groups[gid], now)
            for aid in decision.phase_out:
                if aid in state.agents:
                    state.agents[aid].lifecycle = Lifecycle.PHASED_OUT
                    touch(state.agents[aid])
            for aid in decision.reactivate:
                if aid in state.agents:
                    state.agents[aid].lifecycle = Lifecycle.ACTIVE
                    touch(state.agents[aid])
                    fill(state.agents[aid], now)
            for tid, target_id in decision.moves:
                begin_move(tid, target_id, now)
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
    oracle = oracle_instance_hours(trace)
    hours = flex_seconds / 3600.0
    return SimResult(
        policy=policy.name,
        instance_hours=hours,
        oracle_instance_hours=oracle,
        instance_hours_ratio=hours / oracle if oracle else float("inf"),
        pending_p95_s=_percentile(waits, 0.95),
        critical_below_reservation_minutes=below_minutes,
        critical_tasks_killed=critical_killed,
        scale_actions=scale_actions,
        tasks=len(waits),
        tasks_evicted=evicted,
        pending_p50_s=_percentile(waits, 0.50),
        pending_max_s=waits[-1] if waits else 0.0,
        budget_violations=violations,
        batch_tasks_evicted=batch_evicted,
        moves_refused=moves_refused,
        decision_ms=1000 * statistics.fmean(decide_times) if decide_times else 0.0,
        trace=trace.name,
    )


def default_tiers() -> dict[Tier, TierConfig]:
    return {Tier.CRITICAL: TierConfig.default(Tier.CRITICAL), Tier.FLEX: TierConfig.default(Tier.FLEX)}
