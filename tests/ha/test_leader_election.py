"""Leader election among real `titus master` processes: one leader, forwarding standbys, takeover, fencing."""

from __future__ import annotations

import signal
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from master.server import LOST_LEADERSHIP
from shared.ha_harness import API_TOKEN, HaCluster, MasterProc, batch_job, wait_for

pytestmark = pytest.mark.e2e

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


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


def _submit_to(m: MasterProc, key: str, app: str = "ha-batch") -> requests.Response:
    return requests.post(m.url + "/api/v3/jobs", json=batch_job(cpu=50, app=app),
                         headers={**AUTH, "Idempotency-Key": key}, timeout=30)


def _epoch(m: MasterProc) -> int:
    h = m.health()
    assert h is not None and h["role"] == "leader", h
    return int(h["epoch"])


def test_one_leader_and_the_standbys_forward_reads_and_writes(cluster: HaCluster) -> None:
    leader = cluster.leader()
    standbys = [m for m in cluster.masters if m is not leader]
    for m in standbys:
        # A standby learns the leader's URL once the leader is ready to serve.
        h = wait_for(lambda m=m: (h := m.health()) and h["leader"] == leader.url and h, 10,
                     "standby's leader URL")
        assert h["role"] == "standby"

    r = _submit_to(standbys[0], "forwarded-write")
    assert r.status_code == 202, r.text
    assert r.headers["X-Titus-Master-Role"] == "leader"  # answered by the leader, through the standby
    job_id = r.json()["id"]

    got = requests.get(standbys[1].url + f"/api/v3/jobs/{job_id}", headers=AUTH, timeout=10)
    assert got.status_code == 200 and got.json()["id"] == job_id
    direct = requests.get(leader.url + f"/api/v3/jobs/{job_id}", headers=AUTH, timeout=10)
    assert direct.json() == got.json()

    # The job event stream is relayed as it comes, not read whole (it never ends).
    with requests.get(standbys[0].url + "/api/v3/jobs/observe", headers=AUTH, stream=True,
                      params={"keepAliveMs": "200"}, timeout=10) as stream:
        assert stream.status_code == 200 and stream.headers["Content-Type"].startswith("text/event-stream")
        seen: list[str] = []
        for line in stream.iter_lines(decode_unicode=True):
            seen.append(line)
            if "snapshotEnd" in line:
                break
        assert any(job_id in line for line in seen), seen

    # The standby authenticates like the leader, and never forwards a request twice.
    assert requests.get(standbys[0].url + "/api/v3/jobs", timeout=10).status_code == 401
    bounced = requests.get(standbys[0].url + "/api/v3/jobs",
                           headers={**AUTH, "X-Titus-Forwarded-By": standbys[1].url}, timeout=10)
    assert bounced.status_code == 503 and bounced.headers["Retry-After"] == "1"


def test_kill9_of_the_leader_a_standby_takes_over_and_writes_succeed(cluster: HaCluster) -> None:
    old = cluster.leader()
    old_epoch = _epoch(old)
    before = cluster.submit(batch_job(cpu=50), "before-kill")
    assert before is not None

    cluster.signal_master(old, signal.SIGKILL)
    new = cluster.leader(timeout=30, exclude=old)
    assert new is not old
    assert _epoch(new) > old_epoch

    after = cluster.submit(batch_job(cpu=50), "after-kill")
    assert after is not None
    for job_id in (before, after):
        r = cluster.api("GET", f"/api/v3/jobs/{job_id}", attempts=20)
        assert r is not None and r.status_code == 200, job_id
    # The killed master came back (supervisor) as a standby that forwards to the new leader.
    wait_for(lambda: (h := old.health()) and h["role"] == "standby" and h["leader"] == new.url, 30,
             "the restarted master to follow the new leader")


def test_sigterm_hands_leadership_over_without_waiting_for_the_session_timeout(
        tmp_path: Path, zookeeper_server: str) -> None:
    # ZooKeeper's longest session with tickTime 500 ms is 10 s: a new leader well inside that window can only
    # come from the old one closing its session (an expiry would need the full 10 s).
    cluster = HaCluster(tmp_path, zookeeper_server, masters=2, session_timeout_s=10.0)
    try:
        cluster.start(supervise=False)
        old = cluster.leader()
        old_epoch = _epoch(old)
        acked = cluster.submit(batch_job(cpu=50), "before-handoff")
        cluster.signal_master(old, signal.SIGTERM)
        assert cluster.wait_exit(old) == 0  # a graceful stop is not a failure
        other = next(m for m in cluster.masters if m is not old)
        wait_for(lambda: (h := other.health()) and h["role"] == "leader", 7, "the standby to take over")
        assert _epoch(other) > old_epoch
        r = requests.get(other.url + f"/api/v3/jobs/{acked}", headers=AUTH, timeout=10)
        assert r.status_code == 200
    finally:
        cluster.stop()


def _marker_jobs_in_store(store: Any, keys: list[str], app: str) -> list[str]:
    found = [k for k in keys if store.job_for_idempotency_key(k) is not None]
    jobs = store.load_active("job") + store.list_archived("job", 100_000)
    found += [s.record["id"] for s in jobs if s.record["jobDescriptor"]["applicationName"] == app]
    return found


def test_a_leader_paused_past_its_session_makes_no_write_after_it_resumes(cluster: HaCluster) -> None:
    cluster._supervise.clear()  # watch the paused master's own exit code
    old = cluster.leader()
    old_epoch = _epoch(old)
    assert old.proc is not None
    cluster.signal_master(old, signal.SIGSTOP)
    try:
        new = cluster.leader(timeout=30, exclude=old)
        new_epoch = _epoch(new)
        assert new_epoch > old_epoch
        during = []
        for i in range(5):
            r = _submit_to(new, f"during-pause-{i}")
            assert r.status_code == 202, r.text
            during.append(r.json()["id"])

        # Requests wait in the paused master's accept queue; it handles them as soon as it runs again, before
        # or after its ZooKeeper client notices the session is gone. Either way none may be written.
        app = f"stale-{uuid.uuid4().hex[:8]}"
        keys = [f"stale-write-{i}" for i in range(8)]
        answers: list[int | str] = []

        def attempt(key: str) -> None:
            try:
                answers.append(_submit_to(old, key, app).status_code)
            except requests.RequestException as exc:
                answers.append(type(exc).__name__)

        threads = [threading.Thread(target=attempt, args=(k,)) for k in keys]
        for t in threads:
            t.start()
    finally:
        cluster.signal_master(old, signal.SIGCONT)
    for t in threads:
        t.join(timeout=60)
    assert cluster.wait_exit(old) == LOST_LEADERSHIP
    assert len(answers) == len(keys)
    assert not [a for a in answers if isinstance(a, int) and 200 <= a < 300], answers

    store = cluster.open_store()
    try:
        assert _marker_jobs_in_store(store, keys, app) == []
        for job_id in during:  # the new leader's acknowledged writes are intact
            assert store.get("job", job_id) is not None
    finally:
        store.close()
    # The new leader is still the leader of the same term, and its writes still succeed.
    assert _epoch(new) == new_epoch
    r = requests.post(new.url + "/api/v3/jobs", json=batch_job(cpu=50), headers=AUTH, timeout=10)
    assert r.status_code == 202, r.text
