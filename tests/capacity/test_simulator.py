"""The simulator replays (small) seeded traces through the real planner and the baselines."""

from __future__ import annotations

import pytest

from capacity.model import Tier
from capacity.simulator import (
    TRACES,
    ClusterAutoscalerPolicy,
    KarpenterPolicy,
    SimAgent,
    SimGroup,
    SimState,
    TargetUtilisationPolicy,
    TitusPolicy,
    Trace,
    TraceTask,
    default_tiers,
    make_array_trace,
    make_deploy_trace,
    make_trace,
    oracle_instance_hours,
    pdb_allows,
    simulate,
)
from master.core.disruption import Budget

SMALL = {"seed": 3, "warmup_s": 1800.0, "scale": 0.3, "length_s": 4 * 3600.0}


def test_same_seed_same_day() -> None:
    a = simulate(make_trace(**SMALL), TitusPolicy(default_tiers()))
    b = simulate(make_trace(**SMALL), TitusPolicy(default_tiers()))
    assert a == b
    other = simulate(make_trace(**{**SMALL, "seed": 4}), TitusPolicy(default_tiers()))
    assert other != a
    reseeded = simulate(make_trace(**SMALL), TitusPolicy(default_tiers()), seed=1)
    assert reseeded.instance_hours != a.instance_hours  # boot times are drawn, not constant


def test_titus_policy_keeps_the_reservation_and_kills_nothing() -> None:
    trace = make_trace(**SMALL)
    samples: list[tuple[float, int, int, float, int]] = []
    result = simulate(trace, TitusPolicy(default_tiers()), samples=samples)
    assert result.critical_below_reservation_minutes == 0
    assert result.critical_tasks_killed == 0
    assert result.batch_tasks_evicted == 0
    assert result.budget_violations == 0
    assert result.instance_hours >= result.oracle_instance_hours > 0
    assert result.tasks > 100
    # Flex capacity follows demand both ways: it grows past its start and shrinks again afterwards.
    counts = [s[1] for s in samples]
    peak = counts.index(max(counts))
    assert max(counts) > counts[0] and min(counts[peak:]) < max(counts)


def test_oracle_counts_flex_demand_only() -> None:
    trace = make_trace(**SMALL)
    assert oracle_instance_hours(trace) > 0
    assert len({t.tier for t in trace.tasks}) == 2


@pytest.mark.parametrize("name", list(TRACES), ids=list(TRACES))
def test_every_task_belongs_to_a_job_with_a_budget(name: str) -> None:
    trace = TRACES[name](**SMALL)
    assert trace.name == name and trace.tasks
    assert all(t.job in trace.jobs for t in trace.tasks)
    assert all(trace.jobs[t.job].batch == (t.kind == "batch") for t in trace.tasks)
    policies = {str(j.budget.policy) for j in trace.jobs.values()}
    assert "relocationLimit" in policies and len(policies) >= 3


def test_deploy_waves_run_two_versions_side_by_side() -> None:
    trace = make_deploy_trace(**SMALL)
    versions = {t.job for t in trace.tasks if "@v" in t.job}
    assert versions
    new = next(iter(sorted(versions)))
    old = new.split("@")[0]
    first_new = min(t.arrival for t in trace.tasks if t.job == new)
    # Some old tasks still run when the new version starts, and they stop within 15 minutes of the wave.
    overlapping = [t for t in trace.tasks if t.job == old and t.arrival < first_new < t.arrival + t.duration]
    assert overlapping and all(t.arrival + t.duration <= first_new + 900 for t in overlapping)


def test_array_trace_has_large_identical_arrays() -> None:
    trace = make_array_trace(seed=5, scale=1.0, warmup_s=0.0, length_s=6 * 3600.0)
    arrays: dict[str, list[TraceTask]] = {}
    for t in trace.tasks:
        if t.kind == "batch":
            arrays.setdefault(t.job, []).append(t)
    assert arrays and max(len(ts) for ts in arrays.values()) >= 300
    for ts in arrays.values():
        assert len({t.res for t in ts}) == 1
        assert max(t.arrival for t in ts) - min(t.arrival for t in ts) <= 30


@pytest.mark.parametrize(
    "make", [ClusterAutoscalerPolicy, KarpenterPolicy, TargetUtilisationPolicy], ids=lambda m: m.name
)
def test_baselines_run_on_the_same_trace(make: type) -> None:
    trace = make_trace(**SMALL)
    result = simulate(trace, make())
    assert result.policy == make.name and result.tasks > 100
    assert result.instance_hours > 0


def test_karpenter_consolidates_by_eviction_and_breaks_budgets_the_eviction_core_sees() -> None:
    """Karpenter without PDBs evicts (break-before-make): the eviction core counts the budgets it broke."""
    trace = make_deploy_trace(**SMALL)
    karpenter = simulate(trace, KarpenterPolicy(honour_pdbs=False))
    ours = simulate(trace, TitusPolicy(default_tiers()))
    assert karpenter.tasks_evicted > 0
    assert karpenter.budget_violations > 0
    assert ours.budget_violations == 0 and ours.batch_tasks_evicted == 0


def test_pdb_mirrors_the_kubernetes_rules() -> None:
    jobs = {
        "pct": Budget.from_wire({"availabilityPercentageLimit": {"percentageOfHealthyContainers": 75}}),
        "abs": Budget.from_wire({"unhealthyTasksLimit": {"limitOfUnhealthyContainers": 1}}),
        "rate": Budget.from_wire({"relocationLimit": {"limit": 1}}, batch=True),
    }
    from capacity.simulator import SimJob

    tasks = tuple(
        TraceTask(i, Tier.FLEX, 0.0, 600.0, (1.0, 1024.0, 0.0, 0.0), "service", j)
        for i, j in enumerate(["pct"] * 4 + ["abs"] * 3 + ["rate"] * 2)
    )
    trace = Trace(tasks, (), 0.0, 1.0, {j: SimJob(j, Tier.FLEX, j == "rate", b) for j, b in jobs.items()})
    state = SimState(trace, [SimGroup("flex-a", Tier.FLEX, 0, 10)])
    agent = SimAgent("a", "flex-a", Tier.FLEX, 0.0, 0.0)
    state.agents["a"] = agent
    for t in tasks:
        state.job_active.setdefault(t.job, set()).add(t.id)
        state.task_agent[t.id] = "a"
    # 75% of 4 -> minAvailable 3: one may go, not two. maxUnavailable 1 of 3: one. No PDB: any number.
    assert pdb_allows(state, "pct", 1) and not pdb_allows(state, "pct", 2)
    assert pdb_allows(state, "abs", 1) and not pdb_allows(state, "abs", 2)
    assert pdb_allows(state, "rate", 2)
    del state.task_agent[0]  # one pct task is down: none may go now
    assert not pdb_allows(state, "pct", 1)
