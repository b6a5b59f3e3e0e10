"""Job event stream benchmark: delivery latency under a change load, and what idle subscribers cost.

    python -m bench.observe --json [--rate 2000] [--duration 10] [--subscribers 100] [--idle 20]

A real master (its own process: SQLite synchronous=FULL, group commit, waitress) on 127.0.0.1.
Phase 1: one subscriber on `GET /api/v3/jobs/observe`; a load process (its own GIL) changes job attributes
(`PUT /api/v3/jobs/{id}/attributes`, each answered only once durable) at up to `rate` per second for
`duration` seconds over keep-alive connections. Delivery latency of each change is the subscriber's clock
at receipt minus the notification's `timestamp` (the master's clock when the change was published after
its commit; one host, one clock). The subscriber keeps up if every committed change's final state arrived
and the p99 stays within the goal; the achieved change rate is reported beside the target, since the load
generator and the store may not reach it on this machine.
Phase 2: `subscribers` idle streams (10 s keep-alives); the master's CPU time (utime + stime from /proc)
over `idle` seconds, as a share of one core.
Figures are printed and written to bench/results/observe.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

from bench.facts import load_now, run_facts
from bench.stats import pct

RESULTS = Path(__file__).parent / "results"
TOKEN = "bench-observe-token"


def _serve(port: int, data_dir: str, threads: int) -> None:
    from master.server import MasterConfig, MasterServer

    config = MasterConfig(
        init_cluster=True, port=port, data_dir=Path(data_dir), api_token=TOKEN, agent_token="bench-agent",
                          sqlite_synchronous="FULL", threads=threads)
    MasterServer(config).serve_forever()


def _job(n: int) -> dict[str, Any]:
    return {
        "owner": {"teamEmail": "bench@example.com"},
        "applicationName": f"observe{n}",
        "container": {"resources": {"cpu": 0.1, "memoryMB": 32},
                      "image": {"name": "busybox", "tag": "latest"}},
        "service": {"capacity": {"desired": 0, "max": 1}},
    }


def _load(port: int, job_ids: list[str], rate: float, duration: float, threads: int, out: Any) -> None:
    """Changes at up to `rate`/s, spread over `threads` keep-alive connections (its own process)."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    done = [0]
    errors = [0]
    lock = threading.Lock()
    start = time.monotonic()
    per_thread = rate / threads

    def loop(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        sent = 0
        while (now := time.monotonic() - start) < duration:
            ahead = sent / per_thread - now
            if ahead > 0:
                time.sleep(ahead)
            job = job_ids[(k + sent * threads) % len(job_ids)]
            body = json.dumps({"attributes": {"n": f"{k}-{sent}"}})
            try:
                conn.request("PUT", f"/api/v3/jobs/{job}/attributes", body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                ok = False
            sent += 1
            with lock:
                done[0] += ok
                errors[0] += not ok

    workers = [threading.Thread(target=loop, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put((done[0], errors[0], time.monotonic() - start))


class Subscriber:
    def __init__(self, url: str, keep_alive_ms: int = 10_000) -> None:
        self.resp = requests.get(url + "/api/v3/jobs/observe", params={"keepAliveMs": keep_alive_ms},
                                 headers={"Authorization": f"Bearer {TOKEN}"}, stream=True, timeout=60)
        self.resp.raise_for_status()
        self.snapshot_done = threading.Event()
        self.latencies_ms: list[float] = []
        self.last_version: dict[str, int] = {}
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for line in self.resp.iter_lines(decode_unicode=True):
                if not line.startswith("data: "):
                    continue
                received = time.time() * 1000
                message = json.loads(line[6:])
                if "snapshotEnd" in message:
                    self.snapshot_done.set()
                elif "jobUpdate" in message and self.snapshot_done.is_set():
                    job = message["jobUpdate"]["job"]
                    self.latencies_ms.append(received - int(message["timestamp"]))
                    self.last_version[job["id"]] = int(job["version"]["timestamp"])
        except (requests.RequestException, ValueError, AttributeError, OSError):
            pass  # closed by close() (urllib3 drops its file under a reader) or by the master going away

    def close(self) -> None:
        self.resp.close()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(rate: float, duration: float, subscribers: int, idle: float, port: int) -> dict[str, Any]:
    data_dir = tempfile.mkdtemp(prefix="titus-bench-observe-")
    ctx = mp.get_context("spawn")
    master = ctx.Process(target=_serve, args=(port, data_dir, subscribers + 32), daemon=True)
    master.start()
    url = f"http://127.0.0.1:{port}"
    http_ = requests.Session()
    http_.headers["Authorization"] = f"Bearer {TOKEN}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if http_.get(url + "/healthz", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the master did not start")
        time.sleep(0.1)
    try:
        job_ids = [http_.post(url + "/api/v3/jobs", json=_job(n), timeout=30).json()["id"] for n in range(20)]
        sub = Subscriber(url)
        if not sub.snapshot_done.wait(30):
            raise RuntimeError("no snapshotEnd")
        queue: Any = ctx.Queue()
        load = ctx.Process(target=_load, args=(port, job_ids, rate, duration, 16, queue))
        load.start()
        committed, errors, elapsed = queue.get(timeout=duration + 300)
        load.join()
        final = {j: int(http_.get(f"{url}/api/v3/jobs/{j}", timeout=30).json()["version"]["timestamp"])
                 for j in job_ids}
        caught_up_by = time.monotonic() + 30
        def behind() -> bool:
            return any(sub.last_version.get(j, 0) < v for j, v in final.items())

        while behind() and time.monotonic() < caught_up_by:
            time.sleep(0.05)
        kept_up = all(sub.last_version.get(j, 0) == v for j, v in final.items())
        latencies = list(sub.latencies_ms)
        sub.close()

        idle_subs = [Subscriber(url) for _ in range(subscribers)]
        for s in idle_subs:
            s.snapshot_done.wait(30)
        time.sleep(2)
        assert master.pid is not None
        cpu0, t0 = _cpu_seconds(master.pid), time.monotonic()
        time.sleep(idle)
        cpu_share = (_cpu_seconds(master.pid) - cpu0) / (time.monotonic() - t0)
        for s in idle_subs:
            s.close()
    finally:
        master.terminate()
        master.join(timeout=30)
    return {
        "target_changes_per_s": rate,
        "achieved_changes_per_s": round(committed / elapsed, 1),
        "changes_committed": committed,
        "change_errors": errors,
        "updates_delivered": len(latencies),
        "subscriber_kept_up": kept_up,
        "delivery_p50_ms": round(pct(latencies, 0.50), 1),
        "delivery_p99_ms": round(pct(latencies, 0.99), 1),
        "idle_subscribers": subscribers,
        "idle_master_cpu_share_of_core": round(cpu_share, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--idle", type=float, default=20.0)
    parser.add_argument("--port", type=int, default=7401)
    parser.add_argument("--json", action="store_true", help="write bench/results/observe.json")
    args = parser.parse_args()
    result: dict[str, Any] = {**run_facts(sqlite_synchronous="FULL", transport="server-sent events",
                                          load_connections=16)}
    result.update(run(args.rate, args.duration, args.subscribers, args.idle, args.port))
    result["goals"] = {
        # Keeping up at 2,000/s is only shown if the load reached 2,000/s; otherwise the goal is not met here.
        "keeps_up_at_2000_changes_per_s": bool(result["subscriber_kept_up"])
        and result["achieved_changes_per_s"] >= 2000,
        "delivery_p99_ms<=100": result["delivery_p99_ms"] <= 100,
        "100_idle_subscribers<=10%_core": result["idle_subscribers"] >= 100
        and result["idle_master_cpu_share_of_core"] <= 0.10,
    }
    result["load_average_at_end"] = load_now()
    print(json.dumps(result, indent=2))
    if args.json:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "observe.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
