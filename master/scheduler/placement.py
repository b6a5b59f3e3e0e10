"""The placement engine: `schedule(request) -> reply`, a pure function of a cluster snapshot.

One pass works on private, mutable copies of the free resources so every decision sees the ones made
before it in the same pass (free resources, uniqueHost, zoneBalance counts, capacity-group usage).

Order of work. Tasks are grouped by capacity group. First every group places the tasks that fit in
what is left of its reservation, groups taking turns lowest usage/reservation ratio first; then the
rest are placed best effort, again lowest ratio first, so use beyond reservations is shared fairly.
A critical-tier task beyond its group's reservation may not eat into what other critical groups have
reserved and not yet used (checked on the tier's total free resources), which is what keeps a
reservation honoured across passes. Within a group, tasks only some agents can take (machineId,
availabilityZone, machineType, attribute) go first, so unconstrained work does not fill the few agents
they need; otherwise tasks keep the order the caller gave.

Choosing an agent. Only Active agents of the task's tier, never over-committing any dimension. Tasks
without constraints take the fast path: one lookup in the tier's free index (see `index.py`) for the
fullest agent that fits. Constrained tasks narrow by index first (machineId by id, machineType by the
per-type index, availabilityZone and zoneBalance by the per-zone indexes) and check the remaining
rules per agent. Soft constraints
are an all-or-nothing preference: the engine first looks for an agent meeting hard and soft
constraints together, then for one meeting the hard ones. `spread` tasks take the emptiest agent
not yet running their job, in the zone where their job has fewest tasks.

Every placement only ever removes options from later tasks (resources shrink, uniqueHost and
exclusiveHost exclude more), so a request shape that found no agent will find none later in the pass;
that negative cache is what keeps a full cluster from costing a full scan per pending task. The one
exception, zoneBalance (a placement can raise the minimum and open zones), is handled by keying
job-dependent shapes on how many tasks of the job the pass has placed.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from master.scheduler.constraints import Constraints, merge, parse_constraints
from master.scheduler.index import FreeIndex, LevelScale
from master.scheduler.model import (
    DIMENSIONS,
    LIFECYCLE_ACTIVE,
    REASON_OTHER_TIER,
    TIER_CRITICAL,
    Assignment,
    CapacityGroupView,
    PendingReason,
    PendingTask,
    Resources,
    ScheduleReply,
    ScheduleRequest,
)

Demand = tuple[int, int, int, int, int]
#: How many emptiest-first candidates a spread task looks through for one not running its job.
SPREAD_SCAN = 64
#: How many agents of one index cell the disk/network tie-break looks at.
TIE_SCAN = 8
#: How many failed shapes the negative cache keeps per constraint shape.
NEGATIVE_CACHE_SIZE = 16


def millicores(cpu: float) -> int:
    """Cpu as integer millicores, so sums over thousands of placements never drift."""
    return round(cpu * 1000)


def demand_of(resources: Resources) -> Demand:
    return (
        millicores(resources.cpu),
        resources.memory_mb,
        resources.disk_mb,
        resources.network_mbps,
        resources.gpu,
    )


def _sub(a: Demand, b: Demand) -> Demand:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2], a[3] - b[3], a[4] - b[4])


def _add(a: Demand, b: Demand) -> Demand:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3], a[4] + b[4])


def _within(a: Demand, b: Demand) -> bool:
    return a[0] <= b[0] and a[1] <= b[1] and a[2] <= b[2] and a[3] <= b[3] and a[4] <= b[4]


_ZERO: Demand = (0, 0, 0, 0, 0)


class _Cluster:
    """Mutable per-pass copy of the agents: free resources as parallel lists, plus the free indexes."""

    def __init__(self, request: ScheduleRequest, smallest: Mapping[str, Demand]) -> None:
        agents = request.agents
        # Per tier, the least any pending task asks of each dimension: an agent with less free in some
        # dimension can take nothing in this pass, so it is left out of the indexes altogether.
        self.smallest = smallest
        self.agents = agents
        n = len(agents)
        self.fc = [0] * n
        self.fm = [0] * n
        self.fd = [0] * n
        self.fn = [0] * n
        self.fg = [0] * n
        self.lc = [-1] * n  # cpu level in the free index; -1: not indexed (not Active, or held exclusively)
        self.lr = [-1] * n  # rest (memory, disk, network) level
        self.zone: list[str] = [""] * n
        self.itype: list[str] = [""] * n
        self._attrs: list[dict[str, str] | None] = [None] * n
        self._by_id: dict[str, list[int]] | None = None
        self.tasks_on = [0] * n  # tasks running or placed, any job
        self.exclusive = [False] * n
        self.base_jobs: list[Mapping[str, int]] = [{}] * n
        self.placed_jobs: list[dict[str, int] | None] = [None] * n
        self.tier_zones: dict[str, list[str]] = {}
        self.tier_free: dict[str, list[int]] = {}
        self.tier_index: dict[str, FreeIndex] = {}
        self.zone_index: dict[tuple[str, str], FreeIndex] = {}
        self.type_index: dict[tuple[str, str], FreeIndex] = {}
        self.scale: dict[str, LevelScale] = {}

        # This loop runs once per agent per pass, so it is kept lean: anything only some constraints
        # need (lower-cased attributes, the id lookup) is built on first use instead.
        weights = request.weights
        capacity: dict[str, list[int]] = {}
        zones: dict[str, set[str]] = defaultdict(set)
        itypes: dict[str, set[str]] = defaultdict(set)
        fc, fm, fd, fn, fg = self.fc, self.fm, self.fd, self.fn, self.fg
        for i, agent in enumerate(agents):
            attributes = agent.attributes
            zone = attributes.get("zone")
            itype = attributes.get("instanceType")
            if zone is None or itype is None:
                lowered = self.attrs(i)
                zone = lowered.get("zone", "") if zone is None else zone
                itype = lowered.get("instancetype", "") if itype is None else itype
            zone = self.zone[i] = zone.lower()
            itype = self.itype[i] = itype.lower()
            total, used = agent.total, agent.used
            c = fc[i] = round(total.cpu * 1000) - round(used.cpu * 1000)
            m = fm[i] = total.memory_mb - used.memory_mb
            k = fd[i] = total.disk_mb - used.disk_mb
            w = fn[i] = total.network_mbps - used.network_mbps
            g = fg[i] = total.gpu - used.gpu
            jobs = agent.job_task_counts
            if jobs:
                self.base_jobs[i] = jobs
                self.tasks_on[i] = sum(jobs.values())
            if agent.exclusive:
                self.exclusive[i] = True
            if agent.lifecycle == LIFECYCLE_ACTIVE:
                agent_tier: str = agent.tier
                zones[agent_tier].add(zone)
                itypes[agent_tier].add(itype)
                cap = capacity.get(agent_tier)
                if cap is None:
                    cap = capacity[agent_tier] = [1, 1, 1, 1]
                    self.tier_free[agent_tier] = [0, 0, 0, 0, 0]
                total_cpu = round(total.cpu * 1000)
                if total_cpu > cap[0]:
                    cap[0] = total_cpu
                if total.memory_mb > cap[1]:
                    cap[1] = total.memory_mb
                if total.disk_mb > cap[2]:
                    cap[2] = total.disk_mb
                if total.network_mbps > cap[3]:
                    cap[3] = total.network_mbps
                tf = self.tier_free[agent_tier]
                tf[0] += c if c > 0 else 0
                tf[1] += m if m > 0 else 0
                tf[2] += k if k > 0 else 0
                tf[3] += w if w > 0 else 0
                tf[4] += g if g > 0 else 0
        self.tie: dict[str, tuple[float, float] | None] = {}
        for tier, cap in capacity.items():
            self.scale[tier] = LevelScale(weights.cpu, weights.memory, cap[0], cap[1])
            if weights.disk > 0 or weights.network > 0:
                self.tie[tier] = (weights.disk / cap[2], weights.network / cap[3])
            self.tier_index[tier] = self.scale[tier].index()
            self.tier_zones[tier] = sorted(zones[tier])
            for zone in zones[tier]:
                self.zone_index[(tier, zone)] = self.scale[tier].index()
            for itype in itypes[tier]:
                self.type_index[(tier, itype)] = self.scale[tier].index()
        for i, agent in enumerate(agents):
            if agent.lifecycle == LIFECYCLE_ACTIVE and not agent.exclusive:
                self._index(i, agent.tier)

    def attrs(self, i: int) -> dict[str, str]:
        """Agent attributes with names and values lower-cased (Titus matches them case-insensitively)."""
        lowered = self._attrs[i]
        if lowered is None:
            lowered = self._attrs[i] = {k.lower(): v.lower() for k, v in self.agents[i].attributes.items()}
        return lowered

    def ids(self, i: int) -> tuple[str, str]:
        """The names machineId may use for an agent: its agent id and its "id" attribute."""
        own = self.agents[i].agent_id.lower()
        return (own, self.attrs(i).get("id", own))

    def by_id(self, ident: str) -> list[int]:
        if self._by_id is None:
            self._by_id = defaultdict(list)
            for i in range(len(self.agents)):
                for name in set(self.ids(i)):
                    self._by_id[name].append(i)
        return self._by_id.get(ident, [])

    def _index(self, i: int, tier: str) -> None:
        least = self.smallest.get(tier)
        if least is None or not (
            self.fc[i] >= least[0]
            and self.fm[i] >= least[1]
            and self.fd[i] >= least[2]
            and self.fn[i] >= least[3]
            and self.fg[i] >= least[4]
        ):
            return
        c, r = self.scale[tier].free_cell(self.fc[i], self.fm[i])
        self.lc[i] = c
        self.lr[i] = r
        self.tier_index[tier].add(i, c, r)
        self.zone_index[(tier, self.zone[i])].add(i, c, r)
        self.type_index[(tier, self.itype[i])].add(i, c, r)

    def _unindex(self, i: int, tier: str) -> None:
        c, r = self.lc[i], self.lr[i]
        self.tier_index[tier].remove(i, c, r)
        self.zone_index[(tier, self.zone[i])].remove(i, c, r)
        self.type_index[(tier, self.itype[i])].remove(i, c, r)
        self.lc[i] = -1

    def best_in_cell(
        self, first: int, rest: Iterator[int], ok: Callable[[int], bool], tie: tuple[float, float]
    ) -> int:
        """Among the next few agents in `first`'s cell (same free cpu and memory), the fullest by the
        disk and network weights; only consulted when those weights are set."""
        lc, lr, fd, fn = self.lc, self.lr, self.fd, self.fn
        wd, wn = tie
        best, best_score = first, wd * fd[first] + wn * fn[first]
        for looked, j in enumerate(rest):
            if looked >= TIE_SCAN or lc[j] != lc[first] or lr[j] != lr[first]:
                break
            if ok(j):
                score = wd * fd[j] + wn * fn[j]
                if score < best_score:
                    best, best_score = j, score
        return best

    def job_count(self, i: int, job: str) -> int:
        placed = self.placed_jobs[i]
        return self.base_jobs[i].get(job, 0) + (placed.get(job, 0) if placed else 0)

    def fits(self, i: int, d: Demand) -> bool:
        return (
            self.fc[i] >= d[0]
            and self.fm[i] >= d[1]
            and self.fd[i] >= d[2]
            and self.fn[i] >= d[3]
            and self.fg[i] >= d[4]
        )

    def commit(self, i: int, tier: str, job: str, d: Demand, exclusive: bool) -> None:
        self._unindex(i, tier)
        self.fc[i] -= d[0]
        self.fm[i] -= d[1]
        self.fd[i] -= d[2]
        self.fn[i] -= d[3]
        self.fg[i] -= d[4]
        tf = self.tier_free[tier]
        tf[0] -= d[0]
        tf[1] -= d[1]
        tf[2] -= d[2]
        tf[3] -= d[3]
        tf[4] -= d[4]
        self.tasks_on[i] += 1
        placed = self.placed_jobs[i]
        if placed is None:
            placed = self.placed_jobs[i] = {}
        placed[job] = placed.get(job, 0) + 1
        if exclusive:
            self.exclusive[i] = True
        else:
            self._index(i, tier)


@dataclass(slots=True)
class _Task:
    task: PendingTask
    demand: Demand
    hard: Constraints
    soft: Constraints
    preferred: Constraints | None  # hard and soft merged; None when they contradict
    fast: bool  # no constraints and no spreading: the fast path
    try_preferred: bool  # soft constraints add something the hard ones do not ask


@dataclass(slots=True)
class _Group:
    name: str
    tier: str
    reservation: Demand
    used: Demand
    queue: list[_Task] = field(default_factory=list)
    overflow: list[_Task] = field(default_factory=list)
    position: int = 0  # next task to try in the current phase's list
    phase_two: bool = False

    def ratio(self) -> tuple[float, float]:
        """Dominant share of the reservation in use; groups without one share what is left last."""
        share = -1.0
        for u, r in zip(self.used, self.reservation):  # noqa: B905 - both are Demand
            if r > 0 and u / r > share:
                share = u / r
        if share < 0:
            return (float("inf"), float(sum(self.used)))
        return (share, 0.0)


class _Pass:
    """One scheduling pass: the mutable state and the decisions made so far."""

    def __init__(self, request: ScheduleRequest, smallest: Mapping[str, Demand]) -> None:
        self.request = request
        self.cluster = _Cluster(request, smallest)
        self.zone_counts: dict[str, dict[str, int]] = {}
        self.placed_per_job: Counter[str] = Counter()
        self.negative: dict[object, list[Demand]] = {}
        self.assignments: list[Assignment] = []
        self.failed: list[_Task] = []
        self.task_reason: dict[str, str] = {}

    # --- constraint helpers -------------------------------------------------------------------------

    def _zone_count(self, job: str, zone: str) -> int:
        counts = self.zone_counts.get(job)
        if counts is None:
            base = self.request.job_zone_counts.get(job, {})
            counts = self.zone_counts[job] = {z.lower(): c for z, c in base.items()}
        return counts.get(zone, 0)

    def balanced_zones(self, job: str, tier: str) -> list[str]:
        """Zones where the job has its fewest tasks: the only ones a hard zoneBalance task may use."""
        zones = self.cluster.tier_zones.get(tier, [])
        if not zones:
            return []
        counts = [self._zone_count(job, z) for z in zones]
        low = min(counts)
        return [z for z, c in zip(zones, counts, strict=True) if c == low]

    def _predicate(
        self, t: _Task, cons: Constraints, by_type: bool, zones: list[str] | None
    ) -> Callable[[int], bool] | None:
        """Per-agent checks the chosen indexes cannot answer; None when they answer everything."""
        checks: list[Callable[[int], bool]] = []
        cl = self.cluster
        job = t.task.job_id
        if cons.machine_type is not None and not by_type:
            mtype = cons.machine_type
            checks.append(lambda i: cl.itype[i] == mtype)
        if zones is not None:
            allowed = set(zones)
            checks.append(lambda i: cl.zone[i] in allowed)
        if cons.attributes:
            wanted = cons.attributes
            checks.append(lambda i: all(cl.attrs(i).get(name) == value for name, value in wanted))
        if cons.exclusive_host:
            checks.append(lambda i: cl.tasks_on[i] == 0)
        if cons.unique_host:
            checks.append(lambda i: cl.job_count(i, job) == 0)
        if not checks:
            return None
        if len(checks) == 1:
            return checks[0]
        return lambda i: all(check(i) for check in checks)

    # --- search -------------------------------------------------------------------------------------

    def _negative_key(self, t: _Task, cons: Constraints) -> object:
        job = t.task.job_id
        if cons.job_dependent:
            return (t.task.tier, cons, job, self.placed_per_job[job])
        return (t.task.tier, cons)

    def _known_infeasible(self, key: object, demand: Demand) -> bool:
        failed = self.negative.get(key)
        return bool(failed) and any(_within(f, demand) for f in failed or ())

    def _remember_infeasible(self, key: object, demand: Demand) -> None:
        failed = self.negative.setdefault(key, [])
        if len(failed) < NEGATIVE_CACHE_SIZE:
            failed.append(demand)

    def find(self, t: _Task, cons: Constraints) -> int | None:
        key = self._negative_key(t, cons)
        if self._known_infeasible(key, t.demand):
            return None
        found = self._search(t, cons)
        if found is None:
            self._remember_infeasible(key, t.demand)
        return found

    def _search(self, t: _Task, cons: Constraints) -> int | None:
        cl = self.cluster
        task = t.task
        tier = task.tier
        d = t.demand
        index = cl.tier_index.get(tier)
        if index is None:
            return None
        fits = cl.fits
        if cons.machine_id is not None:
            pred = self._predicate(t, cons, False, None)
            for i in cl.by_id(cons.machine_id):
                if (
                    cl.lc[i] >= 0
                    and cl.agents[i].tier == tier
                    and (cons.zone is None or cl.zone[i] == cons.zone)
                    and (not cons.zone_balance or cl.zone[i] in self.balanced_zones(task.job_id, tier))
                    and fits(i, d)
                    and (pred is None or pred(i))
                ):
                    return i
            return None
        zones: list[str] | None = None
        if cons.zone_balance:
            zones = self.balanced_zones(task.job_id, tier)
            if cons.zone is not None:
                zones = [z for z in zones if z == cons.zone]
        elif cons.zone is not None:
            zones = [cons.zone]
        if task.spread or cons.exclusive_host:
            return self._spread(t, zones, self._predicate(t, cons, False, None))
        if cons.machine_type is not None:
            # Instance types are few and large, so their index narrows more than a zone's would.
            by_type = cl.type_index.get((tier, cons.machine_type))
            if by_type is None:
                return None
            indexes = [by_type]
            pred = self._predicate(t, cons, True, zones)
        else:
            pred = self._predicate(t, cons, False, None)
            if zones is None:
                indexes = [index]
            else:
                indexes = [cl.zone_index[(tier, z)] for z in zones if (tier, z) in cl.zone_index]
        need_c, need_r = cl.scale[tier].need_cell(d[0], d[1])
        best: int | None = None
        best_score = 0.0
        fc, fm, fd, fn, fg = cl.fc, cl.fm, cl.fd, cl.fn, cl.fg
        c, m, k, n, g = d
        tie = cl.tie.get(tier)
        check = pred

        def ok(j: int) -> bool:
            return fits(j, d) and (check is None or check(j))

        for idx in indexes:
            candidates = idx.ascending(need_c, need_r)
            for i in candidates:
                if (
                    fc[i] >= c
                    and fm[i] >= m
                    and fd[i] >= k
                    and fn[i] >= n
                    and fg[i] >= g
                    and (pred is None or pred(i))
                ):
                    chosen = i if tie is None else cl.best_in_cell(i, candidates, ok, tie)
                    score = idx.wc * cl.lc[chosen] + idx.wm * cl.lr[chosen]
                    if best is None or score < best_score:
                        best, best_score = chosen, score
                    break
        return best

    def _spread(self, t: _Task, zones: list[str] | None, pred: Callable[[int], bool] | None) -> int | None:
        """Emptiest agent not running the job, in the zone where the job has fewest tasks."""
        cl = self.cluster
        task = t.task
        tier = task.tier
        job = task.job_id
        d = t.demand
        if zones is None:
            zones = cl.tier_zones.get(tier, [])
        ordered = sorted(zones, key=lambda z: (self._zone_count(job, z), z))
        for zone in ordered:
            idx = cl.zone_index.get((tier, zone))
            if idx is None:
                continue
            fallback: int | None = None
            looked = 0
            for i in idx.descending():
                if not cl.fits(i, d) or (pred is not None and not pred(i)):
                    continue
                if cl.job_count(i, job) == 0:
                    return i
                if fallback is None:
                    fallback = i
                looked += 1
                if looked >= SPREAD_SCAN:
                    break
            if fallback is not None:
                return fallback
        return None

    # --- placing ------------------------------------------------------------------------------------

    def try_place(self, t: _Task) -> bool:
        chosen: int | None = None
        if t.fast:
            chosen = self._fast(t)
        else:
            if t.try_preferred and t.preferred is not None:
                chosen = self.find(t, t.preferred)
            if chosen is None:
                chosen = self.find(t, t.hard)
        if chosen is None:
            return False
        self.commit(t, chosen)
        return True

    def _fast(self, t: _Task) -> int | None:
        """Unconstrained bin packing: the fullest agent of the tier that fits, from the tier index."""
        cl = self.cluster
        tier = t.task.tier
        index = cl.tier_index.get(tier)
        if index is None:
            return None
        d = t.demand
        failed = self.negative.get(tier)
        if failed and any(_within(f, d) for f in failed):
            return None
        c, m, k, n, g = d
        fc, fm, fd, fn, fg = cl.fc, cl.fm, cl.fd, cl.fn, cl.fg
        need_c, need_r = cl.scale[tier].need_cell(c, m)
        candidates = index.ascending(need_c, need_r)
        for i in candidates:
            if fc[i] >= c and fm[i] >= m and fd[i] >= k and fn[i] >= n and fg[i] >= g:
                tie = cl.tie.get(tier)
                if tie is None:
                    return i
                return cl.best_in_cell(i, candidates, lambda j: cl.fits(j, d), tie)
        self._remember_infeasible(tier, d)
        return None

    def commit(self, t: _Task, i: int) -> None:
        task = t.task
        job = task.job_id
        cl = self.cluster
        cl.commit(i, task.tier, job, t.demand, t.hard.exclusive_host)
        zone = cl.zone[i]
        counts = self.zone_counts.get(job)
        if counts is None:
            self._zone_count(job, zone)
            counts = self.zone_counts[job]
        counts[zone] = counts.get(zone, 0) + 1
        self.placed_per_job[job] += 1
        self.assignments.append(Assignment(task.task_id, cl.agents[i].agent_id))


def _groups(request: ScheduleRequest, tasks: Iterable[_Task]) -> list[_Group]:
    known: dict[str, CapacityGroupView] = {g.name: g for g in request.capacity_groups}
    groups: dict[str, _Group] = {}
    for t in tasks:
        name = t.task.capacity_group
        group = groups.get(name)
        if group is None:
            view = known.get(name)
            if view is None:
                group = _Group(name, t.task.tier, _ZERO, _ZERO)
            else:
                group = _Group(name, view.tier, demand_of(view.reservation), demand_of(view.used))
            groups[name] = group
        group.queue.append(t)
    for group in groups.values():
        # Most constrained first: a task that only some agents can take goes before those any agent can,
        # so unconstrained work does not fill the few agents it needed. Stable, so order is kept otherwise.
        group.queue.sort(key=_narrowness)
    for view in request.capacity_groups:
        if view.name not in groups:
            groups[view.name] = _Group(
                view.name, view.tier, demand_of(view.reservation), demand_of(view.used)
            )
    return list(groups.values())


def _narrowness(t: _Task) -> int:
    h = t.hard
    if h.machine_id is not None or h.zone is not None or h.machine_type is not None or h.attributes:
        return 0
    return 1


def _unused(g: _Group) -> Demand:
    """What a critical group has reserved and not used; zero for flex groups, whose reservation is soft."""
    if g.tier != TIER_CRITICAL:
        return _ZERO
    r, u = g.reservation, g.used
    return (
        max(r[0] - u[0], 0),
        max(r[1] - u[1], 0),
        max(r[2] - u[2], 0),
        max(r[3] - u[3], 0),
        max(r[4] - u[4], 0),
    )


def _run_reserved(p: _Pass, groups: list[_Group]) -> None:
    """Phase one: tasks that fit in their group's remaining reservation, lowest ratio first."""
    heap = [(g.ratio(), n, g) for n, g in enumerate(groups) if g.queue]
    heapq.heapify(heap)
    while heap:
        _, n, g = heapq.heappop(heap)
        reserved = any(r > 0 for r in g.reservation)
        while True:
            t = g.queue[g.position]
            g.position += 1
            after = _add(g.used, t.demand)
            if reserved and _within(after, g.reservation):
                if p.try_place(t):
                    g.used = after
                else:
                    p.failed.append(t)
            else:
                g.overflow.append(t)
            if _yield_turn(heap, g, n):
                break
    for g in groups:
        g.position = 0


