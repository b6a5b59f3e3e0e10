"""Job semantics through the JobManager with a hand-driven clock and a real SQLite store.

The agent side is played by calls on the manager's agent channel, so each test is one readable scenario.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from master.api.models import AgentRegistration, AgentStatusReport, CapacityUpdate, JobDescriptor
from master.job_manager import Conflict, JobManager, NotLeader, Settings, StaleSession
from master.store.base import StoreError
from master.store.sqlite import SqliteJobStore
from tests.conftest import batch_job, service_job, wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "titus.db"


@pytest.fixture
def jm(db: Path, clock: Clock) -> Iterator[JobManager]:
    m = JobManager(SqliteJobStore(db, "NORMAL"), clock, Settings(heartbeat_timeout_ms=5_000))
    m.start(init_cluster=True)
    yield m
    m.store.close()


def register(jm: JobManager, agent_id: str = "a1", cpu: float = 4, memory: int = 4096,
             running: list[str] | None = None, exited: list[str] | None = None) -> int:
    reply = jm.register_agent(AgentRegistration.model_validate(
        {"id": agent_id, "resources": {"cpu": cpu, "memoryMB": memory, "diskMB": 10_000, "networkMbps": 1000},
         "runningTaskIds": running or [], "exitedTaskIds": exited or []}))
    return int(reply["sessionEpoch"])


def report(jm: JobManager, session: int, *updates: dict[str, Any], agent_id: str = "a1") -> None:
    jm.agent_report(
        agent_id, AgentStatusReport.model_validate({"sessionEpoch": session, "updates": list(updates)})
    )


def upd(task_id: str, state: str, reason: str = "normal", exit_code: int | None = None) -> dict[str, Any]:
    return {"taskId": task_id, "state": state, "reasonCode": reason, "exitCode": exit_code}


def submit(jm: JobManager, spec: dict[str, Any]) -> str:
    return jm.submit(JobDescriptor.model_validate(spec))[0]


def active(jm: JobManager, job_id: str) -> list[dict[str, Any]]:
    return jm.list_tasks({job_id}, None)


def states_of(jm: JobManager, job_id: str) -> list[str]:
    return sorted(t["status"]["state"] for t in active(jm, job_id))


def run_all(jm: JobManager, session: int, job_id: str) -> list[str]:
    jm.schedule_once()
    ids = [t["id"] for t in active(jm, job_id) if t["status"]["state"] == "Launched"]
    for tid in ids:
        report(jm, session, upd(tid, "Started"))
    return ids


def test_batch_job_runs_to_completion(jm: JobManager) -> None:
    session = register(jm)
    job_id = submit(jm, batch_job(size=3))
    ids = run_all(jm, session, job_id)
    assert len(ids) == 3
    for tid in ids:
        report(jm, session, upd(tid, "Finished", "normal", 0))
    job = jm.get_job(job_id)
    assert job["status"]["state"] == "Finished"
    assert job["status"]["reasonCode"] == "normal"
    finished = jm.list_tasks({job_id}, {"Finished"})
    assert [t["status"]["reasonCode"] for t in finished] == ["normal"] * 3


def test_batch_retries_failures_per_policy_then_fails(jm: JobManager, clock: Clock) -> None:
    session = register(jm)
    spec = batch_job(
        size=1,
        batch={
            "retryPolicy": {
                "immediate": None,
                "delayed": {"initialDelayMs": 1000, "delayMs": 2000, "retries": 2},
            }
        },
    )
    spec["batch"]["retryPolicy"] = {"delayed": {"initialDelayMs": 1000, "delayMs": 2000, "retries": 2}}
    job_id = submit(jm, spec)
    (first,) = run_all(jm, session, job_id)
    report(jm, session, upd(first, "Finished", "failed", 1))
    (retry,) = active(jm, job_id)
    assert retry["taskContext"]["task.resubmitOf"] == first
    assert retry["taskContext"]["task.resubmitNumber"] == "1"
    assert jm.schedule_once() == 0  # the delay holds it back
    clock.advance(1000)
    jm.tick()  # timers hand due retries to the scheduler
    (second,) = run_all(jm, session, job_id)
    report(jm, session, upd(second, "Finished", "failed", 1))
    clock.advance(1999)
    jm.tick()
    assert jm.schedule_once() == 0
    clock.advance(1)
    jm.tick()
    (third,) = run_all(jm, session, job_id)
    report(jm, session, upd(third, "Finished", "failed", 1))
    job = jm.get_job(job_id)
    assert job["status"]["state"] == "Finished"
    assert job["status"]["reasonCode"] == "failed"


def test_service_keeps_desired_and_replaces_killed_tasks(jm: JobManager) -> None:
    session = register(jm)
    job_id = submit(jm, service_job(desired=2))
    ids = run_all(jm, session, job_id)
    assert len(ids) == 2
    jm.kill_task(ids[0], shrink=False)
    assert states_of(jm, job_id) == ["KillInitiated", "Started"]
    report(jm, session, upd(ids[0], "Finished", "killed", -15))
    tasks = active(jm, job_id)
    assert len(tasks) == 2
    replacement = next(t for t in tasks if t["id"] not in ids)
    assert replacement["taskContext"]["task.resubmitOf"] == ids[0]
    killed = jm.get_task(ids[0])
    assert killed["status"]["reasonCode"] == "killed"


def test_kill_with_shrink_lowers_desired_and_min_unless_prevented(jm: JobManager) -> None:
    """Titus's KillTask: shrink lowers desired; below min it lowers min too, unless preventMinSizeUpdate."""
    session = register(jm)
    job_id = submit(jm, service_job(desired=2, service={"capacity": {"min": 1, "desired": 2, "max": 3}}))
    ids = run_all(jm, session, job_id)
    jm.kill_task(ids[0], shrink=True)
    report(jm, session, upd(ids[0], "Finished", "killed"))
    assert [t["id"] for t in active(jm, job_id)] == [ids[1]]
    assert jm.get_job(job_id)["jobDescriptor"]["service"]["capacity"] == {"min": 1, "max": 3, "desired": 1}
    with pytest.raises(Conflict, match="below min"):
        jm.kill_task(ids[1], shrink=True, prevent_min_size_update=True)
    jm.kill_task(ids[1], shrink=True)
    assert jm.get_job(job_id)["jobDescriptor"]["service"]["capacity"] == {"min": 0, "max": 3, "desired": 0}


