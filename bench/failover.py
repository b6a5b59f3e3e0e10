"""Failover benchmark: how long writes stop when the leader dies, and whether anything is lost or doubled.

    python -m bench.failover --json [--kills 10] [--graceful 5] [--store cassandra|sqlite]

Starts what it needs on 127.0.0.1 (ZooKeeper and Cassandra through scripts/services, stopping at the end only
what it started), then three `titus master` processes (ZooKeeper session timeout 4 s) and two `titus agent`
processes (process runtime) with service jobs running, and a client submitting a batch job every 0.25 s
through any master. Each round kills the leader (kill -9, then SIGTERM rounds) and measures from the signal
until a probe submission through the surviving masters is acknowledged (202) again; the killed master is
restarted as a standby, as a supervisor would. Afterwards: every acknowledged job is looked up (lost_jobs),
and the agents' cgroups, sampled every 0.2 s, must never have held two live tasks of one job index
(duplicate_tasks). Last, with the Cassandra store, 16 client threads submit through the leader for a fixed
time: cassandra_submit_per_s and cassandra_submit_p99_ms. Figures go to stdout and
bench/results/failover.json.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import requests

from bench.facts import run_facts
from shared.ha_harness import (
    API_TOKEN,
    DuplicateWatcher,
    HaCluster,
    batch_job,
    service_job,
    task_index_via_api,
    wait_for,
)

SERVICES = Path(__file__).resolve().parents[1] / "scripts" / "services"
RESULTS = Path(__file__).resolve().parent / "results" / "failover.json"


def ensure_service(name: str) -> bool:
    """Starts a test server unless it runs; True when this call started it (so we stop it at the end)."""
    script = SERVICES / f"{name}.sh"
    if subprocess.run(["bash", str(script), "status"], capture_output=True).returncode == 0:
        return False
    subprocess.run(["bash", str(script), "install"], check=True, capture_output=True)
    subprocess.run(["bash", str(script), "start"], check=True, capture_output=True, timeout=300)
    return True


def stop_service(name: str) -> None:
    subprocess.run(["bash", str(SERVICES / f"{name}.sh"), "stop"], check=False, capture_output=True)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


class Submitter:
    """A steady stream of batch jobs through any master; what was acknowledged is what must survive."""

    def __init__(self, cluster: HaCluster, interval_s: float = 0.25) -> None:
        self.cluster = cluster
        self.interval_s = interval_s
        self.acked: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.prefix = uuid.uuid4().hex[:8]

    def _run(self) -> None:
        n, next_at = 0, time.monotonic()
        while not self.stopping.is_set():
            job_id = self.cluster.submit(batch_job(), f"{self.prefix}-{n}", deadline_s=20)
            if job_id is not None:
                self.acked.append(job_id)
            n += 1
            next_at = max(next_at + self.interval_s, time.monotonic())
            self.stopping.wait(max(0.0, next_at - time.monotonic()))


def failover_round(cluster: HaCluster, sig: int, probes: list[str]) -> float:
    """Signals the leader; returns seconds until a write is acknowledged again."""
    leader = cluster.leader(timeout=60)
    started = time.monotonic()
    cluster.signal_master(leader, sig)
    while True:
        key = f"probe-{uuid.uuid4().hex}"
        r = cluster.api("POST", "/api/v3/jobs", json=batch_job(cpu=50), headers={"Idempotency-Key": key},
                        timeout=2)
        if r is not None and r.status_code == 202:
            elapsed = time.monotonic() - started
            probes.append(str(r.json()["id"]))
            break
        time.sleep(0.01)
        if time.monotonic() - started > 60:
            raise RuntimeError("no write was accepted within 60 s of the failover")
    # Let the round settle as a supervisor would: the old leader back as a standby, agents reconciled.
    wait_for(lambda: (h := leader.health()) is not None and h["role"] == "standby", 60, "the restart")
    return elapsed


def services_started(cluster: HaCluster, job_ids: list[str], desired: int) -> bool:
    params = {"jobIds": ",".join(job_ids), "pageSize": 1000}
    r = cluster.api("GET", "/api/v3/tasks", params=params, attempts=10)
    if r is None or r.status_code != 200:
        return False
    started: dict[str, int] = {}
    for t in r.json()["items"]:
        if t["status"]["state"] == "Started":
            started[t["jobId"]] = started.get(t["jobId"], 0) + 1
    return all(started.get(j, 0) == desired for j in job_ids)


def submit_throughput(leader_url: str, seconds: float, concurrency: int) -> tuple[float, float, int]:
    """Jobs/s acknowledged and p99 latency (ms) with `concurrency` keep-alive clients on the leader."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    job = batch_job(cpu=50)  # unplaceable: the phase measures the API and the store, not process starts
    body = json.dumps(job)
    stop_at = time.monotonic() + seconds

    def worker(i: int) -> None:
        http = requests.Session()
        http.headers.update({"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"})
        while time.monotonic() < stop_at:
            t0 = time.monotonic()
            r = http.post(leader_url + "/api/v3/jobs", data=body, timeout=30)
            if r.status_code == 202:
                latencies[i].append(time.monotonic() - t0)
            else:
                errors[i] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    flat = [x for per in latencies for x in per]
    return len(flat) / elapsed, percentile(flat, 99) * 1000 if flat else float("nan"), sum(errors)