def _yield_turn(heap: list[tuple[tuple[float, float], int, _Group]], g: _Group, n: int) -> bool:
    """Hand the turn to another group if one now has a lower usage ratio (keeps `g` queued if it has work).

    Checking against the heap's top instead of pushing and popping after every task keeps the cost
    of fairness to one comparison per task while the same group stays the lowest.
    """
    queue = g.overflow if g.phase_two else g.queue
    if g.position >= len(queue):
        return True
    key = g.ratio()
    if heap and (heap[0][0], heap[0][1]) < (key, n):
        heapq.heappush(heap, (key, n, g))
        return True
    return False


def _run_best_effort(p: _Pass, groups: list[_Group]) -> None:
    """Phase two: the rest, lowest usage/reservation ratio first, leaving critical headroom alone."""
    held: dict[str, Demand] = {}
    for g in groups:
        held[g.tier] = _add(held.get(g.tier, _ZERO), _unused(g))
    heap = [(g.ratio(), n, g) for n, g in enumerate(groups) if g.overflow]
    heapq.heapify(heap)
    tier_free = p.cluster.tier_free
    for g in groups:
        g.phase_two = True
    while heap:
        _, n, g = heapq.heappop(heap)
        while True:
            t = g.overflow[g.position]
            g.position += 1
            _best_effort_one(p, g, t, held, tier_free)
            if _yield_turn(heap, g, n):
                break


