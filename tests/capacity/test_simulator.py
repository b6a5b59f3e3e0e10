"""The simulator replays a (small) seeded trace through the real planner and the baselines."""

from __future__ import annotations

from capacity.simulator import (
    ClusterAutoscalerPolicy,
    TargetUtilisationPolicy,
    TitusPolicy,
    default_tiers,
    make_trace,
    oracle_instance_hours,
    simulate,
)

SMALL = {"seed": 3, "warmup_s": 1800.0, "scale": 0.3, "length_s": 4 * 3600.0}


def test_same_seed_same_day() -> None:
    a = simulate(make_trace(**SMALL), TitusPolicy(default_tiers()))
    b = simulate(make_trace(**SMALL), TitusPolicy(default_tiers()))
    assert a == b
    other = simulate(make_trace(**{**SMALL, "seed": 4}), TitusPolicy(default_tiers()))
    assert other != a


def test_titus_policy_keeps_the_reservation_and_kills_nothing() -> None:
    trace = make_trace(**SMALL)
    samples: list[tuple[float, int, int, float, int]] = []
    result = simulate(trace, TitusPolicy(default_tiers()), samples=samples)
    assert result.critical_below_reservation_minutes == 0
    assert result.critical_tasks_killed == 0
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


def test_baselines_run_on_the_same_trace() -> None:
    trace = make_trace(**SMALL)
    for policy in (ClusterAutoscalerPolicy(), TargetUtilisationPolicy()):
        result = simulate(trace, policy)
        assert result.policy == policy.name and result.tasks > 100
        assert result.instance_hours > 0