def test_scale_up_and_down(jm: JobManager) -> None:
    session = register(jm)
    job_id = submit(jm, service_job(desired=1))
    run_all(jm, session, job_id)
    jm.update_capacity(job_id, CapacityUpdate(desired=3))
    run_all(jm, session, job_id)
    assert states_of(jm, job_id) == ["Started"] * 3
    jm.update_capacity(job_id, CapacityUpdate(desired=1))
    assert states_of(jm, job_id) == ["KillInitiated", "KillInitiated", "Started"]
    with pytest.raises(ValueError, match="min <= desired <= max"):
        jm.update_capacity(job_id, CapacityUpdate(desired=20))


def test_killing_a_job_ends_every_task(jm: JobManager) -> None:
    session = register(jm)
    job_id = submit(jm, service_job(desired=2, container={"resources": {"cpu": 3}}))  # one fits, one waits
    run_all(jm, session, job_id)
    assert states_of(jm, job_id) == ["Accepted", "Started"]
    jm.kill_job(job_id)
    (running,) = [t for t in active(jm, job_id) if t["status"]["state"] == "KillInitiated"]
    assert jm.get_job(job_id)["status"]["state"] == "KillInitiated"
    report(jm, session, upd(running["id"], "Finished", "killed"))
    assert jm.get_job(job_id)["status"]["state"] == "Finished"
    with pytest.raises(Conflict):
        jm.kill_job(job_id)


def test_never_overcommits_an_agent(jm: JobManager) -> None:
    register(jm, cpu=1, memory=1024)
    job_id = submit(jm, service_job(desired=6, container={"resources": {"cpu": 0.25, "memoryMB": 300}}))
    jm.schedule_once()
    placed = [t for t in active(jm, job_id) if t["status"]["state"] == "Launched"]
    assert len(placed) == 3  # memory binds first: 3 x 300 <= 1024 < 4 x 300
    pending = next(t for t in active(jm, job_id) if t["status"]["state"] == "Accepted")
    assert pending["taskContext"]["task.pendingReason"] == "insufficient memory on 1 agent"


def test_runtime_limit_kills_the_task(jm: JobManager, clock: Clock) -> None:
    session = register(jm)
    job_id = submit(jm, batch_job(batch={"runtimeLimitSec": 10}))
    (tid,) = run_all(jm, session, job_id)
    clock.advance(10_001)
    report(jm, session)  # heartbeat, so the agent is not lost meanwhile
    jm.tick()
    assert jm.get_task(tid)["status"]["state"] == "KillInitiated"
    report(jm, session, upd(tid, "Finished", "killed"))
    assert jm.get_task(tid)["status"]["reasonCode"] == "runtimeLimitExceeded"