def master_outage(cluster: HaCluster, service_ids: list[str], outage_s: float) -> dict[str, Any]:
    """Every master down (kill -9) for `outage_s`: how many of the running service tasks (long-running:
    batch tasks end by themselves) stopped, sampled from the agents' cgroups every second (goal: 0), and
    whether the same tasks are Started once the masters are back."""

    def running() -> set[str]:
        return set().union(*(a.running_task_ids() for a in cluster.agents))

    def started_ids() -> set[str]:
        return {t["id"] for j in service_ids for t in tasks_api(cluster, j)
                if t["status"]["state"] == "Started"}

    service_tasks = started_ids()
    before = running() & service_tasks
    cluster.pause_supervision()
    for m in cluster.masters:
        if m.proc is not None and m.proc.poll() is None:
            m.proc.kill()
            m.proc.wait(timeout=10)
    down_at = time.monotonic()
    stopped: set[str] = set()
    samples = 0
    while time.monotonic() - down_at < outage_s:
        stopped |= before - running()
        samples += 1
        time.sleep(1.0)
    for m in cluster.masters:
        cluster.start_master(m)
    cluster.resume_supervision()
    back_at = time.monotonic()
    wait_for(lambda: services_started(cluster, service_ids, 2), 120, "services Started after the outage")
    after = started_ids()
    return {
        "outage_s": outage_s,
        "outage_tasks_running_before": len(before),
        "outage_tasks_stopped": len(stopped | (before - running())),
        "outage_service_tasks_replaced": len(after - service_tasks),
        "outage_samples": samples,
        "outage_recovered_s": round(time.monotonic() - back_at, 2),
        "goal_outage_0_tasks_stopped_met": not (stopped | (before - running())) and after == service_tasks,
    }


def tasks_api(cluster: HaCluster, job_id: str) -> list[dict[str, Any]]:
    r = cluster.api("GET", "/api/v3/tasks", attempts=20, params={"jobIds": job_id, "pageSize": 1000})
    return [] if r is None or r.status_code != 200 else list(r.json()["items"])


