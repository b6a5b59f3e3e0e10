"""`titus dev` as a real subprocess: real HTTP, a real agent process, real cgroups, the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import batch_job, free_port, service_job, wait_for
from titus.dev import dev_agent_id

pytestmark = pytest.mark.e2e

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass
class DevCluster:
    url: str
    data_dir: Path
    proc: subprocess.Popen[bytes]
    token: str
    port: int

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        # HTTPS with the cluster's own CA (titus/dev_tls.py): verified, as a client should
        kwargs.setdefault("verify", str(self.data_dir / "ca.pem"))
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kwargs)

    def submit(self, job: dict[str, Any]) -> str:
        r = self.api("POST", "/api/v3/jobs", json=job)
        assert r.status_code == 202, r.text
        return str(r.json()["id"])

    def tasks(self, job_id: str, states: str | None = None) -> list[dict[str, Any]]:
        params = {"jobIds": job_id, **({"taskStates": states} if states else {})}
        items: list[dict[str, Any]] = self.api("GET", "/api/v3/tasks", params=params).json()["items"]
        return items

    def started(self, job_id: str) -> list[dict[str, Any]]:
        return [t for t in self.tasks(job_id) if t["status"]["state"] == "Started"]

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # No URL, token or CA given: the CLI finds all three in the dev cluster's data dir.
        given = ("TITUS_URL", "TITUS_API_TOKEN", "TITUS_CA_FILE")
        env = {k: v for k, v in os.environ.items() if k not in given}
        env["TITUS_DATA_DIR"] = str(self.data_dir)
        result = subprocess.run(
            [sys.executable, "-m", "titus.cli", *args], env=env, capture_output=True, text=True, timeout=60
        )
        if check:
            assert result.returncode == 0, result.stderr
        return result


def start_dev(data_dir: Path, port: int) -> DevCluster:
    env = {**os.environ, "TITUS_SQLITE_SYNCHRONOUS": "FULL", "TITUS_TASK_PIDS_LIMIT": "128"}
    env.pop("TITUS_API_TOKEN", None)
    env.pop("TITUS_AGENT_TOKEN", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "titus.cli",
            "dev",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--agent-memory-mb",
            "2048",
            "--agent-cpu",
            "2",
        ],
        env=env,
    )
    url = f"https://127.0.0.1:{port}"
    token_file = data_dir / "api-token"
    # written after the token and the certificates: the cluster's files are all there
    wait_for((data_dir / "url").exists, timeout=30, what="the url file")
    cluster = DevCluster(url, data_dir, proc, token_file.read_text().strip(), port)

    def agent_ready() -> bool:
        try:
            return any(
                a["state"] == "Registered"
                for a in cluster.api("GET", "/api/v3/agent/instances").json()["items"]
            )
        except requests.RequestException:
            return False

    wait_for(agent_ready, timeout=30, what="the local agent to register")
    return cluster


def task_cgroups(cluster: DevCluster) -> set[str]:
    base = CGROUP_ROOT / "memory" / "titus" / dev_agent_id(cluster.data_dir)
    return {p.name for p in base.iterdir() if p.is_dir()} if base.exists() else set()


def stop_dev(cluster: DevCluster, sig: int = signal.SIGINT) -> None:
    if cluster.proc.poll() is None:
        cluster.proc.send_signal(sig)
        cluster.proc.wait(timeout=40)


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[DevCluster]:
    cluster = start_dev(tmp_path / "titus", free_port())
    yield cluster
    stop_dev(cluster)


def test_batch_job_of_three_finishes_normally(dev: DevCluster) -> None:
    job_id = dev.submit(
        batch_job(size=3, command=["/bin/sh", "-c", "echo out-$TITUS_TASK_ID; echo oops >&2; "
                                   "echo $TITUS_JOB_ID $TITUS_TASK_INDEX $TITUS_TASK_ORIGINAL_ID "
                                   "$TITUS_TASK_RESUBMIT_NUMBER $TITUS_IMAGE_TAG $TITUS_NUM_MEM >&2"])
    )
    wait_for(
        lambda: dev.api("GET", f"/api/v3/jobs/{job_id}").json()["status"]["state"] == "Finished",
        what="the batch job to finish",
    )
    finished = dev.tasks(job_id, "Finished")
    assert len(finished) == 3
    assert {t["status"]["reasonCode"] for t in finished} == {"normal"}
    assert {t["taskContext"]["task.exitCode"] for t in finished} == {"0"}
    history = [s["state"] for s in finished[0]["statusHistory"]] + [finished[0]["status"]["state"]]
    assert history == ["Accepted", "Launched", "StartInitiated", "Started", "Finished"]
    logs = dev.api("GET", f"/api/v3/tasks/{finished[0]['id']}/logs").text
    assert logs == f"out-{finished[0]['id']}\n"
    indexes = set()
    for task in finished:
        err = dev.api("GET", f"/api/v3/tasks/{task['id']}/logs", params={"stream": "stderr"}).text
        first, identity = err.splitlines()
        assert first == "oops"
        job, index, original, resubmits, tag, mem = identity.split()
        assert (job, original, resubmits, tag, mem) == (job_id, task["id"], "0", "latest", "64")
        indexes.add(index)
    assert indexes == {"0", "1", "2"}  # the Titus task identity reaches the task's environment


def test_service_job_lifecycle(dev: DevCluster) -> None:
    job_id = dev.submit(service_job(desired=2))
    first = wait_for(lambda: len(dev.started(job_id)) == 2 and dev.started(job_id), what="2 Started tasks")
    victim = first[0]["id"]
    assert dev.api("DELETE", f"/api/v3/tasks/{victim}").status_code == 200

    def replaced() -> list[dict[str, Any]] | None:
        started = dev.started(job_id)
        ids = {t["id"] for t in started}
        return started if len(started) == 2 and victim not in ids else None

    now_running = wait_for(replaced, what="the killed task to be replaced")
    replacement = next(t for t in now_running if t["id"] != first[1]["id"])
    assert replacement["taskContext"]["task.resubmitOf"] == victim
    assert dev.api("GET", f"/api/v3/tasks/{victim}").json()["status"]["reasonCode"] == "killed"

    r = dev.api("PUT", f"/api/v3/jobs/{job_id}/capacityAttributes", json={"desired": 3})
    assert r.status_code == 200, r.text
    wait_for(lambda: len(dev.started(job_id)) == 3, what="3 Started tasks after scaling up")
    assert len(task_cgroups(dev) & {t["id"] for t in dev.started(job_id)}) == 3

    assert dev.api("DELETE", f"/api/v3/jobs/{job_id}").status_code == 200
    wait_for(
        lambda: dev.api("GET", f"/api/v3/jobs/{job_id}").json()["status"]["state"] == "Finished",
        what="the killed job to finish",
    )
    assert dev.tasks(job_id) == []
    assert {t["status"]["reasonCode"] for t in dev.tasks(job_id, "Finished")} == {"killed"}


def test_cli_drives_the_same_api(dev: DevCluster, tmp_path: Path) -> None:
    spec = tmp_path / "web.json"
    spec.write_text(json.dumps(service_job(desired=1)))
    job_id = json.loads(dev.cli("job", "submit", str(spec), "--json").stdout)["id"]
    wait_for(lambda: len(dev.started(job_id)) == 1, what="1 Started task")
    assert job_id in dev.cli("job", "list").stdout
    assert "Started" in dev.cli("job", "get", job_id).stdout
    scaled = json.loads(dev.cli("job", "scale", job_id, "--desired", "2", "--json").stdout)
    assert scaled["jobDescriptor"]["service"]["capacity"]["desired"] == 2
    wait_for(lambda: len(dev.started(job_id)) == 2, what="2 Started tasks")
    tasks = json.loads(dev.cli("task", "list", "--job", job_id, "--json").stdout)
    assert len(tasks) == 2
    dev.cli("task", "kill", tasks[0]["id"], "--shrink")
    wait_for(lambda: [t["id"] for t in dev.started(job_id)] == [tasks[1]["id"]], what="shrink to 1")
    dev.cli("job", "kill", job_id)
    wait_for(
        lambda: dev.api("GET", f"/api/v3/jobs/{job_id}").json()["status"]["state"] == "Finished",
        what="job finished",
    )

    bad = dev.cli("job", "get", "no-such-job", check=False)
    assert bad.returncode == 3 and "not found" in bad.stderr  # docs/cli.md: 3 = not found
    spec.write_text('{"applicationName": 5}')
    invalid = dev.cli("job", "submit", str(spec), check=False)
    assert invalid.returncode == 2
    # Each broken field is named; a missing owner is not one of them (it defaults to the caller's e-mail).
    assert "applicationName" in invalid.stderr and "container" in invalid.stderr
    assert "owner" not in invalid.stderr

    echo = batch_job(command=["/bin/echo", "from-cli"])
    spec.write_text(json.dumps(echo))
    batch_id = json.loads(dev.cli("job", "submit", str(spec), "--json").stdout)["id"]
    wait_for(lambda: dev.tasks(batch_id, "Finished"), what="the echo task to finish")
    task_id = dev.tasks(batch_id, "Finished")[0]["id"]
    assert dev.cli("task", "logs", task_id).stdout == "from-cli\n"
    # The README's tour finds the finished batch's task ids with the CLI alone.
    wait_for(lambda: dev.api("GET", f"/api/v3/jobs/{batch_id}").json()["status"]["state"] == "Finished",
             what="the batch job to finish")
    shown = dev.cli("job", "get", batch_id).stdout
    assert "active tasks: 0" in shown and "finished tasks: 1" in shown
    assert any(task_id in line and "Finished" in line and "normal" in line for line in shown.splitlines())
    assert json.loads(dev.cli("job", "get", batch_id, "--json").stdout)["finishedTasks"][0]["id"] == task_id
    assert "--states Finished" in dev.cli("task", "list", "--job", batch_id).stdout
    listed = dev.cli("task", "list", "--job", batch_id, "--states", "Finished").stdout
    assert task_id in listed and "normal" in listed


def test_limits_are_enforced_by_the_kernel(dev: DevCluster) -> None:
    sleeper = dev.submit(service_job(desired=1))
    wait_for(lambda: dev.started(sleeper), what="a neighbour task")
    hog = batch_job(
        command=["/bin/sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"],
        container={"resources": {"memoryMB": 64}},
    )
    oom_job = dev.submit(hog)
    # A refused fork ends only the subshell, not the loop, so the bomb keeps pushing against the limit.
    bomb = batch_job(
        command=["/bin/sh", "-c", "while :; do (sleep 30 &) 2>/dev/null; done"],
        container={"resources": {"memoryMB": 256}},
    )
    bomb_job = dev.submit(bomb)
    (oom,) = wait_for(lambda: dev.tasks(oom_job, "Finished"), what="the memory hog to end")
    assert oom["status"]["reasonCode"] == "failed"
    assert "out of memory" in oom["status"]["reasonMessage"]

    (bomb_task,) = wait_for(lambda: [t for t in dev.started(bomb_job)
                                     if int(t["taskContext"].get("task.usage.processes", "0"))],
                            what="the fork bomb to report usage")
    pids_dir = CGROUP_ROOT / "pids" / "titus" / dev_agent_id(dev.data_dir) / bomb_task["id"]
    pids_max = int((pids_dir / "pids.max").read_text())
    assert pids_max == 128
    wait_for(lambda: int((pids_dir / "pids.events")
                         .read_text().split()[1]) > 0, what="the pids limit to refuse a fork")
    current = int((pids_dir / "pids.current").read_text())
    assert current <= pids_max
    assert dev.started(sleeper), "the neighbour must keep running"
    assert dev.api("GET", "/healthz").status_code == 200
    dev.api("DELETE", f"/api/v3/jobs/{bomb_job}")
    wait_for(lambda: dev.tasks(bomb_job, "Finished"), what="the fork bomb to be killed")


def test_busy_loop_is_held_to_its_cpu_share(dev: DevCluster) -> None:
    job_id = dev.submit(
        batch_job(command=["/bin/sh", "-c", "while :; do :; done"], container={"resources": {"cpu": 0.5}})
    )
    (task,) = wait_for(lambda: dev.started(job_id), what="the busy loop to start")
    usage_file = CGROUP_ROOT / "cpuacct" / "titus" / dev_agent_id(dev.data_dir) / task["id"] / "cpuacct.usage"
    start_ns, start_t = int(usage_file.read_text()), time.monotonic()
    time.sleep(3)
    used_s = (int(usage_file.read_text()) - start_ns) / 1e9
    elapsed = time.monotonic() - start_t
    assert used_s / elapsed <= 0.6, f"{used_s:.2f} CPU-s in {elapsed:.2f} s"
    assert used_s / elapsed > 0.05, "the loop must have run for the bound to mean anything"
    dev.api("DELETE", f"/api/v3/jobs/{job_id}")


def test_acknowledged_job_survives_kill_9(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "titus", free_port()
    cluster = start_dev(data_dir, port)
    acknowledged = [cluster.submit(service_job(desired=1)) for _ in range(3)]
    # titus dev's agent kills its tasks when titus dev dies (no orphans). That is the platform's doing,
    # not the task's: the tasks are retried although the job allows no retry, and the job stays Accepted.
    retrying = batch_job(size=2, command=["/bin/sleep", "60"])  # retries: 0
    last = cluster.api("POST", "/api/v3/jobs", json=retrying)
    assert last.status_code == 202
    os.kill(cluster.proc.pid, signal.SIGKILL)  # right after the 202: no chance to flush anything more
    cluster.proc.wait(timeout=10)
    acknowledged.append(last.json()["id"])

    restarted = start_dev(data_dir, port)
    try:
        for job_id in acknowledged:
            r = restarted.api("GET", f"/api/v3/jobs/{job_id}")
            assert r.status_code == 200, job_id
            assert r.json()["status"]["state"] == "Accepted"
        for job_id in acknowledged[:3]:
            wait_for(lambda j=job_id: len(restarted.started(j)) == 1, what="the service task running again")
        wait_for(lambda: len(restarted.started(acknowledged[3])) == 2, what="both batch tasks running")
    finally:
        stop_dev(restarted)


def test_a_dev_shutdown_is_a_platform_end_retried_without_the_retry_budget(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "titus", free_port()
    cluster = start_dev(data_dir, port)
    job_id = cluster.submit(batch_job(size=1, command=["/bin/sleep", "600"]))  # retries: 0
    (first,) = wait_for(lambda: cluster.started(job_id), what="the batch task running")
    stop_dev(cluster, signal.SIGTERM)
    restarted = start_dev(data_dir, port)
    try:
        ended = restarted.api("GET", f"/api/v3/tasks/{first['id']}").json()
        assert ended["status"]["state"] == "Finished"
        # Not "killed": the user asked for nothing. Which platform code depends on whether the agent's
        # last report reached the master before it stopped (transientSystemError) or not (lost).
        assert ended["status"]["reasonCode"] in ("transientSystemError", "lost"), ended["status"]
        (retry,) = wait_for(lambda: restarted.started(job_id), what="the retry running")
        assert retry["taskContext"]["task.resubmitOf"] == first["id"]
        assert retry["taskContext"]["task.systemResubmitNumber"] == "1"
        assert restarted.api("GET", f"/api/v3/jobs/{job_id}").json()["status"]["state"] == "Accepted"
    finally:
        stop_dev(restarted)


def test_a_crashed_agent_is_restarted_and_adopts_its_tasks_while_the_master_serves(tmp_path: Path) -> None:
    import psutil

    cluster = start_dev(tmp_path / "titus", free_port())
    try:
        job_id = cluster.submit(service_job(desired=2))
        before = wait_for(lambda: len(s := cluster.started(job_id)) == 2 and s, what="2 Started tasks")
        (agent,) = [p for p in psutil.Process(cluster.proc.pid).children()
                    if "agent" in p.cmdline()]
        killed_at = int(time.time() * 1000)
        agent.kill()  # kill -9 of the agent alone
        agent.wait(timeout=10)
        assert cluster.api("GET", "/api/v3/jobs").status_code == 200  # the master goes on serving
        wait_for(lambda: [p for p in psutil.Process(cluster.proc.pid).children()
                          if "agent" in p.cmdline() and p.pid != agent.pid], what="a new agent process")
        assert cluster.proc.poll() is None
        # The new agent adopts the same tasks: nothing is replaced, nothing ended.
        wait_for(lambda: any(a["state"] == "Registered" and a["registeredAt"] >= killed_at
                             for a in cluster.api("GET", "/api/v3/agent/instances").json()["items"]),
                 what="the new agent registered")
        after = wait_for(lambda: len(s := cluster.started(job_id)) == 2 and s, what="2 Started tasks again")
        assert {t["id"] for t in after} == {t["id"] for t in before}
        assert cluster.tasks(job_id, "Finished") == []
    finally:
        stop_dev(cluster)


def test_dev_serves_https_with_its_own_ca_and_nothing_else(dev: DevCluster) -> None:
    """Plain HTTP gets no API, the system's trust store does not know the cluster's CA, and its CA's key
    stays private; the CLI found URL, token and CA on its own (DevCluster.cli)."""
    assert (dev.data_dir / "url").read_text().strip() == dev.url
    with pytest.raises(requests.exceptions.SSLError):
        dev.api("GET", "/api/v3/jobs", verify=True)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{dev.port}/api/v3/jobs", timeout=10,
                     headers={"Authorization": f"Bearer {dev.token}"})
    assert dev.api("GET", "/api/v3/jobs").status_code == 200
    assert (dev.data_dir / "tls" / "ca-key.pem").stat().st_mode & 0o077 == 0
    assert (dev.data_dir / "tls" / "server-key.pem").stat().st_mode & 0o077 == 0
    assert json.loads(dev.cli("job", "list", "--json").stdout) == []


def test_a_dev_dir_whose_store_went_missing_is_refused_not_recreated(tmp_path: Path) -> None:
    data_dir = tmp_path / "titus"
    cluster = start_dev(data_dir, free_port())
    stop_dev(cluster)
    for name in ("titus.db", "titus.db-wal", "titus.db-shm"):
        (data_dir / "master" / name).unlink(missing_ok=True)
    env = {**os.environ}
    env.pop("TITUS_API_TOKEN", None)
    result = subprocess.run([sys.executable, "-m", "titus.cli", "dev", "--port", str(free_port()),
                             "--data-dir", str(data_dir)], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 4, result.stderr
    assert "is empty or missing" in result.stderr and str(data_dir) in result.stderr
    assert "Traceback" not in result.stderr
    assert _agents_of(tmp_path) == [], "no agent may start under a master that refused its store"


def test_ctrl_c_leaves_no_orphans(tmp_path: Path) -> None:
    cluster = start_dev(tmp_path / "titus", free_port())
    job_id = cluster.submit(service_job(desired=3))
    wait_for(lambda: len(cluster.started(job_id)) == 3, what="3 Started tasks")
    task_ids = {t["id"] for t in cluster.started(job_id)}
    assert task_ids <= task_cgroups(cluster)
    stop_dev(cluster, signal.SIGINT)
    assert cluster.proc.returncode == 0
    assert not (task_ids & task_cgroups(cluster)), "task cgroups must be removed"
    assert _agents_of(tmp_path) == [], "the agent process must be gone"


def _agents_of(tmp_path: Path) -> list[int]:
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if "agent" in (proc.info["cmdline"] or []) and str(tmp_path) in proc.environ().get(
                "TITUS_DATA_DIR", ""
            ):
                found.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found