def disconnect_after(seconds: int | str, **overrides: Any) -> dict[str, Any]:
    """Container attributes of a job that waits `seconds` for a silent agent (master/core/fault_policy.py)."""
    return {"attributes": {"titusParameter.disconnectedTimeoutSec": str(seconds), **overrides}}


def test_silent_agent_tasks_are_disconnected_then_replaced_after_the_jobs_timeout(
        jm: JobManager, clock: Clock) -> None:
    s1 = register(jm, "a1")
    job_id = submit(jm, service_job(desired=1, container=disconnect_after(60)))
    (tid,) = run_all(jm, s1, job_id)
    s2 = register(jm, "a2")
    clock.advance(4_000)
    report(jm, s2, agent_id="a2")
    clock.advance(2_000)
    jm.tick()
    status = jm.get_task(tid)["status"]
    assert (status["state"], status["reasonCode"]) == ("Disconnected", "disconnected")
    assert "no heartbeat from agent a1" in status["reasonMessage"]
    assert jm.schedule_once() == 0  # it keeps its slot: nothing replaces it yet
    assert [t["id"] for t in active(jm, job_id)] == [tid]
    with pytest.raises(StaleSession):
        report(jm, s1, upd(tid, "Started"))
    clock.advance(59_000)
    report(jm, s2, agent_id="a2")
    jm.tick()
    assert jm.get_task(tid)["status"]["state"] == "Disconnected"  # 59 s of a 60 s timeout
    clock.advance(1_000)
    report(jm, s2, agent_id="a2")
    jm.tick()
    status = jm.get_task(tid)["status"]
    assert (status["state"], status["reasonCode"]) == ("Finished", "lost")
    assert "stayed disconnected for 60 s" in status["reasonMessage"]
    jm.schedule_once()
    (replacement,) = active(jm, job_id)
    assert replacement["taskContext"]["agent.id"] == "a2"
    desired = jm.desired_set("a1", register(jm, "a1", running=[tid]), -1, 0)
    # The replaced task is not wanted: the returning agent is told to kill it at once.
    assert desired["tasks"] == [{"taskId": tid, "kill": True, "killGraceMs": 0, "stale": True}]


def test_agent_back_before_the_timeout_gets_its_tasks_back_in_their_real_state(
        jm: JobManager, clock: Clock) -> None:
    s1 = register(jm, "a1")
    service = submit(jm, service_job(desired=2))
    batch = submit(jm, batch_job(size=2, command=["/bin/sleep", "60"]))
    kept, gone = run_all(jm, s1, service)
    ended, running = run_all(jm, s1, batch)
    clock.advance(5_001)
    jm.tick()
    assert {jm.get_task(t)["status"]["state"] for t in (kept, gone, ended, running)} == {"Disconnected"}
    clock.advance(120_000)  # well inside the service default (5 min); batch waits for ever
    jm.tick()
    assert jm.schedule_once() == 0
    back = register(jm, "a1", running=[kept, running], exited=[ended])
    assert jm.get_task(kept)["status"]["state"] == "Started"
    assert jm.get_task(running)["status"]["state"] == "Started"
    assert jm.get_task(ended)["status"]["state"] == "Started"  # its real end is in the next report
    lost = jm.get_task(gone)["status"]
    assert (lost["state"], lost["reasonCode"]) == ("Finished", "lost")
    assert lost["reasonMessage"] == "the agent reconnected without it"
    report(jm, back, upd(ended, "Finished", "failed", 3))
    finished = jm.get_task(ended)
    assert (finished["status"]["reasonCode"], finished["taskContext"]["task.exitCode"]) == ("failed", "3")
    # Only the task it came back without is replaced.
    assert len([t for t in active(jm, service) if t["status"]["state"] == "Accepted"]) == 1


def test_batch_tasks_wait_for_their_agent_for_ever_by_default(jm: JobManager, clock: Clock) -> None:
    s1 = register(jm, "a1")
    job_id = submit(jm, batch_job(size=1, command=["/bin/sleep", "60"]))
    (tid,) = run_all(jm, s1, job_id)
    clock.advance(5_001)
    jm.tick()
    clock.advance(7 * 24 * 3600 * 1000)
    jm.tick()
    assert jm.get_task(tid)["status"]["state"] == "Disconnected"
    assert [t["id"] for t in active(jm, job_id)] == [tid]


