"""Table tests for the pure planner: the clock is passed in, nothing is patched."""

from __future__ import annotations

import pytest

from capacity.model import ActionKind, Lifecycle, PlanInputs, RecentAction, Tier
from capacity.planner import plan
from tests.capacity.builders import NOW, agent, cgroup, group, inputs, recent, task


def desired_of(p_inputs: PlanInputs) -> dict[str, int]:
    return {d.node_group_id: d.desired for d in plan(p_inputs, NOW).desired}


BUSY_TWO = [agent("flex-a", 0, tasks=8), agent("flex-a", 1, tasks=8)]

# (id, inputs, expected desired per group)
SCALE_UP_CASES = [
    pytest.param(
        inputs([group("flex-a", desired=2)], tasks=[task(1, waited=5)]), {"flex-a": 2}, id="fresh-task-waits"
    ),
    pytest.param(
        inputs([group("flex-a", desired=2)], agents=BUSY_TWO, tasks=[task(n, waited=60) for n in range(5)]),
        {"flex-a": 4},  # 5 x 4 cpu = 20 cpu -> ceil(20/16) = 2 more
        id="overdue-cpu-bound",
    ),
    pytest.param(
        inputs([group("flex-a", desired=0)], tasks=[task(n, waited=60, cpu=1, mem=30_000) for n in range(5)]),
        {"flex-a": 3},  # memory dominates: 150,000 MB / 65,536 -> 3
        id="overdue-memory-bound-max-over-dimensions",
    ),
    pytest.param(
        inputs(
            [group("flex-a", desired=3)], agents=[agent("flex-a", 0, tasks=2)], tasks=[task(1, waited=60)]
        ),
        {"flex-a": 3},  # two instances still booting cover one 4-cpu task
        id="booting-instances-cover-demand",
    ),
    pytest.param(
        inputs([group("flex-a", desired=8, max_size=10)], tasks=[task(n, waited=60) for n in range(40)]),
        {"flex-a": 10},
        id="bounded-by-asg-max",
    ),
    pytest.param(
        inputs(
            [group("flex-a", desired=1)], tasks=[task(n, waited=60) for n in range(40)], max_scale_up_step=3
        ),
        {"flex-a": 4},
        id="rate-limited",
    ),
    pytest.param(
        inputs(
            [group("flex-a", desired=1)],
            tasks=[task(1, waited=60)],
            actions=[recent(ActionKind.SCALE_UP, "flex-a", ago=10)],
            scale_up_cooldown_s=30,
        ),
        {"flex-a": 1},
        id="scale-up-cooldown",
    ),
    pytest.param(inputs([group("flex-a", desired=0, min_size=2)]), {"flex-a": 2}, id="raised-to-asg-min"),
    pytest.param(
        inputs(
            [group("flex-a", desired=0), group("flex-b", desired=0)], tasks=[task(n, 60) for n in range(16)]
        ),
        {"flex-a": 2, "flex-b": 2},  # 64 cpu split across two zones' groups
        id="spread-over-groups",
    ),
    pytest.param(
        inputs(
            [group("crit-a", Tier.CRITICAL, desired=0)],
            cgroups=[cgroup("api", cpu=4, mem=8192, count=20), cgroup("db", cpu=8, mem=32768, count=2)],
        ),
        # cpu (80 + 16) * 1.05 = 100.8 -> 7; memory (163840 + 65536) * 1.05 = 240844.8 -> 4
        {"crit-a": 7},
        id="critical-reservation-plus-buffer",
    ),
    pytest.param(
        inputs([group("crit-a", Tier.CRITICAL, desired=0)], cgroups=[cgroup("api", cpu=16, mem=1, count=15)]),
        {"crit-a": 16},  # 240 cpu * 1.05 = 252 -> 15.75 -> 16: the buffer adds an instance
        id="critical-buffer-rounds-up",
    ),
    pytest.param(
        inputs(
            [group("crit-a", Tier.CRITICAL, desired=10)], cgroups=[cgroup("api", cpu=4, mem=8192, count=4)]
        ),
        {"crit-a": 10},  # desired never lowered: AWS would pick the victims
        id="critical-never-lowers-desired",
    ),
]


@pytest.mark.parametrize(("p_inputs", "expected"), SCALE_UP_CASES)
def test_desired_sizes(p_inputs: PlanInputs, expected: dict[str, int]) -> None:
    assert desired_of(p_inputs) == expected