def _best_effort_one(
    p: _Pass, g: _Group, t: _Task, held: dict[str, Demand], tier_free: dict[str, list[int]]
) -> None:
    """One task beyond its group's reservation, if the tier can spare it."""
    tier = t.task.tier
    own = _unused(g)
    others = _sub(held.get(tier, _ZERO), own)
    free = tier_free.get(tier)
    if others != _ZERO and free is not None and not _within(_add(others, t.demand), _as_demand(free)):
        p.task_reason[t.task.task_id] = (
            f"capacity group {g.name} is beyond its reservation and the rest of the "
            f"{tier} tier is reserved for other capacity groups"
        )
        p.failed.append(t)
    elif p.try_place(t):
        g.used = _add(g.used, t.demand)
        held[tier] = _add(others, _unused(g))
    else:
        p.failed.append(t)


def _as_demand(values: list[int]) -> Demand:
    return (values[0], values[1], values[2], values[3], values[4])


def schedule(request: ScheduleRequest) -> ScheduleReply:
    """Place as many pending tasks as the cluster allows; say why for each one left over."""
    tasks: list[_Task] = []
    seen: set[str] = set()
    parsed: dict[tuple[tuple[str, str], ...], Constraints] = {}
    # Tasks of one job share their constraint maps, so the parsed forms are looked up by identity;
    # the entry keeps the maps alive so no id is reused while the loop runs.
    by_maps: dict[
        tuple[int, int], tuple[object, object, Constraints, Constraints, Constraints | None, bool]
    ] = {}
    demands: dict[str, list[Demand]] = defaultdict(list)
    plain: tuple[Constraints, Constraints, Constraints | None, bool] = (
        _NO_CONSTRAINTS,
        _NO_CONSTRAINTS,
        _NO_CONSTRAINTS,
        False,
    )
    for task in request.tasks:
        if task.task_id in seen:
            raise ValueError(f"task {task.task_id} appears twice in one request")
        seen.add(task.task_id)
        hard_map, soft_map = task.hard_constraints, task.soft_constraints
        if not hard_map and not soft_map:
            hard, soft, preferred, try_preferred = plain
            fast = not task.spread
        else:
            entry = by_maps.get((id(hard_map), id(soft_map)))
            if entry is None:
                h, so = _parse(parsed, hard_map), _parse(parsed, soft_map)
                merged = merge(h, so)
                entry = (hard_map, soft_map, h, so, merged, merged is not None and merged != h)
                by_maps[(id(hard_map), id(soft_map))] = entry
            _, _, hard, soft, preferred, try_preferred = entry
            fast = not task.spread and hard.empty and soft.empty
        demand = demand_of(task.resources)
        demands[task.tier].append(demand)
        tasks.append(_Task(task, demand, hard, soft, preferred, fast, try_preferred))
    smallest: dict[str, Demand] = {}
    for tier, amounts in demands.items():
        c, m, k, n, g = (min(column) for column in zip(*amounts, strict=True))
        smallest[tier] = (c, m, k, n, g)
    p = _Pass(request, smallest)
    groups = _groups(request, tasks)
    _run_reserved(p, groups)
    _run_best_effort(p, groups)
    return ScheduleReply(tuple(p.assignments), _diagnose(p))


