"""API benchmark: job submissions per second and submit-to-Started latency against a real `titus dev`.

    python -m bench.api --json [--duration 30] [--concurrency 16] [--start-jobs 200]

Phase 1 (throughput): `concurrency` client threads in a separate process post one-task batch jobs for
`duration` seconds over keep-alive connections. Every 202 means the job is durable (SQLite, synchronous=FULL,
group commit). The jobs ask for more CPU than the dev agent has, so they stay pending: the phase measures
the API, validation, the store and the scheduler's handling of a growing backlog, not process start-up.
Phase 2 (latency): a fresh `titus dev`; `start_jobs` one-task batch jobs, each submitted once the previous
one's task has started; the latency is the master's Started timestamp minus its Accepted timestamp for each
task (one clock, so the client's polling adds no error).
Figures are printed and written to bench/results/api.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

from bench.facts import load_now, run_facts
from bench.stats import pct

RESULTS = Path(__file__).parent / "results"


def _job(cpu: float, command: list[str]) -> dict[str, Any]:
    return {
        "owner": {"teamEmail": "bench@example.com"},
        "applicationName": "bench",
        "container": {
            "resources": {"cpu": cpu, "memoryMB": 32, "diskMB": 10, "networkMbps": 1},
            # the local registry's image (scripts/images/busybox.sh): dev runs tasks as OCI containers from it
            "image": {"name": "127.0.0.1:5000/titus/busybox", "tag": "latest"},
            "command": command,
        },
        "batch": {"size": 1, "retryPolicy": {"immediate": {"retries": 0}}},
    }


class Dev:
    def __init__(self, port: int) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="titus-bench-"))
        self.port = port
        env = {**os.environ, "TITUS_LOG_LEVEL": "WARNING"}
        env.pop("TITUS_API_TOKEN", None)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "titus.cli",
                "dev",
                "--port",
                str(port),
                "--data-dir",
                str(self.dir),
                "--agent-cpu",
                "2",
                "--no-tls",  # plain HTTP, as this bench has always measured; bench.tls compares TLS with it
            ],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        token_file = self.dir / "api-token"
        while not token_file.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("titus dev did not start")
            time.sleep(0.1)
        self.token = token_file.read_text().strip()
        self.url = f"http://127.0.0.1:{port}"
        while True:
            try:
                agents = requests.get(
                    self.url + "/api/v3/agent/instances", timeout=2, headers=self.headers
                ).json()["items"]
                if agents:
                    break
            except (requests.RequestException, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the dev agent did not register")
            time.sleep(0.1)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            # Killed before its clean-up ran: its tasks and their supervisors may still write into the data
            # directory, so it is left for a look rather than deleted under them.
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"titus dev did not stop within 60 s after SIGINT; left {self.dir}") from None
        # `titus dev` returns once its tasks and their supervisors are gone: nothing writes here any more.
        shutil.rmtree(self.dir)


def _client_worker(port: int, token: str, duration: float, threads: int, out: Any) -> None:
    """Runs in its own process so the load generator does not share a GIL with anything it measures."""
    body = json.dumps(_job(64.0, ["/bin/true"])).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + duration

    def loop() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        bad = 0
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/api/v3/jobs", body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 202
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                ok = False
            if ok:
                mine.append((time.perf_counter() - t0) * 1000)
            else:
                bad += 1
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put((latencies, errors[0]))


def throughput(duration: float, concurrency: int, port: int) -> dict[str, float]:
    dev = Dev(port)
    try:
        queue: Any = mp.Queue()
        proc = mp.Process(target=_client_worker, args=(port, dev.token, duration, concurrency, queue))
        t0 = time.monotonic()
        proc.start()
        latencies, errors = queue.get(timeout=duration + 120)
        proc.join()
        elapsed = time.monotonic() - t0
        stored = requests.get(
            dev.url + "/api/v3/jobs", params={"pageSize": 1}, headers=dev.headers, timeout=30
        ).json()["pagination"]["totalItems"]
    finally:
        dev.stop()
    return {
        "submit_per_s": round(len(latencies) / min(elapsed, duration + 1), 1),
        "submit_p50_ms": round(pct(latencies, 0.50), 2),
        "submit_p99_ms": round(pct(latencies, 0.99), 2),
        "submit_ok": len(latencies),
        "submit_errors": errors,
        "jobs_listed_after": stored,
    }


def start_latency(jobs: int, port: int) -> dict[str, float]:
    """Closed loop: submit one job, wait for its task to start, then the next; the figure is latency
    without queueing behind earlier jobs."""
    dev = Dev(port)
    http_ = requests.Session()
    http_.headers.update(dev.headers)
    latencies: list[float] = []
    never = 0
    try:
        for _ in range(jobs):
            r = http_.post(dev.url + "/api/v3/jobs", json=_job(0.1, ["/bin/sleep", "1"]), timeout=30)
            r.raise_for_status()
            job_id = r.json()["id"]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                tasks = http_.get(
                    dev.url + "/api/v3/tasks",
                    params={"jobIds": job_id, "taskStates": "Started,KillInitiated,Finished"},
                    timeout=30,
                ).json()["items"]
                stamps = {
                    s["state"]: int(s["timestamp"])  # a uint64: a string in proto3 JSON
                    for s in (tasks[0]["statusHistory"] + [tasks[0]["status"]] if tasks else [])
                }
                if "Started" in stamps:
                    latencies.append(float(stamps["Started"] - stamps["Accepted"]))
                    break
                time.sleep(0.005)
            else:
                never += 1
    finally:
        dev.stop()
    return {
        "start_p50_ms": round(statistics.median(latencies), 1) if latencies else float("nan"),
        "start_p99_ms": round(pct(latencies, 0.99), 1),
        "start_samples": len(latencies),
        "start_never_started": never,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--start-jobs", type=int, default=200)
    parser.add_argument("--port", type=int, default=7301)
    parser.add_argument("--json", action="store_true", help="write bench/results/api.json")
    args = parser.parse_args()
    result: dict[str, Any] = {
        "duration_s": args.duration,
        "concurrency": args.concurrency,
        **run_facts(sqlite_synchronous="FULL", embedded="titus dev --no-tls", clients=args.concurrency),
    }
    result.update(throughput(args.duration, args.concurrency, args.port))
    result.update(start_latency(args.start_jobs, args.port + 1))
    result["goals"] = {
        "submit_per_s>=500": result["submit_per_s"] >= 500,
        "submit_p99_ms<=50": result["submit_p99_ms"] <= 50,
        "start_p50_ms<=50": result["start_p50_ms"] <= 50,
        "start_p99_ms<=150": result["start_p99_ms"] <= 150,
    }
    result["load_average_at_end"] = load_now()
    print(json.dumps(result, indent=2))
    if args.json:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "api.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