def test_every_change_has_a_reason() -> None:
    p = plan(
        inputs([group("flex-a", desired=2)], agents=BUSY_TWO, tasks=[task(n, 60) for n in range(5)]), NOW
    )
    (d,) = p.desired
    assert d.desired == 4
    assert "5 tasks waited over 2s" in d.reason and "2 more" in d.reason


def test_max_too_small_for_reservation_is_reported() -> None:
    p = plan(
        inputs(
            [group("crit-a", Tier.CRITICAL, max_size=3)], cgroups=[cgroup("api", cpu=16, mem=1, count=10)]
        ),
        NOW,
    )
    assert p.desired[0].desired == 3
    (report,) = p.reports
    assert report.tier is Tier.CRITICAL and "max too small" in report.message


def test_idle_agents_are_phased_out_then_terminated() -> None:
    g = group("flex-a", desired=3)
    agents = [agent("flex-a", 0, tasks=3), agent("flex-a", 1, idle_for=600), agent("flex-a", 2, idle_for=60)]
    first = plan(inputs([g], agents=agents), NOW)
    assert [a.instance_id for a in first.phase_out] == ["i-flex-a-1"]
    assert not first.terminate
    assert "idle for 600s" in first.phase_out[0].reason

    agents[1] = agent("flex-a", 1, idle_for=610, lifecycle=Lifecycle.PHASED_OUT)
    ours = [recent(ActionKind.PHASE_OUT, "flex-a", ago=10, agent_id="agent-flex-a-1")]
    second = plan(inputs([g], agents=agents, actions=ours), NOW)
    assert [a.instance_id for a in second.terminate] == ["i-flex-a-1"]
    assert not second.phase_out  # the other idle agent is young, and a cooldown is running
    assert "decrement" in second.terminate[0].reason
    # The mark outlives the action memory: owned agents are terminated after any delay.
    later = plan(inputs([g], agents=agents, owned=("agent-flex-a-1",)), NOW)
    assert [a.instance_id for a in later.terminate] == ["i-flex-a-1"]


def test_agent_phased_out_by_someone_else_is_never_terminated() -> None:
    """An upgrade drains an agent through the lifecycle API: once empty it is the upgrade's to replace."""
    g = group("flex-a", desired=2)
    agents = [agent("flex-a", 0, tasks=3), agent("flex-a", 1, idle_for=3600, lifecycle=Lifecycle.PHASED_OUT)]
    p = plan(inputs([g], agents=agents, actions=[recent(ActionKind.PHASE_OUT, "flex-a", ago=900)]), NOW)
    assert not p.terminate
    assert any("phased out by someone else left alone (agent-flex-a-1)" in n for n in p.notes)


def test_phased_out_agent_that_got_a_task_is_not_terminated() -> None:
    g = group("flex-a", desired=2)
    agents = [agent("flex-a", 0, tasks=1), agent("flex-a", 1, tasks=1, lifecycle=Lifecycle.PHASED_OUT)]
    assert not plan(inputs([g], agents=agents), NOW).terminate


def test_agents_with_tasks_are_never_terminated() -> None:
    g = group("flex-a", desired=2)
    agents = [agent("flex-a", 0, tasks=1), agent("flex-a", 1, tasks=1, lifecycle=Lifecycle.PHASED_OUT)]
    p = plan(inputs([g], agents=agents), NOW)
    assert not p.terminate


def test_critical_agents_are_never_drained() -> None:
    g = group("flex-a", desired=2)
    agents = [agent("flex-a", n, tasks=1, critical_tasks=1) for n in range(2)]
    p = plan(inputs([g], agents=agents), NOW)
    assert not p.phase_out and not p.terminate


def test_lightly_used_agents_are_drained_while_headroom_remains() -> None:
    g = group("flex-a", desired=4)
    agents = [agent("flex-a", n, tasks=6) for n in range(2)]  # 12 of 16 cpu used
    agents += [agent("flex-a", 2, tasks=1), agent("flex-a", 3, tasks=1)]  # 2 of 16 cpu used
    p = plan(inputs([g], agents=agents, drain_utilisation=0.25, drain_headroom=0.15), NOW)
    # Draining one light agent leaves 3 active with 18 cpu free of 48 (>= 15%); a second would leave
    # 2 active with 8 of 32 free (25%) and still pass; both go, lightest first, ids as tie-break.
    assert [a.agent_id for a in p.phase_out] == ["agent-flex-a-2", "agent-flex-a-3"]
    assert "drain threshold 25%" in p.phase_out[0].reason
    tight = plan(inputs([g], agents=agents, drain_utilisation=0.25, drain_headroom=0.3), NOW)
    assert [a.agent_id for a in tight.phase_out] == ["agent-flex-a-2"]


