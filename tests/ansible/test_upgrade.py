"""upgrade.yml rolls a new build onto the cluster site.yml brought up (see conftest.py) while a service job
runs: the master first, then the agents one at a time, each drained through the API before its upgrade.

Checked: every host ends on the new release; the job keeps its desired count of Started tasks at every
sample a client takes during the agent phase, and that client sees no failed request after one retry; at
the end the job runs its desired count again, on agents that are Active. The master phase is not covered by
the availability check: the test cluster has one master (leader election across masters is not part of
this build yet), so its restart is a short outage by construction.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.ansible.harness import API_TOKEN, REPO, Cluster, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(1800)]

# Runs inside the master's container: polls the job and its Started tasks every 200 ms until /tmp/stop-poll
# appears, retrying a failed request once, and prints what it saw as JSON.
POLLER = r"""
import json, os, time, urllib.request
job, token = os.environ["JOB"], os.environ["TOKEN"]
base = "http://127.0.0.1:7001"
def get(path):
    req = urllib.request.Request(base + path, headers={"Authorization": "Bearer " + token})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)
def get_retry(path):
    try:
        return get(path), False
    except Exception:
        time.sleep(0.5)
        return get(path), True
requests = failed = retried = 0
min_started = None
errors = []
while not os.path.exists("/tmp/stop-poll"):
    try:
        body, was_retried = get_retry("/api/v3/tasks?jobIds=" + job + "&taskStates=Started")
        requests += 1
        retried += was_retried
        started = len(body["items"])
        min_started = started if min_started is None else min(min_started, started)
    except Exception as exc:
        failed += 1
        errors.append(repr(exc))
    time.sleep(0.2)
print(json.dumps({"requests": requests, "failed": failed, "retried": retried, "min_started": min_started,
                  "errors": errors[:5]}))
"""


def api(cluster: Cluster, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    hosts, _, _ = cluster
    command = ["curl", "-sf", "-X", method, "-H", f"Authorization: Bearer {API_TOKEN}",
               "-H", "Content-Type: application/json", f"http://127.0.0.1:7001{path}"]
    if body is not None:
        command += ["-d", json.dumps(body)]
    return json.loads(hosts.exec("master1", command).stdout)


def started_tasks(cluster: Cluster, job_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = api(cluster, "GET", f"/api/v3/tasks?jobIds={job_id}&taskStates=Started")[
        "items"
    ]
    return items


def runs_started(cluster: Cluster, job_id: str, count: int) -> bool:
    """Whether the job has `count` Started tasks; False while the master is restarting."""
    try:
        return len(started_tasks(cluster, job_id)) == count
    except AssertionError:
        return False


def release_of(cluster: Cluster, host: str) -> str:
    hosts, _, _ = cluster
    return Path(hosts.exec(host, ["readlink", "/opt/titus/current"]).stdout.strip()).name


def new_build(workdir: Path) -> Path:
    """A copy of the product source that differs from the installed one, as the next release would."""
    source = workdir / "next-build"
    if source.exists():  # an earlier build of this run, already copied into the hosts: nothing writes into it
        shutil.rmtree(source)
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for package in ("master", "agent", "titus", "capacity", "shared"):
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    with (source / "titus" / "__init__.py").open("a") as f:
        f.write(f"\n# build {time.time_ns()}\n")
    return source


def service_job(desired: int) -> dict[str, Any]:
    return {
        "owner": {"teamEmail": "team@example.com"},
        "applicationName": "upgrade-probe",
        "container": {
            "resources": {"cpu": 0.25, "memoryMB": 32, "diskMB": 100, "networkMbps": 10},
            # The test hosts' agents use the process runtime (no runc inside a systemd container), which
            # runs only the host "image" and refuses any other with a reason.
            "image": {"name": "host", "tag": "latest"},
            "command": ["/bin/sleep", "3600"],
        },
        "service": {"capacity": {"min": 0, "desired": desired, "max": 10},
                    "retryPolicy": {"immediate": {"retries": 10}}},
        # One task may be away at a time, at any rate: the drains of both agents fit in the playbook's wait
        # (the default budget would allow one move per hour for a job this small).
        "disruptionBudget": {"availabilityPercentageLimit": {"percentageOfHealthyContainers": 50},
                             "rateUnlimited": {}},
    }


def test_rolling_upgrade_keeps_the_service_running(cluster: Cluster) -> None:
    hosts, inventory, _ = cluster
    before = {host: release_of(cluster, host) for host in ("master1", "agent1", "agent2")}
    job_id = api(cluster, "POST", "/api/v3/jobs", service_job(desired=2))["id"]
    wait_for(lambda: runs_started(cluster, job_id, 2), 120, "the service job's 2 tasks to start")

    source = new_build(hosts.workdir)
    new_source = ["-e", f"common_titus_source_dir={source}", "-e", f"common_titus_build_dir={source}/.build"]

    hosts.playbook("upgrade.yml", inventory, "--limit", "titus_master", *new_source,
                   log_name="upgrade-masters.log")
    master_release = release_of(cluster, "master1")
    assert master_release != before["master1"]
    wait_for(lambda: runs_started(cluster, job_id, 2), 120, "the job's 2 tasks after the master restart")

    hosts.exec("master1", ["rm", "-f", "/tmp/stop-poll"])
    poller = subprocess.Popen(
        ["docker", "exec", "-e", f"JOB={job_id}", "-e", f"TOKEN={API_TOKEN}", hosts.name("master1"),
         "python3", "-c", POLLER],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        recap = hosts.playbook("upgrade.yml", inventory, "--limit", "titus_agent,titus_master", *new_source,
                               "-e", "titus_upgrade_agent_batch=1", log_name="upgrade-agents.log")
    finally:
        hosts.exec("master1", ["touch", "/tmp/stop-poll"])
        out, err = poller.communicate(timeout=60)
    seen = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"error": err}

    assert {release_of(cluster, h) for h in ("master1", "agent1", "agent2")} == {master_release}
    assert seen["requests"] > 20, seen
    assert seen["failed"] == 0, seen
    assert seen["min_started"] >= 2, seen
    assert "phase the agent out" in recap.output.lower()

    tasks = started_tasks(cluster, job_id)
    assert len(tasks) == 2
    agents = {a["id"]: a for a in api(cluster, "GET", "/api/v3/agent/instances")["items"]}
    for name in ("agent1", "agent2"):
        assert agents[hosts.name(name)]["lifecycle"] == "Active"
        assert agents[hosts.name(name)]["state"] == "Registered"
