"""Table tests for the placement engine: constraints, tiers, lifecycle, fitness, capacity groups, reasons."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pytest

from master.scheduler import (
    KNOWN_CONSTRAINTS,
    AgentView,
    FitnessWeights,
    PendingTask,
    Resources,
    validate_constraints,
)
from tests.scheduler.builders import agent, group, placed, run, task, tasks


@dataclass
class Case:
    """Agents and tasks in, and either where each task lands or which exclusion explains it."""

    agents: list[AgentView]
    pending: list[PendingTask]
    expect: dict[str, str | None]  # task id -> agent id, or None for "stays pending"
    reasons: dict[str, dict[str, int]] = field(default_factory=dict)  # task id -> subset of excluded
    zone_counts: dict[str, dict[str, int]] = field(default_factory=dict)


HARD_CASES = {
    "availabilityZone picks the zone": Case(
        [agent("a", zone="us-east-1a"), agent("b", zone="us-east-1b")],
        [task(hard={"availabilityZone": "us-east-1b"})],
        {"t1": "b"},
    ),
    "availabilityZone with no agent there stays pending": Case(
        [agent("a", zone="us-east-1a"), agent("b", zone="us-east-1b")],
        [task(hard={"availabilityZone": "us-east-1c"})],
        {"t1": None},
        {"t1": {"availabilityZone": 2}},
    ),
    "machineType picks the type": Case(
        [agent("a", itype="m5.xlarge"), agent("b", itype="r5.xlarge")],
        [task(hard={"machineType": "r5.xlarge"})],
        {"t1": "b"},
    ),
    "machineType is case-insensitive in name and value": Case(
        [agent("a", itype="m5.xlarge"), agent("b", itype="r5.xlarge")],
        [task(hard={"MACHINETYPE": "R5.XLARGE"})],
        {"t1": "b"},
    ),
    "machineId picks that agent although another is fuller": Case(
        [agent("a", used=Resources(3, 0)), agent("b")],
        [task(hard={"machineId": "b"})],
        {"t1": "b"},
    ),
    "machineId of a full agent stays pending": Case(
        [agent("a"), agent("b", used=Resources(4, 0))],
        [task(hard={"machineId": "b"})],
        {"t1": None},
        {"t1": {"machineId": 1, "cpu": 1}},
    ),
    "attribute equality": Case(
        [agent("a", attrs={"rack": "r1"}), agent("b", attrs={"rack": "r2"})],
        [task(hard={"attribute.rack": "r2"})],
        {"t1": "b"},
    ),
    "attribute missing on every agent": Case(
        [agent("a"), agent("b")],
        [task(hard={"attribute.rack": "r2"})],
        {"t1": None},
        {"t1": {"attribute.rack": 2}},
    ),
    "uniqueHost avoids the agent already running the job": Case(
        [agent("a", used=Resources(1, 0), jobs={"j1": 1}), agent("b")],
        [task(hard={"uniqueHost": "true"})],
        {"t1": "b"},
    ),
    "uniqueHost counts placements earlier in the same pass": Case(
        [agent("a"), agent("b")],
        tasks(3, hard={"uniqueHost": "true"}),
        {"t0": "a", "t1": "b", "t2": None},
        {"t2": {"uniqueHost": 2}},
    ),
    "uniqueHost false is no constraint": Case(
        [agent("a")],
        tasks(2, hard={"uniqueHost": "false"}),
        {"t0": "a", "t1": "a"},
    ),
    "exclusiveHost needs an agent with no tasks": Case(
        [agent("a", used=Resources(1, 0), jobs={"other": 1}), agent("b")],
        [task(hard={"exclusiveHost": "true"})],
        {"t1": "b"},
    ),
    "exclusiveHost keeps later tasks off the agent": Case(
        [agent("a")],
        [task("t1", hard={"exclusiveHost": "true"}), task("t2", job="j2")],
        {"t1": "a", "t2": None},
        {"t2": {"exclusiveHost": 1}},
    ),
    "an agent held exclusively takes nothing": Case(
        [agent("a", exclusive=True, jobs={"x": 1}), agent("b", cpu=1)],
        [task(cpu=2)],
        {"t1": None},
        {"t1": {"exclusiveHost": 1, "cpu": 1}},
    ),
    "zoneBalance goes to the zone with fewest tasks of the job": Case(
        [agent("a", zone="z1"), agent("b", zone="z2"), agent("c", zone="z3")],
        [task(hard={"zoneBalance": "true"})],
        {"t1": "b"},
        zone_counts={"j1": {"z1": 2, "z3": 1}},
    ),
    "zoneBalance waits rather than unbalance": Case(
        [agent("a", zone="z1", cpu=1), agent("b", zone="z2", cpu=8)],
        tasks(4, hard={"zoneBalance": "true"}),
        {"t0": "a", "t1": "b", "t2": "b", "t3": None},
        {"t3": {"zoneBalance": 1, "cpu": 1}},
    ),
    "zoneBalance opens a zone once the job's lowest zone catches up": Case(
        [agent("a", zone="z1", cpu=2), agent("b", zone="z2", cpu=8)],
        [
            task("t0", cpu=4, hard={"zoneBalance": "true"}),
            task("t1", hard={"zoneBalance": "true"}),
            task("t2", cpu=4, hard={"zoneBalance": "true"}),
        ],
        {"t0": None, "t1": "a", "t2": "b"},
        {"t0": {"cpu": 1, "zoneBalance": 1}},
        zone_counts={"j1": {"z2": 1}},
    ),
}


@pytest.mark.parametrize("case", HARD_CASES.values(), ids=HARD_CASES.keys())
def test_hard_constraints(case: Case) -> None:
    reply = run(case.pending, case.agents, zone_counts=case.zone_counts)
    where = placed(reply)
    for task_id, agent_id in case.expect.items():
        if agent_id is None:
            assert task_id not in where
            assert task_id in reply.unplaced
        else:
            assert where.get(task_id) == agent_id
    for task_id, subset in case.reasons.items():
        excluded = reply.unplaced[task_id].excluded
        assert {k: excluded.get(k) for k in subset} == subset


def test_zone_balance_in_one_pass_spreads_evenly() -> None:
    agents = [agent(f"{z}-{n}", zone=z, cpu=8) for z in ("z1", "z2", "z3") for n in range(2)]
    reply = run(tasks(7, hard={"zoneBalance": "true"}), agents)
    zone_of = {a.agent_id: a.attributes["zone"] for a in agents}
    per_zone = Counter(zone_of[a] for a in placed(reply).values())
    assert sorted(per_zone.values()) == [2, 2, 3]


SOFT_CASES = {
    "soft zone is preferred when it has room": Case(
        [agent("a", zone="z1", used=Resources(3, 0)), agent("b", zone="z2")],
        [task(soft={"availabilityZone": "z2"})],
        {"t1": "b"},
    ),
    "soft zone gives way when full": Case(
        [agent("a", zone="z1"), agent("b", zone="z2", used=Resources(4, 0))],
        [task(soft={"availabilityZone": "z2"})],
        {"t1": "a"},
    ),
    "soft machineType contradicting the hard one is ignored": Case(
        [agent("a", itype="m5"), agent("b", itype="r5")],
        [task(hard={"machineType": "m5"}, soft={"machineType": "r5"})],
        {"t1": "a"},
    ),
    "soft uniqueHost shares an agent rather than wait": Case(
        [agent("a")],
        tasks(2, soft={"uniqueHost": "true"}),
        {"t0": "a", "t1": "a"},
    ),
    "soft uniqueHost spreads when it can": Case(
        [agent("a"), agent("b")],
        tasks(2, soft={"uniqueHost": "true"}),
        {"t0": "a", "t1": "b"},
    ),
}


@pytest.mark.parametrize("case", SOFT_CASES.values(), ids=SOFT_CASES.keys())
def test_soft_constraints(case: Case) -> None:
    assert placed(run(case.pending, case.agents)) == case.expect


TIER_AND_LIFECYCLE_CASES = {
    "critical task lands on the critical agent only": Case(
        [agent("flex", tier="flex", used=Resources(3, 0)), agent("crit", tier="critical")],
        [task(tier="critical")],
        {"t1": "crit"},
    ),
    "flex task never lands on a critical agent": Case(
        [agent("crit", tier="critical")],
        [task(tier="flex")],
        {"t1": None},
        {"t1": {"otherTier": 1}},
    ),
    "PhasedOut agents get no new tasks": Case(
        [agent("old", lifecycle="PhasedOut"), agent("new", used=Resources(3, 0))],
        tasks(2),
        {"t0": "new", "t1": None},
        {"t1": {"PhasedOut": 1, "cpu": 1}},
    ),
    "Removable agents get no new tasks": Case(
        [agent("gone", lifecycle="Removable")],
        [task()],
        {"t1": None},
        {"t1": {"Removable": 1}},
    ),
}


@pytest.mark.parametrize("case", TIER_AND_LIFECYCLE_CASES.values(), ids=TIER_AND_LIFECYCLE_CASES.keys())
def test_tiers_and_lifecycle(case: Case) -> None:
    test_hard_constraints(case)


RESOURCE_CASES = {
    "cpu": (task(cpu=5), "cpu"),
    "memory": (task(memory=9000), "memory"),
    "disk": (task(disk=200_000), "disk"),
    "network": (task(network=2000), "network"),
    "gpu": (task(gpu=1), "gpu"),
}


@pytest.mark.parametrize(("pending", "dimension"), RESOURCE_CASES.values(), ids=RESOURCE_CASES.keys())
def test_each_dimension_is_never_overcommitted(pending: PendingTask, dimension: str) -> None:
    reply = run([pending], [agent("a"), agent("b")])
    assert reply.assignments == ()
    assert reply.unplaced["t1"].excluded == {dimension: 2}


def test_free_resources_reflect_earlier_placements_in_the_pass() -> None:
    reply = run([task("t1", cpu=3), task("t2", cpu=3)], [agent("a")])
    assert placed(reply) == {"t1": "a"}
    assert reply.unplaced["t2"].summary == "insufficient cpu on 1 agent"


def test_used_resources_count_against_the_agent() -> None:
    reply = run([task(memory=4096)], [agent("a", used=Resources(0, 6000))])
    assert reply.unplaced["t1"].excluded == {"memory": 1}


def test_fractional_cpu_adds_up_exactly() -> None:
    reply = run(tasks(10, cpu=0.1, memory=512), [agent("a", cpu=1.0)])
    assert len(reply.assignments) == 10


FITNESS_CASES = {
    "bin packing prefers the fuller agent": (
        [agent("empty"), agent("half", used=Resources(2, 4096))],
        task(),
        FitnessWeights(),
        "half",
    ),
    "spreading prefers the emptier agent": (
        [agent("half", used=Resources(2, 4096)), agent("empty")],
        task(spread=True),
        FitnessWeights(),
        "empty",
    ),
    "spreading avoids an agent running the job": (
        [agent("mine", jobs={"j1": 1}), agent("busy", used=Resources(1, 1024), jobs={"x": 1})],
        task(spread=True),
        FitnessWeights(),
        "busy",
    ),
    "cpu weight packs by cpu": (
        [agent("cpu-full", used=Resources(3, 0)), agent("mem-full", used=Resources(0, 6144))],
        task(),
        FitnessWeights(cpu=1, memory=0.01, disk=0, network=0),
        "cpu-full",
    ),
    "disk weight breaks a cpu/memory tie toward the fuller disk": (
        [agent("roomy"), agent("tight", used=Resources(0, 0, 90_000))],
        task(disk=1000),
        FitnessWeights(disk=1),
        "tight",
    ),
    "without a disk weight the tie goes to the first agent": (
        [agent("roomy"), agent("tight", used=Resources(0, 0, 90_000))],
        task(disk=1000),
        FitnessWeights(),
        "roomy",
    ),
    "network weight breaks a tie for a constrained task too": (
        [
            agent("roomy", zone="z1"),
            agent("tight", zone="z1", used=Resources(0, 0, 0, 900)),
            agent("c", zone="z2"),
        ],
        task(hard={"availabilityZone": "z1"}),
        FitnessWeights(network=1),
        "tight",
    ),
    "memory weight packs by memory": (
        [agent("cpu-full", used=Resources(3, 0)), agent("mem-full", used=Resources(0, 6144))],
        task(),
        FitnessWeights(cpu=0.01, memory=1, disk=0, network=0),
        "mem-full",
    ),
}


@pytest.mark.parametrize(
    ("agents", "pending", "weights", "expected"), FITNESS_CASES.values(), ids=FITNESS_CASES.keys()
)
def test_fitness(
    agents: list[AgentView], pending: PendingTask, weights: FitnessWeights, expected: str
) -> None:
    assert placed(run([pending], agents, weights=weights)) == {"t1": expected}


def test_spread_job_goes_to_zone_with_fewest_of_its_tasks() -> None:
    agents = [agent("a", zone="z1"), agent("b", zone="z2")]
    reply = run([task(spread=True)], agents, zone_counts={"j1": {"z1": 3, "z2": 1}})
    assert placed(reply) == {"t1": "b"}


# --- capacity groups -------------------------------------------------------------------------------


def test_tasks_within_reservation_go_before_best_effort() -> None:
    pending = [*tasks(2, prefix="be", group="besteffort"), *tasks(2, prefix="res", group="reserved")]
    reply = run(pending, [agent("a", cpu=2)], [group("reserved", cpu=1, count=2), group("besteffort")])
    assert sorted(placed(reply)) == ["res0", "res1"]


def test_best_effort_is_shared_by_usage_over_reservation() -> None:
    pending = [*tasks(6, prefix="x", group="x"), *tasks(6, prefix="y", group="y")]
    groups = [group("x", cpu=1, count=1), group("y", cpu=1, count=1)]
    reply = run(pending, [agent("a", cpu=6)], groups)
    counts = Counter(task_id[0] for task_id in placed(reply))
    assert counts == {"x": 3, "y": 3}


def test_larger_reservation_gets_the_larger_share() -> None:
    pending = [*tasks(9, prefix="x", group="x"), *tasks(9, prefix="y", group="y")]
    groups = [group("x", cpu=1, count=2), group("y", cpu=1, count=1)]
    reply = run(pending, [agent("a", cpu=9, memory=100_000)], groups)
    assert Counter(task_id[0] for task_id in placed(reply)) == {"x": 6, "y": 3}


def test_critical_reservation_is_held_for_its_group() -> None:
    groups = [group("payments", "critical", cpu=1, count=4), group("batchy", "critical")]
    pending = tasks(6, prefix="b", group="batchy", tier="critical")
    reply = run(pending, [agent("c", tier="critical", cpu=6, memory=64_000)], groups)
    assert len(reply.assignments) == 2
    assert "reserved for other capacity groups" in reply.unplaced["b5"].summary


def test_used_reservation_is_not_held() -> None:
    in_use = Resources(4, 4096)
    groups = [group("payments", "critical", cpu=1, count=4, used=in_use), group("batchy", "critical")]
    crit = agent("c", tier="critical", cpu=6, used=in_use)
    reply = run(tasks(2, group="batchy", tier="critical"), [crit], groups)
    assert len(reply.assignments) == 2


def test_flex_reservation_is_not_held() -> None:
    groups = [group("encoding", "flex", cpu=1, count=4), group("other", "flex")]
    reply = run(tasks(6, group="other"), [agent("f", cpu=6)], groups)
    assert len(reply.assignments) == 6


def test_unknown_group_is_best_effort() -> None:
    reply = run([task(group="nobody-made-this")], [agent("a")])
    assert placed(reply) == {"t1": "a"}


# --- why pending -----------------------------------------------------------------------------------


def test_summary_ranks_reasons_by_count() -> None:
    agents = [
        *(agent(f"small{i}", memory=512, zone="z1") for i in range(3)),
        agent("other-zone", zone="z2", memory=512),
        agent("retired", lifecycle="PhasedOut"),
    ]
    reply = run(
        [task(memory=1024, hard={"zoneBalance": "true"})], agents, zone_counts={"j1": {"z1": 0, "z2": 1}}
    )
    assert (
        reply.unplaced["t1"].summary
        == "insufficient memory on 3 agents; zoneBalance excluded 1; 1 agent PhasedOut"
    )


def test_reasons_break_down_by_instance_group() -> None:
    agents = [agent("a", group="flex-small", cpu=1), agent("b", group="flex-old", lifecycle="PhasedOut")]
    reason = run([task(cpu=2)], agents).unplaced["t1"]
    assert reason.by_instance_group == {"flex-small": {"cpu": 1}, "flex-old": {"PhasedOut": 1}}


def test_no_agents_at_all() -> None:
    assert run([task(tier="critical")], []).unplaced["t1"].summary == "no Active agents in the critical tier"


def test_diagnosis_budget_still_gives_a_reason() -> None:
    from master.scheduler import ScheduleRequest, schedule

    pending = [task(f"t{i}", cpu=10 + i) for i in range(3)]
    reply = schedule(ScheduleRequest(tasks=pending, agents=[agent("a")], max_diagnoses=1))
    assert reply.unplaced["t0"].excluded == {"cpu": 1}
    assert "not diagnosed" in reply.unplaced["t2"].summary


def test_duplicate_task_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        run([task("t1"), task("t1")], [agent()])


# --- validation ------------------------------------------------------------------------------------

VALID = {
    "every known name": {name: ("true" if name[0] in "uez" else "x") for name in KNOWN_CONSTRAINTS},
    "names in any case": {"UniqueHost": "TRUE", "ZONEBALANCE": "false"},
    "attribute": {"attribute.rack": "r1"},
    "empty": {},
}


@pytest.mark.parametrize("constraints", VALID.values(), ids=VALID.keys())
def test_valid_constraints(constraints: dict[str, str]) -> None:
    assert validate_constraints(constraints) == []


INVALID = {
    "unknown name": ({"rackAware": "true"}, "rackAware", "unknown constraint"),
    "boolean that is neither": ({"uniqueHost": "maybe"}, "uniqueHost", "'true' or 'false'"),
    "empty zone": ({"availabilityZone": " "}, "availabilityZone", "must not be empty"),
    "attribute without a name": ({"attribute.": "x"}, "attribute.", "needs a name"),
    "same name twice in different case": (
        {"uniqueHost": "true", "UNIQUEHOST": "false"},
        "UNIQUEHOST",
        "duplicates",
    ),
}


@pytest.mark.parametrize(("constraints", "key", "words"), INVALID.values(), ids=INVALID.keys())
def test_invalid_constraints(constraints: dict[str, str], key: str, words: str) -> None:
    problems = validate_constraints(constraints)
    assert [k for k, _ in problems] == [key]
    assert words in problems[0][1]