def test_drained_agents_are_reactivated_when_demand_returns() -> None:
    g = group("flex-a", desired=2)
    agents = [agent("flex-a", 0, tasks=8), agent("flex-a", 1, tasks=1, lifecycle=Lifecycle.PHASED_OUT)]
    ours = [RecentAction(ActionKind.PHASE_OUT, "flex-a", NOW - 100, 1, "agent-flex-a-1")]
    p = plan(inputs([g], agents=agents, tasks=[task(1, waited=60)], actions=ours), NOW)
    assert [a.agent_id for a in p.reactivate] == ["agent-flex-a-1"]
    assert p.desired[0].desired == 2  # the reactivated agent's free 14 cpu cover the 4-cpu task
    # An agent phased out by someone else (an operator) is left alone.
    other = plan(inputs([g], agents=agents, tasks=[task(1, waited=60)]), NOW)
    assert not other.reactivate and other.desired[0].desired == 3


def test_scale_down_respects_min_and_critical_floor() -> None:
    flex = group("flex-a", desired=3, min_size=2)
    crit = group("crit-a", Tier.CRITICAL, desired=3)
    agents = [agent("flex-a", n, idle_for=3600) for n in range(3)]
    agents += [agent("crit-a", n, Tier.CRITICAL, idle_for=3600) for n in range(3)]
    p = plan(inputs([flex, crit], agents=agents, cgroups=[cgroup("api", cpu=16, mem=1, count=2)]), NOW)
    # flex keeps its min of 2; critical needs ceil(32 * 1.05 / 16) = 3 instances for the reservation
    assert [a.node_group_id for a in p.phase_out] == ["flex-a"]


@pytest.mark.parametrize(
    ("actions", "expect_phase_out"),
    [
        pytest.param([], True, id="no-recent-action"),
        pytest.param([recent(ActionKind.SCALE_UP, "flex-a", ago=100)], False, id="delay-after-scale-up"),
        pytest.param([recent(ActionKind.PHASE_OUT, "flex-a", ago=5)], False, id="scale-down-cooldown"),
        pytest.param([recent(ActionKind.SCALE_UP, "flex-b", ago=5)], True, id="other-group-action"),
    ],
)
def test_scale_down_cooldowns(actions: list, expect_phase_out: bool) -> None:  # type: ignore[type-arg]
    g = group("flex-a", desired=2)
    agents = [agent("flex-a", 0, tasks=1), agent("flex-a", 1, idle_for=3600)]
    p = plan(inputs([g], agents=agents, actions=actions), NOW)
    assert bool(p.phase_out) is expect_phase_out
    if not expect_phase_out:
        assert p.notes and p.next_decision_at is not None and p.next_decision_at > NOW


def test_idle_agents_kept_for_pending_tasks() -> None:
    g = group("flex-a", desired=3)
    agents = [
        agent("flex-a", 0, tasks=1),
        agent("flex-a", 1, idle_for=3600),
        agent("flex-a", 2, idle_for=3600),
    ]
    p = plan(inputs([g], agents=agents, tasks=[task(1, waited=1, cpu=12)], drain_utilisation=0.0), NOW)
    assert len(p.phase_out) == 1


def test_next_decision_is_when_a_task_becomes_overdue() -> None:
    p = plan(inputs([group("flex-a", desired=1)], tasks=[task(1, waited=0.5), task(2, waited=1.5)]), NOW)
    assert p.next_decision_at == pytest.approx(NOW + 0.5, abs=0.01)  # the 2 s threshold


def test_plan_is_json_serialisable_with_reasons() -> None:
    import json

    p = plan(inputs([group("flex-a", desired=0)], tasks=[task(1, waited=60)]), NOW)
    doc = json.loads(json.dumps(p.to_json()))
    assert doc["desired"][0]["desired"] == 1 and doc["desired"][0]["reason"]
