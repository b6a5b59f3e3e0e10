"""A PhasedOut instance group with a budgeted service job drains at exactly the rate its budget allows,
against a real master (real HTTP, SQLite) and two real agents (`titus agent` processes, OCI runtime,
busybox tasks).

The master runs on a clock the test holds still and moves by hand, so the rate interval passes only when the
test says so: between two moves the test sees the quota at 0 with the budget's reason and the group still
holding the tasks not yet moved, and the replacements' creation times, read from the master, are exactly one
interval apart. A batch task on the drained group is waited for: it ends normally where it ran.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from master.server import MasterConfig, MasterServer
from tests.conftest import AGENT_TOKEN, API_TOKEN, batch_job, free_port, service_job, wait_for

pytestmark = pytest.mark.e2e

INTERVAL_MS = 60_000
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


class HeldClock:
    """The master's clock (ms): still until `advance`. Heartbeats, deadlines and rates all read it."""

    def __init__(self) -> None:
        self._now = START_MS
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            return self._now

    def advance(self, ms: int) -> None:
        with self._lock:
            self._now += ms


@dataclass
class Cluster:
    url: str
    clock: HeldClock
    server: MasterServer

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        r = requests.request(
            method, self.url + path, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30, **kwargs
        )
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()

    def tasks(self, job_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.api("GET", "/api/v3/tasks", params={"jobIds": job_id})["items"]
        return items


def start_agent(url: str, data_dir: Path, agent_id: str, group: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TITUS_MASTER_URL": url,
        "TITUS_AGENT_TOKEN": AGENT_TOKEN,
        "TITUS_AGENT_ID": agent_id,
        "TITUS_DATA_DIR": str(data_dir / agent_id),
        "TITUS_TIER": "flex",
        "TITUS_INSTANCE_GROUP": group,
        "TITUS_AGENT_CPU": "2",
        "TITUS_AGENT_MEMORY_MB": "1024",
        "TITUS_KILL_TASKS_ON_EXIT": "true",
        "TITUS_LOG_LEVEL": "WARNING",
    }
    env.pop("TITUS_API_TOKEN", None)
    return subprocess.Popen([sys.executable, "-m", "titus.cli", "agent"], env=env)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    clock = HeldClock()
    config = MasterConfig(
            init_cluster=True,
        port=free_port(),
        data_dir=tmp_path / "master",
        api_token=API_TOKEN,
        agent_token=AGENT_TOKEN,
        sqlite_synchronous="NORMAL",
        heartbeat_timeout_ms=10 * INTERVAL_MS,  # the held clock moves only by whole intervals
    )
    server = MasterServer(config, clock=clock)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.port}"
    wait_for(lambda: _healthy(url), what="master /healthz")
    yield Cluster(url, clock, server)
    server.shutdown()
    thread.join(timeout=10)


