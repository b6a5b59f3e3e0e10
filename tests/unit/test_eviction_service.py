"""The master's eviction service (master/eviction.py) through the JobManager, with a hand-driven clock and a
real SQLite store: the drain of a phased-out agent asks it before every move, and refusals say why."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from master.core.disruption import SystemBudget
from master.job_manager import JobManager, NotFound, Settings
from master.store.sqlite import SqliteJobStore
from tests.conftest import batch_job, service_job
from tests.unit.test_job_manager import Clock, active, register_in, report, run_all, submit, upd


@pytest.fixture
def clock() -> Clock:
    return Clock()


def manager(tmp_path: Path, clock: Clock, system: SystemBudget | None = None) -> JobManager:
    settings = Settings(heartbeat_timeout_ms=864_000_000)  # the agents are played by hand
    if system is not None:
        settings.system_disruption_budget = system
    m = JobManager(SqliteJobStore(tmp_path / "titus.db", "NORMAL"), clock, settings)
    m.start(init_cluster=True)
    return m


@pytest.fixture
def jm(tmp_path: Path, clock: Clock) -> Iterator[JobManager]:
    m = manager(tmp_path, clock)
    yield m
    m.store.close()


def by_state(jm: JobManager, job_id: str, state: str) -> list[dict[str, Any]]:
    return [t for t in active(jm, job_id) if t["status"]["state"] == state]


def finish_moves(jm: JobManager, old: int, new: int, job_id: str) -> int:
    """Play both agents: replacements on a2 start, originals on a1 confirm their kill. Returns moves done."""
    jm.schedule_once()
    launched = by_state(jm, job_id, "Launched")
    for t in launched:
        report(jm, new, upd(t["id"], "Started"), agent_id="a2")
    for t in by_state(jm, job_id, "KillInitiated"):
        report(jm, old, upd(t["id"], "Finished", "killed"))
    return len(launched)


def on_agent(jm: JobManager, job_id: str, agent_id: str) -> int:
    return sum(1 for t in active(jm, job_id) if t["taskContext"].get("agent.id") == agent_id)


def test_drain_moves_at_exactly_the_rate_per_interval(jm: JobManager, clock: Clock) -> None:
    old = register_in(jm, "a1", "flex", "g1", cpu=8)
    budget = {
        "relocationLimit": {"limit": 5},
        "ratePerInterval": {"intervalMs": 60_000, "limitPerInterval": 2},
    }
    job_id = submit(jm, service_job(desired=5, disruptionBudget=budget))
    run_all(jm, old, job_id)
    new = register_in(jm, "a2", "flex", "g2", cpu=8)
    jm.set_instance_group_lifecycle("g1", "PhasedOut", "upgrade")
    moved = []
    for _ in range(4):
        jm.tick()
        moved.append(finish_moves(jm, old, new, job_id))
        jm.tick()  # a second tick in the same interval moves nothing more
        moved[-1] += finish_moves(jm, old, new, job_id)
        quota = jm.eviction_quota_job(job_id)
        if on_agent(jm, job_id, "a1"):
            assert quota["quota"] == 0
            assert (
                "exceeded the number of tasks that can be evicted per 60s (limit=2, used=2)"
                in quota["message"]
            )
        clock.advance(60_000)
    assert moved == [2, 2, 1, 0]
    assert on_agent(jm, job_id, "a2") == 5
    assert len(by_state(jm, job_id, "Started")) == 5


def test_default_budget_moves_one_task_of_a_small_job_per_hour(jm: JobManager, clock: Clock) -> None:
    old = register_in(jm, "a1", "flex", "g1")
    job_id = submit(jm, service_job(desired=2))
    run_all(jm, old, job_id)
    new = register_in(jm, "a2", "flex", "g2")
    jm.set_agent_lifecycle("a1", "PhasedOut", "maintenance")
    jm.tick()
    assert finish_moves(jm, old, new, job_id) == 1
    clock.advance(30 * 60_000)
    jm.tick()
    assert finish_moves(jm, old, new, job_id) == 0
    quota = jm.eviction_quota_job(job_id)
    assert quota == {
        "target": {"jobId": job_id},
        "quota": 0,
        "message": "ratePercentagePerHour: exceeded the number of tasks that can be evicted per hour "
        "(limit=1, used=1)",
    }
    clock.advance(30 * 60_000 + 1)
    jm.tick()
    assert finish_moves(jm, old, new, job_id) == 1
    assert on_agent(jm, job_id, "a2") == 2


def test_availability_limit_bounds_concurrent_moves(jm: JobManager) -> None:
    old = register_in(jm, "a1", "flex", "g1", cpu=8)
    budget = {"availabilityPercentageLimit": {"percentageOfHealthyContainers": 60}, "rateUnlimited": {}}
    job_id = submit(jm, service_job(desired=5, disruptionBudget=budget))
    run_all(jm, old, job_id)
    new = register_in(jm, "a2", "flex", "g2", cpu=8)
    jm.set_agent_lifecycle("a1", "PhasedOut", "maintenance")
    jm.tick()
    jm.schedule_once()
    # 60% of 5 = 3 must stay healthy: two tasks may be leaving at once, and they never drop below 5 Started.
    assert len(by_state(jm, job_id, "Launched")) == 2
    assert len(by_state(jm, job_id, "Started")) == 5
    quota = jm.eviction_quota_job(job_id)
    assert quota["quota"] == 0 and "the required minimum is 3" in quota["message"]
    for t in by_state(jm, job_id, "Launched"):
        report(jm, new, upd(t["id"], "Started"), agent_id="a2")
    assert len(by_state(jm, job_id, "KillInitiated")) == 2
    for t in by_state(jm, job_id, "KillInitiated"):
        report(jm, old, upd(t["id"], "Finished", "killed"))
    for _ in range(3):
        jm.tick()
        finish_moves(jm, old, new, job_id)
    assert on_agent(jm, job_id, "a2") == 5


def test_batch_tasks_on_a_drained_agent_are_waited_for(jm: JobManager) -> None:
    old = register_in(jm, "a1", "flex", "g1")
    job_id = submit(jm, batch_job(size=2))
    ids = run_all(jm, old, job_id)
    register_in(jm, "a2", "flex", "g2")
    jm.set_agent_lifecycle("a1", "PhasedOut", "maintenance")
    for _ in range(3):
        jm.tick()
        jm.schedule_once()
    assert sorted(t["id"] for t in by_state(jm, job_id, "Started")) == sorted(ids)
    refused = jm.terminate_task(ids[0], "consolidation")
    assert refused["allowed"] is False
    assert refused["reasonMessage"] == "batch tasks are waited for, never evicted"
    for tid in ids:
        report(jm, old, upd(tid, "Finished", "normal", 0))
    assert jm.get_job(job_id)["status"]["state"] == "Finished"


def test_terminate_task_is_refused_with_a_reason_then_allowed(jm: JobManager, clock: Clock) -> None:
    session = register_in(jm, "a1", "flex", "g1")
    budget = {"unhealthyTasksLimit": {"limitOfUnhealthyContainers": 1}, "rateUnlimited": {}}
    job_id = submit(jm, service_job(desired=2, disruptionBudget=budget))
    first, second = run_all(jm, session, job_id)
    assert jm.terminate_task(first, "rebalance") == {
        "allowed": True,
        "reasonCode": "normal",
        "reasonMessage": "Terminated",
    }
    assert jm.get_task(first)["status"]["state"] == "KillInitiated"
    refused = jm.terminate_task(second, "rebalance")
    assert refused == {
        "allowed": False,
        "reasonCode": "jobRelocationPolicyViolation",
        "reasonMessage": "unhealthyTasksLimit: not enough healthy tasks: found 1 and the required minimum "
        "is 1",
    }
    assert jm.get_task(second)["status"]["state"] == "Started"
    with pytest.raises(NotFound):
        jm.terminate_task("no-such-task", "x")
    with pytest.raises(NotFound):
        jm.eviction_quota_job("no-such-job")


def test_self_managed_owner_gets_its_relocation_time(jm: JobManager, clock: Clock) -> None:
    session = register_in(jm, "a1", "flex", "g1")
    budget = {"selfManaged": {"relocationTimeMs": 120_000}, "rateUnlimited": {}}
    job_id = submit(jm, service_job(desired=1, disruptionBudget=budget))
    (task,) = run_all(jm, session, job_id)
    first = jm.terminate_task(task, "drain")
    assert first["allowed"] is False and "the owner has until" in first["reasonMessage"]
    clock.advance(119_000)
    assert jm.terminate_task(task, "drain")["allowed"] is False
    clock.advance(1_000)
    assert jm.terminate_task(task, "drain")["allowed"] is True


def test_system_budget_bounds_every_job_together(tmp_path: Path, clock: Clock) -> None:
    jm = manager(tmp_path, clock, SystemBudget(rate_per_s=0.5, burst=2))
    try:
        session = register_in(jm, "a1", "flex", "g1", cpu=8)
        free = {"relocationLimit": {"limit": 10}, "rateUnlimited": {}}
        jobs = [submit(jm, service_job(desired=2, disruptionBudget=free)) for _ in range(2)]
        tasks = [t for j in jobs for t in run_all(jm, session, j)]
        assert [jm.terminate_task(t, "x")["allowed"] for t in tasks[:3]] == [True, True, False]
        refused = jm.terminate_task(tasks[3], "x")
        assert refused["reasonCode"] == "aboveSystemDisruptionBudget"
        assert refused["reasonMessage"] == "system disruption budget exhausted (burst=2, refill=0.5/s)"
        assert jm.eviction_quota_system() == {
            "target": {"system": {}},
            "quota": 0,
            "message": refused["reasonMessage"],
        }
        assert jm.eviction_quota_job(jobs[1])["quota"] == 0
        clock.advance(2_000)  # one token back
        assert jm.eviction_quota_system()["quota"] == 1
        assert jm.terminate_task(tasks[3], "x")["allowed"] is True
        assert jm.eviction_quota_scope(tier="flex")["target"] == {"tier": "Flex"}
        assert jm.eviction_quota_scope(capacity_group="DEFAULT")["target"] == {"capacityGroup": "DEFAULT"}
    finally:
        jm.store.close()


def test_the_system_budget_bounds_a_drain_across_jobs(tmp_path: Path, clock: Clock) -> None:
    jm = manager(tmp_path, clock, SystemBudget(rate_per_s=0.001, burst=1))
    try:
        old = register_in(jm, "a1", "flex", "g1", cpu=8)
        free = {"relocationLimit": {"limit": 10}, "rateUnlimited": {}}
        jobs = [submit(jm, service_job(desired=1, disruptionBudget=free)) for _ in range(3)]
        for job_id in jobs:
            run_all(jm, old, job_id)
        new = register_in(jm, "a2", "flex", "g2", cpu=8)
        jm.set_agent_lifecycle("a1", "PhasedOut", "maintenance")
        jm.tick()
        assert sum(finish_moves(jm, old, new, j) for j in jobs) == 1  # one token, one move, whatever the job
        clock.advance(1_000_000)  # 1000 s at 0.001/s: one token back
        jm.tick()
        assert sum(finish_moves(jm, old, new, j) for j in jobs) == 1
        assert sum(on_agent(jm, j, "a1") for j in jobs) == 1
    finally:
        jm.store.close()


def test_a_new_leader_counts_the_evictions_its_predecessor_allowed(tmp_path: Path, clock: Clock) -> None:
    first = manager(tmp_path, clock)
    old = register_in(first, "a1", "flex", "g1", cpu=8)
    budget = {
        "relocationLimit": {"limit": 5},
        "ratePerInterval": {"intervalMs": 600_000, "limitPerInterval": 2},
    }
    job_id = submit(first, service_job(desired=3, disruptionBudget=budget))
    tasks = run_all(first, old, job_id)
    assert first.terminate_task(tasks[0], "one")["allowed"] is True
    report(first, old, upd(tasks[0], "Finished", "killed"))  # archived with its evictedMs
    register_in(first, "a2", "flex", "g2", cpu=8)
    first.set_agent_lifecycle("a1", "PhasedOut", "maintenance")
    first.tick()  # the second slot: a move in flight when the leader goes
    assert sum(1 for t in first.tasks.values() if t.migrating_to) == 1
    first.store.close()

    clock.advance(60_000)
    second = manager(tmp_path, clock)
    try:
        quota = second.eviction_quota_job(job_id)
        assert quota["quota"] == 0
        assert "(limit=2, used=2)" in quota["message"]
        clock.advance(540_001)  # both leave the 10-minute window
        assert second.eviction_quota_job(job_id)["quota"] > 0
    finally:
        second.store.close()
