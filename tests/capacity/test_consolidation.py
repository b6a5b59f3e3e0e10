"""Consolidation in the planner: plans as data, within each job's disruption budget."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from capacity.model import Agent, AgentState, Lifecycle, Resources, RunningTask, Tier
from capacity.planner import plan
from master.core.disruption import Budget, Eviction, JobView, TaskHealth
from tests.capacity.builders import M5, NOW, group, inputs

GENEROUS = {"availabilityPercentageLimit": {"percentageOfHealthyContainers": 50}, "rateUnlimited": {}}

ALL_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def loaded(n: int, *tasks: tuple[str, str, float, bool], lifecycle: Lifecycle = Lifecycle.ACTIVE) -> Agent:
    """Agent n of flex-a running (task id, job id, cpu, batch) tasks."""
    running = tuple(
        RunningTask(tid, job, Resources(cpu, cpu * 2048, 1000, 100), batch) for tid, job, cpu, batch in tasks
    )
    used = Resources()
    for t in running:
        used = used + t.resources
    return Agent(
        id=f"agent-{n}",
        instance_id=f"i-flex-a-{n}",
        node_group_id="flex-a",
        tier=Tier.FLEX,
        lifecycle=lifecycle,
        state=AgentState.REGISTERED,
        resources=M5,
        used=used,
        task_ids=tuple(t.id for t in running),
        tasks=running,
    )


def job(jid: str, budget: dict[str, Any] | None, task_ids: list[str], batch: bool = False) -> JobView:
    return JobView(
        jid, len(task_ids), Budget.from_wire(budget, batch), tuple(TaskHealth(t) for t in task_ids), batch
    )


def consolidate(
    agents: list[Agent], jobs: list[JobView], evictions: tuple[Eviction, ...] = (), **cfg: float
) -> Any:
    settings: dict[str, float] = {"consolidate_utilisation": 0.5, "idle_threshold_s": 300.0, **cfg}
    return plan(
        inputs(
            [group("flex-a", desired=len(agents))],
            agents=agents,
            jobs={j.id: j for j in jobs},
            evictions=evictions,
            **settings,
        ),
        NOW,
    )


def test_two_half_empty_agents_become_one() -> None:
    agents = [
        loaded(0, ("a0", "web", 4, False), ("a1", "web", 2, False)),  # 6 of 16 cpu
        loaded(1, ("b0", "web", 4, False), ("b1", "api", 3, False)),  # 7 of 16 cpu
    ]
    jobs = [job("web", GENEROUS, ["a0", "a1", "b0"]), job("api", GENEROUS, ["b1"])]
    p = consolidate(agents, jobs)
    assert [a.agent_id for a in p.phase_out] == ["agent-0"]
    assert {(m.task_id, m.from_agent, m.to_agent) for m in p.moves} == {
        ("a0", "agent-0", "agent-1"),
        ("a1", "agent-0", "agent-1"),
    }
    assert all("budget allows it" in m.reason for m in p.moves)
    assert "2 service tasks move" in p.phase_out[0].reason
    assert p.to_json()["moves"][0]["fromAgent"] == "agent-0"


def test_batch_tasks_are_waited_for_never_moved() -> None:
    agents = [
        loaded(0, ("s0", "web", 2, False), ("batch-0", "etl", 2, True)),
        loaded(1, ("s1", "web", 6, False)),
    ]
    jobs = [job("web", GENEROUS, ["s0", "s1"]), job("etl", None, ["batch-0"], batch=True)]
    p = consolidate(agents, jobs)
    assert [m.task_id for m in p.moves] == ["s0"]
    assert [a.agent_id for a in p.phase_out] == ["agent-0"]
    assert "waits for 1 batch tasks" in p.phase_out[0].reason


@pytest.mark.parametrize(
    ("budget", "evictions", "why"),
    [
        pytest.param(
            {
                "unhealthyTasksLimit": {"limitOfUnhealthyContainers": 1},
                "ratePerInterval": {"intervalMs": 600_000, "limitPerInterval": 1},
            },
            (Eviction("web", "old", NOW - 60),),
            "exceeded the number of tasks",
            id="rate-used-up",
        ),
        pytest.param(
            {
                "rateUnlimited": {},
                "timeWindows": [
                    {
                        "days": list(ALL_DAYS),
                        "hourlyTimeWindows": [
                            {"startHour": (int(NOW // 3600) + 2) % 24, "endHour": (int(NOW // 3600) + 3) % 24}
                        ],
                    }
                ],
            },
            (),
            "outside time window",
            id="outside-window",
        ),
        pytest.param(
            {"selfManaged": {"relocationTimeMs": 60_000}}, (), "moves its own tasks", id="self-managed"
        ),
        pytest.param(
            {"relocationLimit": {"limit": 1}},
            (Eviction("web", "a0", NOW - 7200),),
            "relocation limit exceeded",
            id="relocation-limit",
        ),
    ],
)
def test_budget_refusal_keeps_the_agent(
    budget: dict[str, Any], evictions: tuple[Eviction, ...], why: str
) -> None:
    agents = [loaded(0, ("a0", "web", 2, False)), loaded(1, ("b0", "other", 9, False))]
    jobs = [job("web", budget, ["a0", "a1"]), job("other", GENEROUS, ["b0"])]
    p = consolidate(agents, jobs, evictions)
    assert not p.moves and not p.phase_out
    assert any("not consolidating agent-0" in n and why in n for n in p.notes), p.notes


def test_planned_moves_spend_the_budget() -> None:
    """Two light agents hold tasks of one job allowed one stop per 10 minutes: only one is emptied."""
    one_per_interval = {
        "availabilityPercentageLimit": {"percentageOfHealthyContainers": 50},
        "ratePerInterval": {"intervalMs": 600_000, "limitPerInterval": 1},
    }
    agents = [
        loaded(0, ("a0", "web", 2, False)),
        loaded(1, ("b0", "web", 3, False)),
        loaded(2, ("c0", "big", 9, False)),
        loaded(3, ("d0", "big", 9, False)),
    ]
    jobs = [job("web", one_per_interval, ["a0", "b0"]), job("big", GENEROUS, ["c0", "d0"])]
    p = consolidate(agents, jobs)
    assert [a.agent_id for a in p.phase_out] == ["agent-0"]
    assert [m.task_id for m in p.moves] == ["a0"]
    assert any("not consolidating agent-1" in n for n in p.notes)


def test_moves_in_flight_on_draining_agents_count_against_the_budget() -> None:
    one_per_interval = {
        "availabilityPercentageLimit": {"percentageOfHealthyContainers": 50},
        "ratePerInterval": {"intervalMs": 600_000, "limitPerInterval": 1},
    }
    agents = [
        loaded(0, ("a0", "web", 2, False), lifecycle=Lifecycle.PHASED_OUT),  # its stop is still to come
        loaded(1, ("b0", "web", 3, False)),
        loaded(2, ("c0", "big", 9, False)),
    ]
    jobs = [job("web", one_per_interval, ["a0", "b0"]), job("big", GENEROUS, ["c0"])]
    p = consolidate(agents, jobs)
    assert not p.moves


def test_nothing_moves_when_it_does_not_fit_or_headroom_would_go() -> None:
    agents = [loaded(0, ("a0", "web", 7, False)), loaded(1, ("b0", "web", 7, False), ("b1", "web", 4, False))]
    jobs = [job("web", GENEROUS, ["a0", "b0", "b1"])]
    p = consolidate(agents, jobs)  # 7 cpu do not fit in the 5 free
    assert not p.moves
    roomy = [loaded(0, ("a0", "web", 2, False)), loaded(1, ("b0", "web", 6, False))]
    tight = consolidate(roomy, [job("web", GENEROUS, ["a0", "b0"])], drain_headroom=0.6)
    assert not tight.moves and any("too little free" in n for n in tight.notes)


def test_agents_with_unknown_tasks_or_critical_work_are_left_alone() -> None:
    partial = replace(loaded(0, ("a0", "web", 2, False)), task_ids=("a0", "mystery"))
    critical = replace(loaded(2, ("c0", "web", 2, False)), critical_task_count=1)
    agents = [partial, loaded(1, ("b0", "web", 9, False)), critical]
    p = consolidate(agents, [job("web", GENEROUS, ["a0", "b0", "c0"])])
    assert not p.moves and not p.phase_out