def _parse(cache: dict[tuple[tuple[str, str], ...], Constraints], raw: Mapping[str, str]) -> Constraints:
    """Parsed constraints, once per distinct map: tasks of one job share theirs."""
    if not raw:
        return _NO_CONSTRAINTS
    key = tuple(raw.items())
    parsed = cache.get(key)
    if parsed is None:
        parsed = cache[key] = parse_constraints(raw)
    return parsed


_NO_CONSTRAINTS = Constraints()


# --- why pending ------------------------------------------------------------------------------------


def _diagnose(p: _Pass) -> dict[str, PendingReason]:
    """A reason for every task left over, computed once per distinct task shape on the end-of-pass state."""
    out: dict[str, PendingReason] = {}
    cache: dict[object, PendingReason] = {}
    static: dict[str, tuple[Counter[str], dict[str, Counter[str]]]] = {}
    budget = p.request.max_diagnoses
    skipped = 0
    for t in p.failed:
        task = t.task
        key: object = (task.tier, t.demand, t.hard, task.job_id if t.hard.job_dependent else None)
        reason = cache.get(key)
        if reason is None:
            if len(cache) >= budget:
                skipped += 1
                reason = PendingReason(
                    task_reason="no agent fits; not diagnosed in this pass (diagnosis budget)"
                )
            else:
                if task.tier not in static:
                    static[task.tier] = _static_exclusions(p, task.tier)
                reason = cache[key] = _diagnose_one(p, t, static[task.tier])
        extra = p.task_reason.get(task.task_id)
        if extra is not None:
            reason = PendingReason(reason.excluded, reason.by_instance_group, extra)
        out[task.task_id] = reason
    return out


