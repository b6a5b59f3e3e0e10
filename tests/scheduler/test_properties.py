"""Property tests: for any cluster and any pending work, the engine's promises hold.

No agent is over-committed, no hard constraint is broken, every task is either assigned exactly once
or has a reason, a task is only left pending when no agent could take it, and the
free-resource index visits exactly the agents a brute-force scan would, fullest first.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from master.scheduler import (
    AgentView,
    CapacityGroupView,
    PendingTask,
    Resources,
    ScheduleReply,
    ScheduleRequest,
    schedule,
)
from master.scheduler.constraints import parse_constraints
from master.scheduler.index import LevelScale
from master.scheduler.placement import demand_of

ZONES = ["z1", "z2", "z3"]
TYPES = ["m5", "r5"]
JOBS = ["j1", "j2", "j3"]

constraint_maps = st.dictionaries(
    st.sampled_from(
        [
            "uniqueHost",
            "exclusiveHost",
            "zoneBalance",
            "availabilityZone",
            "machineType",
            "machineId",
            "attribute.rack",
        ]
    ),
    st.just(""),
    max_size=3,
)


@st.composite
def constraints(draw: st.DrawFn, n_agents: int) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in draw(constraint_maps):
        if name in ("uniqueHost", "exclusiveHost", "zoneBalance"):
            out[name] = draw(st.sampled_from(["true", "false"]))
        elif name == "availabilityZone":
            out[name] = draw(st.sampled_from(ZONES))
        elif name == "machineType":
            out[name] = draw(st.sampled_from(TYPES))
        elif name == "machineId":
            out[name] = f"a{draw(st.integers(0, max(n_agents - 1, 0)))}"
        else:
            out[name] = draw(st.sampled_from(["r1", "r2"]))
    return out


@st.composite
def agents(draw: st.DrawFn) -> list[AgentView]:
    n = draw(st.integers(0, 10))
    out = []
    for i in range(n):
        cpu = draw(st.sampled_from([1.0, 2.0, 4.0, 8.0]))
        memory = draw(st.sampled_from([1024, 4096, 16_384]))
        used_cpu = draw(st.sampled_from([0.0, 0.5, 1.0]))
        used_memory = draw(st.sampled_from([0, 512, 2048]))
        jobs = draw(st.dictionaries(st.sampled_from(JOBS), st.integers(1, 2), max_size=2))
        out.append(
            AgentView(
                agent_id=f"a{i}",
                instance_group=f"g{i % 3}",
                tier=draw(st.sampled_from(["flex", "flex", "critical"])),
                lifecycle=draw(st.sampled_from(["Active", "Active", "Active", "PhasedOut", "Removable"])),
                total=Resources(cpu, memory, 10_000, 1000, draw(st.sampled_from([0, 0, 1]))),
                used=Resources(min(used_cpu, cpu), min(used_memory, memory), 0, 0, 0),
                attributes={
                    "zone": draw(st.sampled_from(ZONES)),
                    "instanceType": draw(st.sampled_from(TYPES)),
                    "id": f"a{i}",
                    "rack": draw(st.sampled_from(["r1", "r2"])),
                },
                job_task_counts=jobs,
                exclusive=bool(jobs) and draw(st.booleans()) and draw(st.booleans()),
            )
        )
    return out


@st.composite
def requests(draw: st.DrawFn) -> ScheduleRequest:
    cluster = draw(agents())
    pending = []
    for i in range(draw(st.integers(0, 25))):
        pending.append(
            PendingTask(
                task_id=f"t{i}",
                job_id=draw(st.sampled_from(JOBS)),
                resources=Resources(
                    draw(st.sampled_from([0.1, 0.5, 1.0, 2.0, 3.0])),
                    draw(st.sampled_from([128, 1024, 3000])),
                    draw(st.sampled_from([0, 1000, 20_000])),
                    draw(st.sampled_from([0, 100, 2000])),
                    draw(st.sampled_from([0, 0, 0, 1])),
                ),
                capacity_group=draw(st.sampled_from(["DEFAULT", "payments", "batch"])),
                tier=draw(st.sampled_from(["flex", "critical"])),
                hard_constraints=draw(constraints(len(cluster))),
                soft_constraints=draw(constraints(len(cluster))),
                spread=draw(st.booleans()),
            )
        )
    zone_counts = draw(
        st.dictionaries(st.sampled_from(JOBS), st.dictionaries(st.sampled_from(ZONES), st.integers(0, 3)))
    )
    groups = [
        CapacityGroupView("payments", "critical", Resources(2, 4096, 10_000, 1000), Resources()),
        CapacityGroupView("batch", "flex", Resources(1, 1024, 1000, 100), Resources()),
    ]
    return ScheduleRequest(pending, cluster, groups, zone_counts)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_engine_promises(request: ScheduleRequest) -> None:
    """One generated request per example, every promise checked on it (generation is the slow part)."""
    reply = schedule(request)
    check_every_task_is_assigned_once_or_has_a_reason(request, reply)
    check_no_agent_is_overcommitted(request, reply)
    check_no_hard_constraint_is_broken(request, reply)
    check_task_waits_only_when_nothing_fits(request, reply)


def check_every_task_is_assigned_once_or_has_a_reason(request: ScheduleRequest, reply: ScheduleReply) -> None:
    assigned = Counter(a.task_id for a in reply.assignments)
    assert all(n == 1 for n in assigned.values())
    assert set(assigned).isdisjoint(reply.unplaced)
    assert set(assigned) | set(reply.unplaced) == {t.task_id for t in request.tasks}
    for reason in reply.unplaced.values():
        assert reason.summary
        if reason.task_reason is None:
            assert sum(reason.excluded.values()) == len(request.agents)


def check_no_agent_is_overcommitted(request: ScheduleRequest, reply: ScheduleReply) -> None:
    tasks = {t.task_id: t for t in request.tasks}
    load: dict[str, list[int]] = {a.agent_id: list(demand_of(a.used)) for a in request.agents}
    for a in reply.assignments:
        for k, v in enumerate(demand_of(tasks[a.task_id].resources)):
            load[a.agent_id][k] += v
    for agent in request.agents:
        if any(a.agent_id == agent.agent_id for a in reply.assignments):
            assert all(u <= t for u, t in zip(load[agent.agent_id], demand_of(agent.total), strict=True))


def check_no_hard_constraint_is_broken(request: ScheduleRequest, reply: ScheduleReply) -> None:
    tasks = {t.task_id: t for t in request.tasks}
    agents = {a.agent_id: a for a in request.agents}
    zones_of_tier = {
        tier: {a.attributes["zone"] for a in request.agents if a.tier == tier and a.lifecycle == "Active"}
        for tier in ("flex", "critical")
    }
    on_agent: dict[str, Counter[str]] = defaultdict(Counter)
    zone_count: dict[str, Counter[str]] = defaultdict(Counter)
    for job, counts in request.job_zone_counts.items():
        zone_count[job].update(counts)
    exclusive_holders: set[str] = set()
    placed_on: Counter[str] = Counter()
    for a in reply.assignments:  # in placement order, so zoneBalance can be replayed
        t, ag = tasks[a.task_id], agents[a.agent_id]
        hard = parse_constraints(t.hard_constraints)
        zone = ag.attributes["zone"]
        assert ag.tier == t.tier
        assert ag.lifecycle == "Active"
        assert not ag.exclusive and a.agent_id not in exclusive_holders
        if hard.zone is not None:
            assert zone == hard.zone
        if hard.machine_type is not None:
            assert ag.attributes["instanceType"] == hard.machine_type
        if hard.machine_id is not None:
            assert a.agent_id == hard.machine_id
        for name, value in hard.attributes:
            assert ag.attributes.get(name) == value
        if hard.unique_host:
            assert ag.job_task_counts.get(t.job_id, 0) + on_agent[a.agent_id][t.job_id] == 0
        if hard.exclusive_host:
            assert not ag.job_task_counts and placed_on[a.agent_id] == 0
            exclusive_holders.add(a.agent_id)
        if hard.zone_balance:
            counts = zone_count[t.job_id]
            assert counts[zone] == min(counts[z] for z in zones_of_tier[t.tier])
        on_agent[a.agent_id][t.job_id] += 1
        zone_count[t.job_id][zone] += 1
        placed_on[a.agent_id] += 1


def check_task_waits_only_when_nothing_fits(request: ScheduleRequest, reply: ScheduleReply) -> None:
    """Work conservation: at the end of the pass no agent could take a pending task.

    zoneBalance is left out: a later placement of the same job can raise its lowest zone count and
    open zones that were closed when the task was tried, which is a reason to retry next pass, not
    a missed placement.
    """
    tasks = {t.task_id: t for t in request.tasks}
    load: dict[str, list[int]] = {a.agent_id: list(demand_of(a.used)) for a in request.agents}
    running: dict[str, Counter[str]] = {a.agent_id: Counter(a.job_task_counts) for a in request.agents}
    taken = {
        a.agent_id
        for a in reply.assignments
        if parse_constraints(tasks[a.task_id].hard_constraints).exclusive_host
    }
    for a in reply.assignments:
        running[a.agent_id][tasks[a.task_id].job_id] += 1
        for k, v in enumerate(demand_of(tasks[a.task_id].resources)):
            load[a.agent_id][k] += v
    for task_id, reason in reply.unplaced.items():
        t = tasks[task_id]
        hard = parse_constraints(t.hard_constraints)
        if hard.zone_balance or reason.task_reason:
            continue
        need = demand_of(t.resources)
        for agent in request.agents:
            attrs = agent.attributes
            if (
                agent.tier != t.tier
                or agent.lifecycle != "Active"
                or agent.exclusive
                or agent.agent_id in taken
                or (hard.zone is not None and attrs["zone"] != hard.zone)
                or (hard.machine_type is not None and attrs["instanceType"] != hard.machine_type)
                or (hard.machine_id is not None and agent.agent_id != hard.machine_id)
                or any(attrs.get(name) != value for name, value in hard.attributes)
                or (hard.unique_host and running[agent.agent_id][t.job_id] > 0)
                or (hard.exclusive_host and sum(running[agent.agent_id].values()) > 0)
            ):
                continue
            free = [
                total - used for total, used in zip(demand_of(agent.total), load[agent.agent_id], strict=True)
            ]
            assert not all(f >= n for f, n in zip(free, need, strict=True)), (task_id, agent.agent_id)


cells = st.tuples(st.integers(0, 16_000), st.integers(0, 64_000))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(cells, max_size=40),
    cells,
    st.floats(0.0, 4.0),
    st.floats(0.0, 4.0),
)
def test_index_visits_exactly_the_candidates_fullest_first(
    free: list[tuple[int, int]], need: tuple[int, int], wc: float, wm: float
) -> None:
    if wc + wm == 0:
        wc = 1.0
    scale = LevelScale(wc, wm, 16_000, 64_000)
    index = scale.index()
    cell_of = {}
    for i, (cpu, memory) in enumerate(free):
        cell_of[i] = scale.free_cell(cpu, memory)
        index.add(i, *cell_of[i])
    seen = list(index.ascending(*scale.need_cell(*need)))
    # Every agent with room appears; nothing appears twice.
    fitting = {i for i, (cpu, memory) in enumerate(free) if cpu >= need[0] and memory >= need[1]}
    assert fitting <= set(seen)
    assert len(seen) == len(set(seen))
    diagonal = [cell_of[i][0] * index.wc + cell_of[i][1] * index.wm for i in seen]
    assert diagonal == sorted(diagonal)
    spread = [cell_of[i][0] * index.wc + cell_of[i][1] * index.wm for i in index.descending()]
    assert spread == sorted(spread, reverse=True) and len(spread) == len(free)
    for i in range(0, len(free), 2):
        index.remove(i, *cell_of[i])
    assert sorted(index.descending()) == list(range(1, len(free), 2))