def test_a_self_fencing_job_is_replaced_as_soon_as_its_agent_is_lost(jm: JobManager, clock: Clock) -> None:
    s1 = register(jm, "a1")
    job_id = submit(jm, service_job(
        desired=1, container={"attributes": {"titusParameter.agent.selfFence": "true"}}))
    (tid,) = run_all(jm, s1, job_id)
    assert jm.desired_set("a1", s1, -1, 0)["tasks"][0]["selfFence"] is True
    clock.advance(5_001)
    jm.tick()
    status = jm.get_task(tid)["status"]
    assert (status["state"], status["reasonCode"]) == ("Finished", "lost")
    assert status["reasonMessage"].endswith("the job self-fences")
    assert [t["status"]["state"] for t in active(jm, job_id)] == ["Accepted"]


def test_killing_a_disconnected_task_ends_it_and_its_agent_kills_it_on_return(
        jm: JobManager, clock: Clock) -> None:
    s1 = register(jm, "a1")
    job_id = submit(jm, batch_job(size=1, command=["/bin/sleep", "60"]))
    (tid,) = run_all(jm, s1, job_id)
    clock.advance(5_001)
    jm.tick()
    jm.kill_task(tid, shrink=False)
    status = jm.get_task(tid)["status"]
    assert (status["state"], status["reasonCode"]) == ("Finished", "killed")
    assert "is disconnected" in status["reasonMessage"]
    back = register(jm, "a1", running=[tid])
    assert jm.desired_set("a1", back, -1, 0)["tasks"] == [
        {"taskId": tid, "kill": True, "killGraceMs": 0, "stale": True}]


@pytest.mark.parametrize("value", ["-1", "soon", "1.5", str(31 * 24 * 3600)])
def test_a_bad_disconnected_timeout_is_refused_at_the_edge(jm: JobManager, value: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"titusParameter\.disconnectedTimeoutSec"):
        JobDescriptor.model_validate(service_job(container=disconnect_after(value)))


def test_master_restart_keeps_jobs_and_adopts_running_tasks(db: Path, clock: Clock) -> None:
    first = JobManager(SqliteJobStore(db, "NORMAL"), clock)
    first.start(init_cluster=True)
    session = register(first)
    job_id = submit(first, service_job(desired=2))
    ids = run_all(first, session, job_id)
    first.store.close()

    second = JobManager(SqliteJobStore(db, "NORMAL"), clock)
    second.start()
    assert second.epoch == first.epoch + 1
    new_session = register(second, running=ids)
    assert states_of(second, job_id) == ["Started", "Started"]
    assert sorted(t["taskId"] for t in second.desired_set("a1", new_session, -1, 0)["tasks"]) == sorted(ids)
    second.store.close()


def test_deposed_leader_is_fenced(db: Path, clock: Clock) -> None:
    old = JobManager(SqliteJobStore(db, "NORMAL"), clock)
    old.start(init_cluster=True)
    new = JobManager(SqliteJobStore(db, "NORMAL"), clock)
    new.start()
    with pytest.raises(NotLeader):
        submit(old, batch_job())
    assert old.fenced
    assert submit(new, batch_job())
    old.store.close()
    new.store.close()


def test_idempotency_key_returns_the_same_job(jm: JobManager) -> None:
    d = JobDescriptor.model_validate(batch_job())
    first, created = jm.submit(d, "key-1")
    again, created_again = jm.submit(d, "key-1")
    assert (again, created, created_again) == (first, True, False)
    assert jm.submit(d, "key-2")[0] != first


def test_an_idempotency_key_reused_with_another_body_is_a_conflict_naming_it(jm: JobManager) -> None:
    first, _ = jm.submit(JobDescriptor.model_validate(batch_job(size=1)), "key-1")
    with pytest.raises(Conflict, match=r"Idempotency-Key 'key-1' was already used for job .* different body"):
        jm.submit(JobDescriptor.model_validate(batch_job(size=2)), "key-1")
    assert jm.submit(JobDescriptor.model_validate(batch_job(size=1)), "key-1") == (first, False)


class GatedStore:
    """Our JobStore with every write held until the test opens the gate (or fails it)."""

    def __init__(self, inner: SqliteJobStore) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.fail = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def begin_apply(self, epoch: int, writes: Any) -> Any:
        pending = self.inner.begin_apply(epoch, writes)
        store = self

        class Held:
            def wait(self) -> None:
                store.gate.wait(10)
                pending.wait()
                if store.fail:
                    raise StoreError("disk full (test)")

        return Held()


