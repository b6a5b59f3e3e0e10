"""The job event stream (master/api/observe.py) against a real JobManager: what a subscriber that fell out
of the event log, or never had a place in it, gets instead of silence."""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import pytest

from master.api.models import CapacityUpdate, JobDescriptor
from master.api.observe import Frame, JobStream
from master.events import TERM_SHIFT, EventLog
from master.job_manager import JobManager, Settings
from master.store.sqlite import SqliteJobStore
from tests.conftest import service_job


@pytest.fixture
def jm(tmp_path: Path) -> Iterator[JobManager]:
    clock = iter(range(1_000_000, 10**9, 10)).__next__
    m = JobManager(SqliteJobStore(tmp_path / "titus.db", "NORMAL"), clock, Settings())
    m.events = EventLog(clock, capacity=4)  # a tiny log, so falling behind it is cheap to arrange
    m.start(init_cluster=True)
    yield m
    m.store.close()


def _kinds(frames: list[Frame]) -> list[str]:
    return [next(iter(f.message.keys() - {"timestamp"})) for f in frames]


def _everything(job_id: str, descriptor: dict[str, object]) -> bool:
    return True


def test_a_subscriber_behind_the_log_gets_a_fresh_snapshot(jm: JobManager) -> None:
    job_id, _ = jm.submit(JobDescriptor.model_validate(service_job(desired=2)))
    for n in range(5):
        jm.update_job_attributes(job_id, {"n": str(n)})
    assert jm.events.last_seq > (jm.epoch << TERM_SHIFT) + 5  # the first events are out of the 4-event log
    frames = list(islice(JobStream(jm, _everything, since=1, keep_alive_ms=100), 4))
    assert _kinds(frames) == ["jobUpdate", "taskUpdate", "taskUpdate", "snapshotEnd"]
    assert frames[0].message["jobUpdate"]["job"]["jobDescriptor"]["attributes"] == {"n": "4"}
    assert frames[-1].seq == jm.events.last_seq


def test_a_subscriber_within_the_log_gets_only_what_followed(jm: JobManager) -> None:
    job_id, _ = jm.submit(JobDescriptor.model_validate(service_job(desired=0)))
    since = jm.events.last_seq
    jm.update_job_attributes(job_id, {"a": "1"})
    (frame,) = islice(JobStream(jm, _everything, since=since, keep_alive_ms=100), 1)
    assert frame.seq == since + 1
    assert frame.message["jobUpdate"]["job"]["jobDescriptor"]["attributes"] == {"a": "1"}
    (idle,) = islice(JobStream(jm, _everything, since=jm.events.last_seq, keep_alive_ms=100), 1)
    assert "keepAliveResponse" in idle.message and idle.seq is None


def test_a_subscriber_that_falls_behind_while_streaming_resynchronises(jm: JobManager) -> None:
    job_id, _ = jm.submit(JobDescriptor.model_validate(service_job(desired=0)))
    stream = iter(JobStream(jm, _everything, since=jm.events.last_seq, keep_alive_ms=100))
    jm.update_job_attributes(job_id, {"a": "1"})
    assert next(stream).message["jobUpdate"]["job"]["jobDescriptor"]["attributes"] == {"a": "1"}
    for n in range(6):  # more than the log keeps, before the subscriber reads again
        jm.update_job_attributes(job_id, {"a": str(n)})
    again = list(islice(stream, 2))
    assert _kinds(again) == ["jobUpdate", "snapshotEnd"]
    assert again[0].message["jobUpdate"]["job"]["jobDescriptor"]["attributes"] == {"a": "5"}


def test_a_sequence_from_the_previous_leader_term_gets_a_fresh_snapshot(tmp_path: Path) -> None:
    """Sequences are per leader term: a client resuming after a failover or restart with the old master's
    sequence must not be handed the new master's events under numbers it takes for ones it saw."""
    clock = iter(range(1_000_000, 10**9, 10)).__next__
    old = JobManager(SqliteJobStore(tmp_path / "titus.db", "NORMAL"), clock, Settings())
    old.start(init_cluster=True)
    job_id, _ = old.submit(JobDescriptor.model_validate(service_job(desired=0)))
    old.update_job_attributes(job_id, {"seen": "yes"})
    since = old.events.last_seq
    old.store.close()
    new = JobManager(SqliteJobStore(tmp_path / "titus.db", "NORMAL"), clock, Settings())
    new.start()
    try:
        for n in range(10):  # more changes in the new term than the old one had numbered
            new.update_job_attributes(job_id, {"seen": "yes", "n": str(n)})
        frames = list(islice(JobStream(new, _everything, since=since, keep_alive_ms=100), 2))
        assert _kinds(frames) == ["jobUpdate", "snapshotEnd"], frames
        assert frames[0].message["jobUpdate"]["job"]["jobDescriptor"]["attributes"]["n"] == "9"
    finally:
        new.store.close()


def test_a_burst_of_changes_goes_out_in_one_write_with_each_final_state_once(tmp_path: Path) -> None:
    """Scaling a service creates its tasks in one commit: the stream writes their frames as one chunk
    (one socket write, not one per change), in sequence order, each entity's committed state once."""
    clock = iter(range(1_000_000, 10**9, 10)).__next__
    m = JobManager(SqliteJobStore(tmp_path / "titus.db", "NORMAL"), clock, Settings())
    m.start(init_cluster=True)
    try:
        job_id, _ = m.submit(JobDescriptor.model_validate(service_job(desired=0)))
        since = m.events.last_seq
        m.update_capacity(job_id, CapacityUpdate(min=0, desired=12, max=12))
        stream = JobStream(m, _everything, since=since, keep_alive_ms=100)
        chunk = next(stream.chunks())
        blocks = [block.split("\n") for block in chunk.decode().split("\n\n") if block]
        ids = [int(head.removeprefix("id: ")) for head, _ in blocks]
        messages = [json.loads(data.removeprefix("data: ")) for _, data in blocks]
        assert ids == sorted(ids) and ids[0] == since + 1 and ids[-1] == m.events.last_seq
        tasks = [msg["taskUpdate"]["task"] for msg in messages if "taskUpdate" in msg]
        assert len(tasks) == 12 and len({task["id"] for task in tasks}) == 12
        assert sum("jobUpdate" in msg for msg in messages) == 1
    finally:
        m.store.close()
