"""Safety properties of the planner for random clusters (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from capacity.model import Lifecycle, PlanInputs, Resources, Tier, instances_needed
from capacity.planner import plan
from tests.capacity.builders import NOW, agent, cgroup, group, inputs, task

agent_spec = st.tuples(
    st.integers(0, 4),  # tasks
    st.booleans(),  # critical tasks
    st.one_of(st.none(), st.floats(0, 7200)),  # idle for
    st.sampled_from(list(Lifecycle)),
)


@st.composite
def clusters(draw: st.DrawFn) -> PlanInputs:
    groups, agents = [], []
    for gi, tier in enumerate((Tier.CRITICAL, Tier.FLEX, Tier.FLEX)):
        gid = f"g{gi}"
        specs = draw(st.lists(agent_spec, max_size=8))
        booting = draw(st.integers(0, 3))
        min_size = draw(st.integers(0, 4))
        max_size = draw(st.integers(max(min_size, len(specs) + booting), 20))
        groups.append(group(gid, tier, desired=len(specs) + booting, min_size=min_size, max_size=max_size))
        for n, (tasks, critical, idle_for, lifecycle) in enumerate(specs):
            agents.append(
                agent(
                    gid,
                    n,
                    tier,
                    tasks=tasks,
                    critical_tasks=tasks if (critical or tier is Tier.CRITICAL) else 0,
                    idle_for=None if tasks else idle_for,
                    lifecycle=lifecycle,
                )
            )
    pending = [
        task(k, waited=w, cpu=c, tier=t)
        for k, (w, c, t) in enumerate(
            draw(
                st.lists(
                    st.tuples(
                        st.floats(0, 300), st.sampled_from([1.0, 4.0, 16.0]), st.sampled_from(list(Tier))
                    ),
                    max_size=30,
                )
            )
        )
    ]
    reservations = [cgroup("api", cpu=4, mem=8192, count=draw(st.integers(0, 40)))]
    return inputs(groups, agents=agents, tasks=pending, cgroups=reservations)


@settings(max_examples=300, deadline=None)
@given(clusters())
def test_planner_safety(p_inputs: PlanInputs) -> None:
    p = plan(p_inputs, NOW)
    agents = {a.id: a for a in p_inputs.agents}
    groups = {g.id: g for g in p_inputs.node_groups}
    for d in p.desired:
        g = groups[d.node_group_id]
        assert d.desired >= d.current, "desired capacity is never lowered"
        assert d.desired <= max(g.max_size, d.current), "never above the ASG max"
    for action in p.terminate:
        a = agents[action.agent_id]
        assert not a.task_ids and a.critical_task_count == 0, "only empty agents are terminated"
        assert a.lifecycle is not Lifecycle.ACTIVE, "terminated only after a phase-out"
        assert action.reason
    for action in p.phase_out:
        a = agents[action.agent_id]
        assert a.critical_task_count == 0 and a.lifecycle is Lifecycle.ACTIVE and action.reason
    for g in p_inputs.node_groups:
        gone = sum(1 for t in p.terminate if t.node_group_id == g.id)
        assert g.desired - gone >= min(g.min_size, g.desired), "terminations respect MinSize"
        if g.tier is Tier.CRITICAL:
            reserved = sum((c.reservation() for c in p_inputs.capacity_groups), Resources()).scaled(1.05)
            floor = min(instances_needed(reserved, g.instance_resources), g.max_size)
            assert g.desired - gone >= min(floor, g.desired), "critical never shrinks below its reservation"