@pytest.mark.parametrize("fails", [False, True], ids=["durable", "write-fails"])
def test_a_retry_with_the_same_key_waits_for_the_first_submissions_durability(
        db: Path, clock: Clock, fails: bool) -> None:
    store = GatedStore(SqliteJobStore(db, "NORMAL"))
    jm = JobManager(store, clock)  # type: ignore[arg-type]
    store.gate.set()
    jm.start(init_cluster=True)
    store.gate.clear()
    store.fail = fails
    d = JobDescriptor.model_validate(batch_job())
    results: dict[str, Any] = {}

    def call(name: str) -> None:
        try:
            results[name] = jm.submit(d, "key-1")
        except NotLeader as exc:
            results[name] = exc

    first = threading.Thread(target=call, args=("first",))
    first.start()
    wait_for(lambda: "key-1" in jm._idempotent_in_flight, what="the first write queued")
    retry = threading.Thread(target=call, args=("retry",))
    retry.start()
    retry.join(0.5)
    assert retry.is_alive() and results == {}, "the retry answered before the first job was durable"
    store.gate.set()
    first.join(10)
    retry.join(10)
    if fails:
        assert isinstance(results["first"], NotLeader) and isinstance(results["retry"], NotLeader)
    else:
        job_id = results["first"][0]
        assert results == {"first": (job_id, True), "retry": (job_id, False)}
    store.inner.close()


def register_in(jm: JobManager, agent_id: str, tier: str, group: str, cpu: float = 4) -> int:
    reply = jm.register_agent(
        AgentRegistration.model_validate(
            {
                "id": agent_id,
                "resources": {"cpu": cpu, "memoryMB": 4096, "diskMB": 10_000, "networkMbps": 1000},
                "attributes": {"tier": tier, "instanceGroup": group, "zone": "z1", "instanceType": "m5"},
            }
        )
    )
    return int(reply["sessionEpoch"])


def critical_group(jm: JobManager, name: str = "payments") -> None:
    from master.api.models import ApplicationSla

    jm.put_capacity_group(
        ApplicationSla.model_validate(
            {
                "appName": name,
                "tier": "Critical",
                "instanceCount": 2,
                "resourceDimension": {"cpu": 1, "memoryMB": 512, "diskMB": 100, "networkMbps": 10},
            }
        ),
        create=True,
    )


def test_critical_jobs_land_on_critical_agents_only(jm: JobManager) -> None:
    register_in(jm, "flex-1", "flex", "asg-flex")
    register_in(jm, "crit-1", "critical", "asg-critical")
    critical_group(jm)
    crit = submit(jm, service_job(desired=3, capacityGroup="payments"))
    flex = submit(jm, service_job(desired=3))
    jm.schedule_once()
    assert {t["taskContext"]["agent.id"] for t in active(jm, crit)} == {"crit-1"}
    assert {t["taskContext"]["agent.id"] for t in active(jm, flex)} == {"flex-1"}
    assert all(t["taskContext"]["task.tier"] == "critical" for t in active(jm, crit))


def test_phased_out_group_gets_no_new_tasks_and_says_so(jm: JobManager) -> None:
    register_in(jm, "a1", "flex", "asg-old")
    jm.set_instance_group_lifecycle("asg-old", "PhasedOut", "upgrade")
    job_id = submit(jm, service_job(desired=1))
    assert jm.schedule_once() == 0
    (task,) = active(jm, job_id)
    assert task["taskContext"]["task.pendingReason"] == "no Active agents in the flex tier; 1 agent PhasedOut"
    register_in(jm, "a2", "flex", "asg-new")
    jm.schedule_once()
    assert jm.get_task(task["id"])["taskContext"]["agent.id"] == "a2"


def test_drain_moves_service_tasks_without_dropping_below_desired(jm: JobManager) -> None:
    s1 = register_in(jm, "a1", "flex", "g1")
    # One task of two may be away; no rate limit (the default budget allows one move per hour here).
    budget = {"availabilityPercentageLimit": {"percentageOfHealthyContainers": 50}, "rateUnlimited": {}}
    job_id = submit(jm, service_job(desired=2, disruptionBudget=budget))
    old = run_all(jm, s1, job_id)
    s2 = register_in(jm, "a2", "flex", "g2")
    jm.set_agent_lifecycle("a1", "PhasedOut", "maintenance")
    for _ in range(2):
        report(jm, s1)
        report(jm, s2, agent_id="a2")
        jm.tick()
        jm.schedule_once()
        (new,) = [t for t in active(jm, job_id) if t["status"]["state"] == "Launched"]
        assert new["taskContext"]["agent.id"] == "a2"
        assert len([t for t in active(jm, job_id) if t["status"]["state"] == "Started"]) == 2  # never below
        report(jm, s2, upd(new["id"], "Started"), agent_id="a2")
        (stopping,) = [t for t in active(jm, job_id) if t["status"]["state"] == "KillInitiated"]
        assert stopping["id"] in old
        report(jm, s1, upd(stopping["id"], "Finished", "killed"))
    final = active(jm, job_id)
    assert [t["taskContext"]["agent.id"] for t in final] == ["a2", "a2"]
    assert {t["status"]["state"] for t in final} == {"Started"}


