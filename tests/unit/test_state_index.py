"""The task index, the snapshot cache and the event log against what a full scan says.

A seeded random walk drives a real JobManager (SQLite store, hand-driven clock) through submissions,
placements, agent reports, kills, scale changes, lost agents and re-registrations. After every step the
incrementally maintained indexes must equal a recomputation from all tasks, the scheduler's cached
snapshot must equal one built from scratch, and the domain events must be numbered without gaps.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from master.api.models import CapacityUpdate
from master.core import states
from master.events import TERM_SHIFT, Event
from master.job_manager import Conflict, JobManager, Settings, StaleSession
from master.scheduler.model import Resources
from master.snapshot import SnapshotBuilder, job_resources
from master.store.sqlite import SqliteJobStore
from tests.conftest import batch_job, service_job
from tests.unit.test_job_manager import Clock, register, report, submit, upd


@pytest.fixture
def jm(tmp_path: Path) -> Iterator[JobManager]:
    clock = Clock()
    m = JobManager(SqliteJobStore(tmp_path / "t.db", "OFF"), clock, Settings(heartbeat_timeout_ms=5_000))
    m.start(init_cluster=True)
    yield m
    m.store.close()


def _scan(jm: JobManager) -> dict[str, object]:
    """Everything the index keeps, computed the slow way."""
    by_agent: dict[str, set[str]] = {}
    used: dict[str, Resources] = {}
    zone: dict[str, dict[str, int]] = {}
    for t in jm.tasks.values():
        if t.agent_id is None or t.state not in states.TASK_ON_AGENT:
            continue
        by_agent.setdefault(t.agent_id, set()).add(t.id)
        r = job_resources(jm.jobs[t.job_id])
        used[t.agent_id] = used.get(t.agent_id, Resources()).add(r)
        z = jm.agents[t.agent_id].attributes.get("zone", "")
        zone.setdefault(t.job_id, {}).setdefault(z, 0)
        zone[t.job_id][z] += 1
    by_state = {s: {t.id for t in jm.tasks.values() if t.state == s} for s in states.TASK_ACTIVE}
    return {"by_agent": by_agent, "used": used, "zone": zone, "by_state": by_state}


def _indexed(jm: JobManager) -> dict[str, object]:
    ix = jm.index
    return {
        "by_agent": {a: set(ts) for a, ts in ix.by_agent.items()},
        "used": {a: ix.used_by(a) for a in ix.by_agent},
        "zone": ix.zone_counts,
        "by_state": ix.by_state,
    }


def _approx(x: object) -> object:
    if isinstance(x, dict):
        return {k: _approx(v) for k, v in x.items()}
    if isinstance(x, Resources):
        return (round(x.cpu, 6), x.memory_mb, x.disk_mb, x.network_mbps, x.gpu)
    return x


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_indexes_equal_a_full_scan_through_a_random_walk(jm: JobManager, seed: int) -> None:
    rng = random.Random(seed)
    clock: Clock = jm.clock  # type: ignore[assignment]
    seen: list[Event] = []
    jm.events.subscribe(seen.append)
    sessions = {f"a{i}": register(jm, f"a{i}", cpu=4, memory=4096) for i in range(3)}
    jobs: list[str] = []
    for step in range(150):
        action = rng.choice(["batch", "service", "place", "start", "finish", "kill", "scale", "lose", "tick"])
        try:
            if action == "batch":
                jobs.append(submit(jm, batch_job(size=rng.randint(1, 3))))
            elif action == "service":
                jobs.append(submit(jm, service_job(desired=rng.randint(1, 3))))
            elif action == "place":
                jm.schedule_once()
            elif action in ("start", "finish") and jm.index.by_agent:
                agent_id = rng.choice(sorted(jm.index.by_agent))
                task = rng.choice(sorted(jm.index.by_agent[agent_id]))
                state = states.STARTED if action == "start" else states.FINISHED
                reason = rng.choice(["normal", "failed"])
                report(jm, sessions[agent_id], upd(task, state, reason, 0), agent_id=agent_id)
            elif action == "kill" and jm.tasks:
                jm.kill_task(rng.choice(sorted(jm.tasks)), shrink=False)
            elif action == "scale" and jobs:
                jm.update_capacity(rng.choice(jobs), CapacityUpdate(desired=rng.randint(0, 4)))
            elif action == "lose":
                agent_id = rng.choice(sorted(sessions))
                clock.advance(6_000)
                for other in sessions:
                    if other != agent_id:
                        report(jm, sessions[other], agent_id=other)
                jm.tick()
                sessions[agent_id] = register(jm, agent_id, cpu=4, memory=4096)
            elif action == "tick":
                clock.advance(rng.choice([100, 1_000, 61_000]))
                for agent_id, session in sessions.items():
                    report(jm, session, agent_id=agent_id)
                jm.tick()
        except (Conflict, ValueError, StaleSession):
            pass
        assert _approx(_indexed(jm)) == _approx(_scan(jm)), f"step {step}: {action}"
        pending = sorted((jm.tasks[i] for i in jm.index.by_state[states.ACCEPTED]), key=lambda t: t.id)
        cached = jm._schedule_request(pending, clock())
        fresh_builder = jm.snapshots
        jm.snapshots = SnapshotBuilder()
        fresh = jm._schedule_request(pending, clock())
        jm.snapshots = fresh_builder
        assert cached == fresh, f"step {step}: cached snapshot differs from a fresh one"
    base = jm.epoch << TERM_SHIFT  # this leader term's numbers
    assert [e.seq for e in seen] == list(range(base + 1, base + len(seen) + 1))
    assert jm.events.last_seq == base + len(seen) > base
    by_task: dict[str, list[int]] = {}
    for e in seen:
        by_task.setdefault(e.entity_id, []).append(e.version)
    assert all(v == sorted(v) for v in by_task.values()), "an entity's events arrive in version order"


def test_event_log_readers_resume_from_their_cursor(jm: JobManager) -> None:
    job_id = submit(jm, batch_job(size=2))
    events = jm.events.read_since(jm.epoch << TERM_SHIFT)
    assert [(e.kind, e.state) for e in events] == [("job", "Accepted"), ("task", "Accepted"),
                                                   ("task", "Accepted")]
    assert events[0].entity_id == job_id
    assert jm.events.read_since(events[-1].seq) == []
    jm.kill_job(job_id)
    later = jm.events.read_since(events[-1].seq)
    assert later and all(e.seq > events[-1].seq for e in later)
    assert later[-1].kind == "job" and later[-1].state == "Finished" and later[-1].archived


def test_events_are_published_in_ticket_order_whoever_commits_first(jm: JobManager) -> None:
    from master.events import Change

    log = jm.events
    got: list[str] = []
    log.subscribe(lambda e: got.append(e.entity_id))
    first, second = log.reserve(), log.reserve()
    log.publish(second, [Change("task", "b", 1, "Accepted", False)])
    assert got == []  # held back until the earlier batch is published
    log.publish(first, [Change("task", "a", 1, "Accepted", False)])
    assert got == ["a", "b"]
    third = log.reserve()
    log.publish(third, [])  # a refused batch releases its place
    fourth = log.reserve()
    log.publish(fourth, [Change("task", "c", 1, "Accepted", False)])
    assert got == ["a", "b", "c"]


def test_only_changed_agents_are_rebuilt(jm: JobManager) -> None:
    for i in range(20):
        register(jm, f"a{i}", cpu=4, memory=4096)
    submit(jm, batch_job(size=1))
    jm.schedule_once()  # first pass builds every agent
    assert jm.snapshots.rebuilt_agents == 20
    submit(jm, batch_job(size=1))
    jm.schedule_once()  # one task landed on one agent in the pass before: only that one is rebuilt
    assert jm.snapshots.rebuilt_agents == 1


def test_a_plan_made_on_the_snapshot_is_checked_when_applied(
    jm: JobManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Placement runs outside the lock; if the agent went away meanwhile, the task stays pending."""
    import master.scheduling as job_manager

    register(jm, "a1")
    job_id = submit(jm, batch_job(size=2))
    real_place = job_manager.place

    def place_then_lose_agent(request: object) -> object:
        reply = real_place(request)  # type: ignore[arg-type]
        with jm.lock:  # what a concurrent heartbeat timeout would do while the engine ran
            jm.agents["a1"].lost = True
        return reply

    monkeypatch.setattr(job_manager, "place", place_then_lose_agent)
    assert jm.schedule_once() == 0
    tasks = jm.list_tasks({job_id}, None)
    assert [t["status"]["state"] for t in tasks] == ["Accepted", "Accepted"]
    assert jm.index.by_agent == {} and jm.index.used == {}
    assert jm.pending_new == 2  # tried again in the next pass