def _healthy(url: str) -> bool:
    try:
        return requests.get(url + "/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def on(tasks: list[dict[str, Any]], agent_id: str, state: str = "Started") -> list[dict[str, Any]]:
    return [
        t for t in tasks if t["taskContext"].get("agent.id") == agent_id and t["status"]["state"] == state
    ]


def agent_ids(cluster: Cluster) -> list[str]:
    return [a["id"] for a in cluster.api("GET", "/api/v3/agent/instances")["items"]]


def created_ms(task: dict[str, Any]) -> int:
    return min(int(s["timestamp"]) for s in [*task["statusHistory"], task["status"]])


def test_phased_out_group_drains_at_exactly_the_budgeted_rate(cluster: Cluster, tmp_path: Path) -> None:
    agents = [start_agent(cluster.url, tmp_path, "drain-old", "asg-old")]
    try:
        wait_for(lambda: len(agent_ids(cluster)) == 1, 30, what="the old agent")
        budget = {
            "availabilityPercentageLimit": {"percentageOfHealthyContainers": 50},
            "ratePerInterval": {"intervalMs": INTERVAL_MS, "limitPerInterval": 1},
        }
        spec = service_job(desired=3, disruptionBudget=budget)
        job_id = cluster.api("POST", "/api/v3/jobs", json=spec)["id"]
        batch_id = cluster.api(
            "POST", "/api/v3/jobs", json=batch_job(size=1, command=["/bin/sh", "-c", "sleep 5"])
        )["id"]
        wait_for(lambda: len(on(cluster.tasks(job_id), "drain-old")) == 3, 120, what="3 tasks Started")
        (batch_task,) = wait_for(lambda: on(cluster.tasks(batch_id), "drain-old"), 60, what="the batch task")
        originals = {t["id"] for t in cluster.tasks(job_id)}

        agents.append(start_agent(cluster.url, tmp_path, "drain-new", "asg-new"))
        wait_for(lambda: len(agent_ids(cluster)) == 2, 30, what="the new agent")
        before = cluster.api("GET", f"/api/v3/eviction/quotas/jobs/{job_id}")
        assert before["quota"] == 1  # 3 healthy, 2 must stay: one may go
        phase_out = {"lifecycleState": "PhasedOut", "detail": "upgrade"}
        cluster.api("PUT", "/api/v3/agent/instanceGroups/asg-old/lifecycle", json=phase_out)

        for moved in (1, 2, 3):

            def step(moved: int = moved) -> list[dict[str, Any]] | None:
                tasks = cluster.tasks(job_id)
                done = len(on(tasks, "drain-new")) == moved and len(on(tasks, "drain-old")) == 3 - moved
                return tasks if done and len(tasks) == 3 else None

            tasks = wait_for(step, 120, 0.1, what=f"move {moved} to complete")
            assert len([t for t in tasks if t["status"]["state"] == "Started"]) == 3
            if moved < 3:
                # The clock is held: the rate's one slot per interval is used, so nothing more may move, and
                # the quota says why. The group still holds the tasks not yet moved.
                quota = cluster.api("GET", f"/api/v3/eviction/quotas/jobs/{job_id}")
                assert quota["quota"] == 0
                assert quota["message"] == (
                    "ratePerInterval: exceeded the number of tasks that can be evicted per 60s "
                    "(limit=1, used=1)"
                )
                assert len(on(cluster.tasks(job_id), "drain-old")) == 3 - moved
                cluster.clock.advance(INTERVAL_MS)

        final = cluster.tasks(job_id)
        assert {t["taskContext"]["agent.id"] for t in final} == {"drain-new"}
        assert not originals & {t["id"] for t in final}
        starts = sorted(created_ms(t) for t in final)
        assert [b - a for a, b in itertools.pairwise(starts)] == [INTERVAL_MS, INTERVAL_MS]
        finished = cluster.api("GET", "/api/v3/tasks", params={"jobIds": job_id, "taskStates": "Finished"})
        drained = [t for t in finished["items"] if t["id"] in originals]
        assert len(drained) == 3
        for t in drained:
            kills = [s for s in t["statusHistory"] if s["state"] == "KillInitiated"]
            assert [s["reasonMessage"].startswith("drained: replaced by ") for s in kills] == [True], t

        # The batch task was never moved nor killed: it ends normally on the drained agent.
        done = wait_for(
            lambda: cluster.api("GET", f"/api/v3/jobs/{batch_id}")["status"]["state"] == "Finished" or None,
            60,
            what="the batch job to finish",
        )
        assert done
        (ended,) = cluster.api("GET", "/api/v3/tasks", params={"jobIds": batch_id, "taskStates": "Finished"})[
            "items"
        ]
        assert ended["id"] == batch_task["id"] and ended["status"]["reasonCode"] == "normal"
        assert ended["taskContext"]["agent.id"] == "drain-old"
    finally:
        for agent in agents:
            agent.terminate()
        for agent in agents:
            agent.wait(timeout=30)