def test_capacity_groups_persist_and_guard_deletion(db: Path, clock: Clock) -> None:
    first = JobManager(SqliteJobStore(db, "NORMAL"), clock)
    first.start(init_cluster=True)
    critical_group(first)
    submit(first, service_job(desired=0, capacityGroup="payments"))
    with pytest.raises(Conflict):
        first.delete_capacity_group("payments")
    with pytest.raises(Conflict):
        first.delete_capacity_group("DEFAULT")
    first.store.close()
    second = JobManager(SqliteJobStore(db, "NORMAL"), clock)
    second.start()
    assert second.get_capacity_group("payments")["tier"] == "critical"
    assert {g["appName"] for g in second.list_capacity_groups()} == {"DEFAULT", "payments"}
    second.store.close()


# ===================================================================== faults: fencing and reconciliation
def report_full(jm: JobManager, session: int, agent_id: str = "a1", running: list[str] | None = None,
                unavailable: str = "", *updates: dict[str, Any]) -> None:
    jm.agent_report(agent_id, AgentStatusReport.model_validate(
        {"sessionEpoch": session, "updates": list(updates), "runningTaskIds": running or [],
         "unavailableReason": unavailable}))


def agent_view(jm: JobManager, agent_id: str) -> dict[str, Any]:
    return next(a for a in jm.agent_views() if a["id"] == agent_id)


def test_returning_lost_agent_kills_stale_tasks_before_it_gets_work(jm: JobManager, clock: Clock) -> None:
    s1 = register(jm, "a1")
    job_id = submit(jm, service_job(desired=1, container=disconnect_after(0)))
    (old,) = run_all(jm, s1, job_id)
    clock.advance(5_001)
    jm.tick()  # a1 is silent and the job waits 0 s: the task is replaced, with no agent to run it
    assert jm.get_task(old)["status"]["reasonCode"] == "lost"
    back = register(jm, "a1", running=[old])
    assert agent_view(jm, "a1")["staleTaskIds"] == [old]
    assert agent_view(jm, "a1")["acceptingWork"] is False
    assert jm.schedule_once() == 0  # fenced: the replacement must not join the stale task on a1
    assert [t["taskId"] for t in jm.desired_set("a1", back, -1, 0)["tasks"] if t["kill"]] == [old]
    report_full(jm, back, "a1", [old])  # still running: still fenced
    assert jm.schedule_once() == 0
    report_full(jm, back, "a1", [])  # gone
    assert agent_view(jm, "a1")["acceptingWork"] is True
    assert jm.schedule_once() == 1
    assert [t["taskId"] for t in jm.desired_set("a1", back, -1, 0)["tasks"]] != [old]


def test_tasks_that_exited_while_the_agent_was_down_keep_their_real_status(jm: JobManager) -> None:
    s1 = register(jm)
    job_id = submit(jm, batch_job(size=2, command=["/bin/sleep", "5"]))
    done, running = run_all(jm, s1, job_id)
    s2 = register(jm, running=[running], exited=[done])
    assert jm.get_task(done)["status"]["state"] == "Started"  # not lost: its end is on its way
    report(jm, s2, upd(done, "Finished", "failed", 3))
    finished = jm.get_task(done)
    assert (finished["status"]["reasonCode"], finished["taskContext"]["task.exitCode"]) == ("failed", "3")
    assert jm.get_task(running)["status"]["state"] == "Started"


def test_agent_restart_without_a_task_marks_it_lost_and_replaces_it(jm: JobManager) -> None:
    s1 = register(jm)
    job_id = submit(jm, service_job(desired=2))
    kept, gone = run_all(jm, s1, job_id)
    register(jm, running=[kept])
    assert jm.get_task(gone)["status"]["reasonCode"] == "lost"
    assert jm.get_task(kept)["status"]["state"] == "Started"
    (replacement,) = [t for t in active(jm, job_id) if t["id"] != kept]
    assert replacement["taskContext"]["task.resubmitOf"] == gone


