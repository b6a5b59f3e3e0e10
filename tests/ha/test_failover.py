"""The failover test: three masters, two agents, a steady stream of submissions, and the leader killed over
and over (kill -9 and SIGTERM). Nothing acknowledged may be lost and no task index may ever run twice at once.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.ha_harness import (
    DuplicateWatcher,
    HaCluster,
    batch_job,
    service_job,
    task_index_via_api,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KILL9_ROUNDS = 4
SIGTERM_ROUNDS = 4
SERVICE_JOBS = 3
SERVICE_DESIRED = 2
SUBMIT_INTERVAL_S = 0.25


class Submitter:
    """Submits one batch job every interval through any master; remembers what was acknowledged."""

    def __init__(self, cluster: HaCluster, interval_s: float) -> None:
        self.cluster = cluster
        self.interval_s = interval_s
        self.acked: dict[str, str] = {}  # idempotency key -> job id
        self.unacked: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.prefix = uuid.uuid4().hex[:8]

    def _run(self) -> None:
        n = 0
        next_at = time.monotonic()
        while not self.stopping.is_set():
            key = f"{self.prefix}-{n}"
            n += 1
            job_id = self.cluster.submit(batch_job(), key, deadline_s=20)
            if job_id is None:
                self.unacked.append(key)
            else:
                self.acked[key] = job_id
            next_at = max(next_at + self.interval_s, time.monotonic())  # steady rate: no catch-up burst
            self.stopping.wait(max(0.0, next_at - time.monotonic()))

    def acked_count(self) -> int:
        return len(self.acked)


def _service_state(cluster: HaCluster, job_ids: list[str]) -> dict[str, list[dict[str, Any]]] | None:
    params = {"jobIds": ",".join(job_ids), "pageSize": 1000}
    r = cluster.api("GET", "/api/v3/tasks", params=params, attempts=10)
    if r is None or r.status_code != 200:
        return None
    by_job: dict[str, list[dict[str, Any]]] = {j: [] for j in job_ids}
    for t in r.json()["items"]:
        if t["status"]["state"] == "Started":
            by_job[t["jobId"]].append(t)
    return by_job


def _all_started(cluster: HaCluster, job_ids: list[str]) -> bool:
    state = _service_state(cluster, job_ids)
    return state is not None and all(len(ts) == SERVICE_DESIRED for ts in state.values())


def _agents_registered(cluster: HaCluster) -> bool:
    r = cluster.api("GET", "/api/v3/agent/instances", attempts=10)
    return r is not None and r.status_code == 200 and sum(
        a["state"] == "Registered" for a in r.json()["items"]) == len(cluster.agents)


@pytest.fixture(params=["sqlite", "cassandra"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path, zookeeper_server: str) -> Iterator[HaCluster]:
    """Three masters sharing one SQLite file, or one Cassandra keyspace."""
    cassandra = None
    if request.param == "cassandra":
        endpoint = request.getfixturevalue("cassandra_server")
        cassandra = (endpoint.host, endpoint.port)
    c = HaCluster(tmp_path, zookeeper_server, masters=3, session_timeout_s=4.0, cassandra=cassandra)
    try:
        c.start(supervise=True)
        yield c
    finally:
        c.stop()


def test_failover_loses_no_acknowledged_job_and_never_runs_a_task_twice(cluster: HaCluster) -> None:
    suffix = uuid.uuid4().hex[:6]
    for name in ("a", "b"):
        cluster.start_agent(f"ha-{suffix}-{name}", cpu=2.0)
    wait_for(lambda: _agents_registered(cluster), 60, "both agents to register")

    services = [cluster.submit(service_job(SERVICE_DESIRED), f"svc-{suffix}-{i}")
                for i in range(SERVICE_JOBS)]
    assert all(services)
    service_ids = [s for s in services if s is not None]
    wait_for(lambda: _all_started(cluster, service_ids), 60, "the service tasks to start")

    watcher = DuplicateWatcher(cluster)
    submitter = Submitter(cluster, SUBMIT_INTERVAL_S)
    watcher.start()
    submitter.thread.start()
    signals = [signal.SIGKILL] * KILL9_ROUNDS + [signal.SIGTERM] * SIGTERM_ROUNDS
    signals = [s for pair in zip(signals[:KILL9_ROUNDS], signals[KILL9_ROUNDS:], strict=True) for s in pair]
    expected_exits: dict[int, list[int]] = {m.index: [] for m in cluster.masters}
    try:
        for sig in signals:
            leader = cluster.leader(timeout=30)
            acked_before = submitter.acked_count()
            cluster.signal_master(leader, sig)
            expected_exits[leader.index].append(-signal.SIGKILL if sig == signal.SIGKILL else 0)
            cluster.leader(timeout=30, exclude=leader)
            # Writes are accepted again, the old leader is back as a standby, and the agents have reconciled.
            wait_for(lambda n=acked_before: submitter.acked_count() > n + 2, 30,
                     "submissions to succeed again")
            wait_for(lambda m=leader: (h := m.health()) is not None and h["role"] == "standby", 30,
                     "the old leader to come back as a standby")
            wait_for(lambda: _agents_registered(cluster) and _all_started(cluster, service_ids), 60,
                     "the agents to reconcile with the new leader")
    finally:
        submitter.stopping.set()
        submitter.thread.join(timeout=60)
        watcher.stop()

    # Every acknowledged job exists (archived batch jobs included).
    missing = []
    for job_id in submitter.acked.values():
        r = cluster.api("GET", f"/api/v3/jobs/{job_id}", attempts=20)
        if r is None or r.status_code != 200:
            missing.append(job_id)
    assert missing == []
    assert len(submitter.acked) > 20  # the stream really kept going across the failovers
    # Every service job has its desired tasks Started, and they really run on the agents.
    state = _service_state(cluster, service_ids)
    assert state is not None and all(len(ts) == SERVICE_DESIRED for ts in state.values()), state
    running = set().union(*(a.running_task_ids() for a in cluster.agents))
    assert {t["id"] for ts in state.values() for t in ts} <= running
    # No task index was ever Started twice at once, by the masters' account or by the agents' cgroups.
    assert watcher.api_duplicates == []
    assert len(watcher.samples) > 50
    assert watcher.duplicates(task_index_via_api(cluster)) == []
    # Each master ended exactly as it was told to; none was deposed on its own (exit code 3).
    for m in cluster.masters:
        assert m.exits == expected_exits[m.index], (m.index, m.exits)