def run(kills: int, graceful: int, store: str, throughput_s: float, outage_s: float = 0.0) -> dict[str, Any]:
    started_zk = ensure_service("zookeeper")
    started_cassandra = ensure_service("cassandra") if store == "cassandra" else False
    result: dict[str, Any] = {"store": store, "zk_session_timeout_s": 4.0, "masters": 3, "agents": 2}
    try:
        with tempfile.TemporaryDirectory(prefix="titus-failover-") as tmp:
            cluster = HaCluster(Path(tmp), "127.0.0.1:2181", masters=3, session_timeout_s=4.0,
                                cassandra=("127.0.0.1", 9042) if store == "cassandra" else None)
            try:
                cluster.start(supervise=True)
                suffix = uuid.uuid4().hex[:6]
                for name in ("a", "b"):
                    cluster.start_agent(f"bench-{suffix}-{name}", cpu=2.0)
                services = [cluster.submit(service_job(2), f"svc-{suffix}-{i}") for i in range(2)]
                service_ids = [s for s in services if s is not None]
                wait_for(lambda: services_started(cluster, service_ids, 2), 90, "service tasks to start")
                watcher = DuplicateWatcher(cluster)
                submitter = Submitter(cluster)
                watcher.start()
                submitter.thread.start()
                probes: list[str] = []
                kill9: list[float] = []
                term: list[float] = []
                try:
                    for _ in range(kills):
                        kill9.append(failover_round(cluster, signal.SIGKILL, probes))
                        print(f"kill -9 failover: {kill9[-1]:.2f} s", flush=True)
                        wait_for(lambda: services_started(cluster, service_ids, 2), 90, "reconciliation")
                    for _ in range(graceful):
                        term.append(failover_round(cluster, signal.SIGTERM, probes))
                        print(f"SIGTERM failover: {term[-1]:.2f} s", flush=True)
                        wait_for(lambda: services_started(cluster, service_ids, 2), 90, "reconciliation")
                finally:
                    submitter.stopping.set()
                    submitter.thread.join(timeout=60)
                    watcher.stop()
                acked = submitter.acked + probes + service_ids
                lost = 0
                for job_id in acked:
                    r = cluster.api("GET", f"/api/v3/jobs/{job_id}", attempts=50)
                    lost += r is None or r.status_code != 200
                duplicates = watcher.duplicates(task_index_via_api(cluster))
                dup_keys = {(d["job"], d["index"]) for d in duplicates} | {
                    (j, i) for j, i, _ in watcher.api_duplicates}
                if outage_s > 0:
                    result["master_outage"] = master_outage(cluster, service_ids, outage_s)
                    print(f"master outage of {outage_s:.0f} s: {result['master_outage']}", flush=True)
                result.update({
                    "kill9_failover_s_p50": round(statistics.median(kill9), 3) if kill9 else None,
                    "kill9_failover_s_max": round(max(kill9), 3) if kill9 else None,
                    "graceful_failover_s_max": round(max(term), 3) if term else None,
                    "acked_jobs": len(acked),
                    "lost_jobs": lost,
                    "duplicate_tasks": len(dup_keys),
                    "kill9_failover_s": [round(x, 3) for x in kill9],
                    "graceful_failover_s": [round(x, 3) for x in term],
                    "duplicate_samples": len(watcher.samples),
                    "services_started_after": services_started(cluster, service_ids, 2),
                })
                if store == "cassandra":
                    for a in cluster.agents:
                        a.stop()  # the throughput phase measures the master and the store alone
                    leader = cluster.leader()
                    per_s, p99, errors = submit_throughput(leader.url, throughput_s, 16)
                    result.update({"cassandra_submit_per_s": round(per_s, 1),
                                   "cassandra_submit_p99_ms": round(p99, 1),
                                   "cassandra_submit_errors": errors, "cassandra_submit_concurrency": 16,
                                   "cassandra_submit_duration_s": throughput_s})
                else:
                    result.update({"cassandra_submit_per_s": None, "cassandra_submit_p99_ms": None,
                                   "missing": "cassandra_* figures need --store cassandra"})
            finally:
                cluster.stop()
    finally:
        if started_cassandra:
            stop_service("cassandra")
        if started_zk:
            stop_service("zookeeper")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="Write bench/results/failover.json.")
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--graceful", type=int, default=5)
    parser.add_argument("--store", choices=["cassandra", "sqlite"], default="cassandra")
    parser.add_argument("--throughput-seconds", type=float, default=20.0)
    parser.add_argument("--outage-seconds", type=float, default=300.0,
                        help="Every master down this long (0: skip); goal: no running task stops.")
    args = parser.parse_args()
    result = run(args.kills, args.graceful, args.store, args.throughput_seconds, args.outage_seconds)
    print(json.dumps(result, indent=2))
    if args.json:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        if args.kills == 0 and args.graceful == 0 and RESULTS.exists() and "master_outage" in result:
            # An outage-only run: keep the failover figures of the last full run, add this one's own.
            merged = json.loads(RESULTS.read_text())
            merged["master_outage"] = {**result["master_outage"], **run_facts(
                store=args.store, sqlite_synchronous="NORMAL" if args.store == "sqlite" else None)}
            result = merged
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