def test_a_platform_end_is_retried_without_using_the_retry_budget(jm: JobManager) -> None:
    s1 = register(jm)
    job_id = submit(jm, batch_job(size=1, command=["/bin/sleep", "5"]))  # retries: 0
    (gone,) = run_all(jm, s1, job_id)
    s2 = register(jm, running=[])  # the agent came back without it
    assert jm.get_task(gone)["status"]["reasonCode"] == "lost"
    (retry,) = run_all(jm, s2, job_id)
    context = jm.get_task(retry)["taskContext"]
    assert context["task.resubmitOf"] == gone
    assert (context["task.resubmitNumber"], context["task.systemResubmitNumber"]) == ("1", "1")
    report(jm, s2, upd(retry, "Finished", "transientSystemError"))  # e.g. the agent shut down
    (third,) = run_all(jm, s2, job_id)
    assert jm.get_task(third)["taskContext"]["task.systemResubmitNumber"] == "2"
    report(jm, s2, upd(third, "Finished", "failed", 1))  # the task's own failure: the budget (0) decides
    job = jm.get_job(job_id)
    assert (job["status"]["state"], job["status"]["reasonCode"]) == ("Finished", "failed")


def test_only_a_users_kill_is_killed(jm: JobManager) -> None:
    s1 = register(jm)
    job_id = submit(jm, batch_job(size=2, command=["/bin/sleep", "5"]))
    mine, theirs = run_all(jm, s1, job_id)
    jm.kill_task(mine, shrink=False)
    report(jm, s1, upd(mine, "Finished", "killed"))
    report(jm, s1, upd(theirs, "Finished", "transientSystemError"))
    assert jm.get_task(mine)["status"]["reasonCode"] == "killed"
    assert jm.get_task(theirs)["status"]["reasonCode"] == "transientSystemError"
    assert len([t for t in active(jm, job_id) if t["status"]["state"] == "Accepted"]) == 1  # only theirs


def test_registration_adopts_a_task_whose_started_report_was_lost(jm: JobManager) -> None:
    session = register(jm)
    job_id = submit(jm, service_job(desired=1))
    jm.schedule_once()
    (tid,) = [t["id"] for t in active(jm, job_id)]
    report(jm, session, upd(tid, "StartInitiated"))
    register(jm, running=[tid])
    assert jm.get_task(tid)["status"]["state"] == "Started"


def test_agent_that_never_returns_after_a_master_restart_is_disconnected_then_lost(
        db: Path, clock: Clock) -> None:
    first = JobManager(SqliteJobStore(db, "NORMAL"), clock, Settings(heartbeat_timeout_ms=5_000))
    first.start(init_cluster=True)
    s = register(first, "a1")
    job_id = submit(first, service_job(desired=1, container=disconnect_after(30)))
    (tid,) = run_all(first, s, job_id)
    first.store.close()

    second = JobManager(SqliteJobStore(db, "NORMAL"), clock, Settings(heartbeat_timeout_ms=5_000))
    second.start()
    assert agent_view(second, "a1")["state"] == "AwaitingRegistration"
    with pytest.raises(StaleSession):
        second.desired_set("a1", 0, -1, 0)  # a placeholder has no session to speak with
    register(second, "other")
    clock.advance(4_000)
    second.tick()
    assert second.get_task(tid)["status"]["state"] == "Started"  # it still has time to register
    clock.advance(1_001)
    other = register(second, "other")
    report(second, other, agent_id="other")
    second.tick()
    assert second.get_task(tid)["status"]["state"] == "Disconnected"
    second.store.close()
    # The Disconnected state and its clock survive another restart.
    third = JobManager(SqliteJobStore(db, "NORMAL"), clock, Settings(heartbeat_timeout_ms=5_000))
    third.start()
    second = third
    assert second.get_task(tid)["status"]["state"] == "Disconnected"
    clock.advance(30_000)
    report(second, register(second, "other"), agent_id="other")
    second.tick()
    assert second.get_task(tid)["status"]["reasonCode"] == "lost"
    second.schedule_once()
    (replacement,) = active(second, job_id)
    assert replacement["taskContext"]["agent.id"] == "other"
    second.store.close()


def test_agent_short_of_memory_gets_no_work_and_says_why(jm: JobManager) -> None:
    short = register(jm, "short")
    report_full(jm, short, "short", [], "host memory available 100 MB < 512 MB")
    view = agent_view(jm, "short")
    assert view["acceptingWork"] is False
    assert view["unavailableReason"] == "host memory available 100 MB < 512 MB"
    job_id = submit(jm, service_job(desired=1))
    assert jm.schedule_once() == 0
    assert active(jm, job_id)[0]["status"]["state"] == "Accepted"
    report_full(jm, short, "short", [], "")
    assert jm.schedule_once() == 1


