"""`titus master` on the Cassandra store, configured only through TITUS_* variables, survives a kill -9.

Real processes, real HTTP, a real Cassandra node (the `cassandra_server` fixture of tests/fixtures).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from master.store.cassandra import SCHEMA_VERSION, CassandraJobStore, CassandraSettings
from tests.conftest import batch_job, free_port, wait_for
from tests.fixtures.servers import CassandraEndpoint

TOKEN = "cassandra-e2e-api-token"


class Master:
    """A `titus master` subprocess; `kill()` is a crash (SIGKILL), `start()` brings it back on its port."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.url = f"http://127.0.0.1:{env['TITUS_PORT']}"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "titus.cli", "master"], env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT)
        wait_for(self._healthy, timeout=60, what=f"master /healthz (log: {self.log})")

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"master exited with {self.proc.returncode}:\n{self.log.read_text()}")
        try:
            return requests.get(self.url + "/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {TOKEN}", **kwargs.pop("headers", {})}
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kwargs)


@pytest.fixture
def master_env(cassandra_server: CassandraEndpoint, tmp_path: Path) -> Iterator[dict[str, str]]:
    keyspace = f"titus_e2e_{uuid.uuid4().hex[:10]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TITUS_")}
    env.update({
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "TITUS_STORE": "cassandra",
        "TITUS_CASSANDRA_HOSTS": cassandra_server.host,
        "TITUS_CASSANDRA_PORT": str(cassandra_server.port),
        "TITUS_CASSANDRA_KEYSPACE": keyspace,
        "TITUS_CASSANDRA_REPLICATION_STRATEGY": "SimpleStrategy",
        "TITUS_CASSANDRA_REPLICATION_FACTOR": "1",
        "TITUS_PORT": str(free_port()),
        "TITUS_DATA_DIR": str(tmp_path / "data"),
        "TITUS_API_TOKEN": TOKEN,
        "TITUS_AGENT_TOKEN": "cassandra-e2e-agent-token",
        "TITUS_INIT_CLUSTER": "true",  # a fresh keyspace (master/cluster_identity.py)
    })
    yield env
    admin = CassandraJobStore(CassandraSettings(hosts=(cassandra_server.host,), port=cassandra_server.port,
                                                keyspace=keyspace))
    admin.drop_keyspace()
    admin.close()


def migrate(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "titus.cli", "db", "migrate"], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def test_db_migrate_then_master_keeps_acknowledged_jobs_across_a_crash(master_env: dict[str, str],
                                                                     tmp_path: Path) -> None:
    for _ in range(2):  # creating and re-running are both fine
        result = migrate(master_env)
        assert result.returncode == 0, result.stderr
        assert f"at version {SCHEMA_VERSION}" in result.stdout

    master = Master(master_env, tmp_path / "master.log")
    master.start()
    try:
        submitted = []
        for i in range(5):
            r = master.api("POST", "/api/v3/jobs", json=batch_job(size=2, applicationName=f"app{i}"))
            assert r.status_code == 202, r.text
            submitted.append(r.json()["id"])
        keyed = master.api("POST", "/api/v3/jobs", json=batch_job(), headers={"Idempotency-Key": "once"})
        assert keyed.status_code == 202, keyed.text
        killed = submitted.pop()
        assert master.api("DELETE", f"/api/v3/jobs/{killed}").status_code < 300

        def task_ids(job_id: str) -> set[str]:
            items = master.api("GET", "/api/v3/tasks", params={"jobIds": job_id}).json()["items"]
            return {t["id"] for t in items}

        before = {job_id: task_ids(job_id) for job_id in submitted}
        master.kill()
        master.start()

        active = {j["id"] for j in master.api("GET", "/api/v3/jobs").json()["items"]}
        assert active >= {*submitted, keyed.json()["id"]}
        assert killed not in active
        for job_id in submitted:
            assert len(before[job_id]) == 2 and task_ids(job_id) == before[job_id]
        finished = master.api("GET", f"/api/v3/jobs/{killed}").json()
        assert finished["status"]["state"] == "Finished"
        replay = master.api("POST", "/api/v3/jobs", json=batch_job(), headers={"Idempotency-Key": "once"})
        assert replay.json()["id"] == keyed.json()["id"]
        assert replay.headers.get("Idempotent-Replayed") == "true"
    finally:
        master.kill()