def _static_exclusions(p: _Pass, tier: str) -> tuple[Counter[str], dict[str, Counter[str]]]:
    """Agents excluded whatever the task asks: other tiers, and this tier's agents that are not Active."""
    total: Counter[str] = Counter()
    per_group: dict[str, Counter[str]] = defaultdict(Counter)
    for agent in p.cluster.agents:
        if agent.tier != tier:
            reason = REASON_OTHER_TIER
        elif agent.lifecycle != LIFECYCLE_ACTIVE:
            reason = agent.lifecycle
        else:
            continue
        total[reason] += 1
        per_group[agent.instance_group][reason] += 1
    return total, per_group


def _diagnose_one(p: _Pass, t: _Task, static: tuple[Counter[str], dict[str, Counter[str]]]) -> PendingReason:
    cl = p.cluster
    task = t.task
    cons = t.hard
    d = t.demand
    total = Counter(static[0])
    per_group: dict[str, Counter[str]] = defaultdict(Counter, {g: Counter(c) for g, c in static[1].items()})
    balanced = set(p.balanced_zones(task.job_id, task.tier)) if cons.zone_balance else set()
    free = (cl.fc, cl.fm, cl.fd, cl.fn, cl.fg)
    for i, agent in enumerate(cl.agents):
        if agent.tier != task.tier or agent.lifecycle != LIFECYCLE_ACTIVE:
            continue
        reason: str | None = None
        if cons.machine_id is not None and cons.machine_id not in cl.ids(i):
            reason = "machineId"
        elif cons.zone is not None and cl.zone[i] != cons.zone:
            reason = "availabilityZone"
        elif cons.machine_type is not None and cl.itype[i] != cons.machine_type:
            reason = "machineType"
        else:
            for name, value in cons.attributes:
                if cl.attrs(i).get(name) != value:
                    reason = f"attribute.{name}"
                    break
        if reason is None:
            if cl.exclusive[i] or (cons.exclusive_host and cl.tasks_on[i] > 0):
                reason = "exclusiveHost"
            elif cons.unique_host and cl.job_count(i, task.job_id) > 0:
                reason = "uniqueHost"
            elif cons.zone_balance and cl.zone[i] not in balanced:
                reason = "zoneBalance"
            else:
                for dim, have, want in zip(DIMENSIONS, free, d, strict=True):
                    if have[i] < want:
                        reason = dim
                        break
        if reason is None:
            reason = "deferred"
        total[reason] += 1
        per_group[agent.instance_group][reason] += 1
    task_reason = None
    if total.get("deferred"):
        # Only reachable when the pass held the task back (capacity headroom) rather than no agent fitting.
        del total["deferred"]
        for counts in per_group.values():
            counts.pop("deferred", None)
        task_reason = "held back in this pass although agents have room"
    if task.tier not in cl.tier_index:
        task_reason = task_reason or f"no Active agents in the {task.tier} tier"
    return PendingReason(dict(total), {g: dict(c) for g, c in per_group.items() if c}, task_reason)