@pytest.mark.parametrize("retry_on_limit", [True, False], ids=["retryOnRuntimeLimit", "no-retry"])
def test_runtime_limit_retries_per_policy_with_its_delay(jm: JobManager, clock: Clock,
                                                         retry_on_limit: bool) -> None:
    session = register(jm)
    spec = batch_job(batch={"runtimeLimitSec": 5, "retryOnRuntimeLimit": retry_on_limit})
    spec["batch"]["retryPolicy"] = {"delayed": {"initialDelayMs": 2000, "delayMs": 2000, "retries": 1}}
    job_id = submit(jm, spec)
    (first,) = run_all(jm, session, job_id)
    clock.advance(5_001)
    report(jm, session)
    jm.tick()
    report(jm, session, upd(first, "Finished", "killed", -15))
    assert jm.get_task(first)["status"]["reasonCode"] == "runtimeLimitExceeded"
    if not retry_on_limit:
        assert jm.get_job(job_id)["status"]["state"] == "Finished"
        return
    (retry,) = active(jm, job_id)
    assert retry["taskContext"]["task.resubmitOf"] == first
    clock.advance(1_999)
    jm.tick()
    assert jm.schedule_once() == 0
    clock.advance(1)
    jm.tick()  # timers hand due retries to the scheduler
    (second,) = run_all(jm, session, job_id)
    clock.advance(5_001)
    report(jm, session)
    jm.tick()
    report(jm, session, upd(second, "Finished", "killed", -15))
    job = jm.get_job(job_id)
    assert (job["status"]["state"], job["status"]["reasonCode"]) == ("Finished", "failed")


def test_stuck_start_is_killed_with_a_reason_and_retried(jm: JobManager, clock: Clock) -> None:
    session = register(jm)
    job_id = submit(jm, batch_job(batch={"retryPolicy": {"immediate": {"retries": 1}}}))
    jm.schedule_once()
    (tid,) = [t["id"] for t in active(jm, job_id)]
    report(jm, session, upd(tid, "StartInitiated"))
    clock.advance(60_001)
    report(jm, session)
    jm.tick()
    task = jm.get_task(tid)
    assert (task["status"]["state"], task["status"]["reasonCode"]) == ("KillInitiated", "stuckInState")
    report(jm, session, upd(tid, "Finished", "killed"))
    assert jm.get_task(tid)["status"]["reasonCode"] == "stuckInState"
    (retry,) = active(jm, job_id)
    assert retry["taskContext"]["task.resubmitOf"] == tid


def test_stuck_launch_ends_with_a_reason(jm: JobManager, clock: Clock) -> None:
    session = register(jm)
    job_id = submit(jm, batch_job())
    jm.schedule_once()
    (tid,) = [t["id"] for t in active(jm, job_id)]
    clock.advance(60_001)
    report(jm, session)  # the agent is alive, it just never picked the task up
    jm.tick()
    task = jm.get_task(tid)
    assert (task["status"]["state"], task["status"]["reasonCode"]) == ("Finished", "stuckInState")


def test_finished_jobs_and_tasks_stay_listed_after_a_restart(db: Path, clock: Clock) -> None:
    first = JobManager(SqliteJobStore(db, "NORMAL"), clock)
    first.start(init_cluster=True)
    s = register(first)
    done = submit(first, batch_job(size=2, command=["/bin/true"]))
    for tid in run_all(first, s, done):
        report(first, s, upd(tid, "Finished", "normal", 0))
    service = submit(first, service_job(desired=1))
    (old,) = run_all(first, s, service)
    report(first, s, upd(old, "Finished", "failed", 1))  # a finished task of a job still running
    assert first.get_job(done)["status"]["state"] == "Finished"
    first.store.close()

    second = JobManager(SqliteJobStore(db, "NORMAL"), clock)
    second.start()
    assert second.archive_loaded.wait(10)
    assert done in {j.id for j in second.list_jobs(include_finished=True)}
    assert done not in {j.id for j in second.list_jobs(include_finished=False)}
    finished = second.list_tasks(None, {"Finished"})
    assert {t["jobId"] for t in finished if t["jobId"] == done} == {done}
    assert len([t for t in finished if t["jobId"] == done]) == 2
    assert old in {t["id"] for t in second.list_tasks({service}, {"Finished"})}
    assert {t["status"]["state"] for t in second.list_tasks({service}, None)} <= {"Accepted"}
    second.store.close()