def test_unplaceable_shapes_skip_the_engine_until_capacity_changes(
    jm: JobManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    import master.scheduling as job_manager

    calls: list[int] = []
    real_place = job_manager.place

    def counting(request: object) -> object:
        calls.append(len(request.tasks))  # type: ignore[attr-defined]
        return real_place(request)  # type: ignore[arg-type]

    monkeypatch.setattr(job_manager, "place", counting)
    register(jm, "small", cpu=1, memory=1024)
    big = batch_job(container={"resources": {"cpu": 8}})
    first = submit(jm, big)
    jm.schedule_once()
    assert calls == [1]
    reason = jm.list_tasks({first}, None)[0]["taskContext"]["task.pendingReason"]
    assert reason == "insufficient cpu on 1 agent"
    second = submit(jm, big)
    jm.schedule_once()
    assert calls == [1], "same shape, nothing changed: no engine pass"
    assert jm.list_tasks({second}, None)[0]["taskContext"]["task.pendingReason"] == reason
    fits = submit(jm, batch_job())  # another shape still goes to the engine, and is placed
    jm.schedule_once()
    assert calls == [1, 1]
    assert jm.list_tasks({fits}, None)[0]["status"]["state"] == "Launched"
    register(jm, "large", cpu=16, memory=8192)  # capacity changed: every pending task is tried again
    jm.schedule_once()
    assert calls == [1, 1, 2]
    assert {t["status"]["state"] for t in jm.list_tasks({first, second}, None)} == {"Launched"}
