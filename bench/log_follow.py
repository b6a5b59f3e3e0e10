"""Log follow benchmark: how soon after a task writes a line `titus task logs --follow` prints it (<= 200 ms).

    python -m bench.log_follow --json [--lines 40] [--interval 0.25]

Starts a master in this process (127.0.0.1, SQLite) and one `titus agent` (OCI runtime, busybox from the local
registry on 127.0.0.1:5000, as the tests use), submits a task that writes a line every --interval seconds, and
runs `titus task logs ID --follow` as a separate process. Written: when the task's stdout file on the agent's
disk grew past the line (a stat every millisecond); delivered: when the CLI's stdout pipe gave the line.
The latency of each line is the difference; p50, p99 and max in ms. The goal is met when the p99 is at most
200 ms. Figures go to stdout and bench/results/log_follow.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.facts import ROOT, load_now, run_facts

RESULTS = ROOT / "bench" / "results" / "log_follow.json"
GOAL_MS = 200.0
API_TOKEN, AGENT_TOKEN = "bench-token", "bench-agent-token"


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def run(lines: int, interval: float) -> dict[str, Any]:
    from master.server import MasterConfig, MasterServer
    from titus.client import TitusClient

    result = run_facts(lines=lines, interval_s=interval, runtime="oci", sqlite_synchronous="NORMAL")
    with tempfile.TemporaryDirectory() as tmp:
        server = MasterServer(MasterConfig(
            init_cluster=True, port=0, data_dir=Path(tmp) / "master", api_token=API_TOKEN,
                                           agent_token=AGENT_TOKEN, sqlite_synchronous="NORMAL"))
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        _wait(lambda: getattr(server, "port", 0), 30, "the master")
        url = f"http://127.0.0.1:{server.port}"
        agent_dir = Path(tmp) / "agent"
        agent_env = {**os.environ, "TITUS_MASTER_URL": url, "TITUS_AGENT_TOKEN": AGENT_TOKEN,
                     "TITUS_AGENT_ID": "bench-follow", "TITUS_DATA_DIR": str(agent_dir),
                     "TITUS_AGENT_CPU": "1",
                     "TITUS_AGENT_MEMORY_MB": "512", "TITUS_KILL_TASKS_ON_EXIT": "true",
                     "TITUS_LOG_LEVEL": "WARNING"}
        agent_env.pop("TITUS_API_TOKEN", None)
        agent = subprocess.Popen([sys.executable, "-m", "titus.cli", "agent"], env=agent_env)
        client = TitusClient(url, API_TOKEN)
        try:
            _wait(client.agents, 60, "the agent to register")
            script = f"sleep 1; for i in $(seq 1 {lines}); do echo line $i; sleep {interval}; done"
            job_id = client.submit({
                "owner": {"teamEmail": "bench@example.com"}, "applicationName": "follow",
                "container": {"resources": {"cpu": 0.5, "memoryMB": 64, "diskMB": 100, "networkMbps": 10},
                              "image": {"name": "127.0.0.1:5000/titus/busybox", "tag": "latest"},
                              "command": ["/bin/sh", "-c", script]},
                "batch": {"size": 1, "retryPolicy": {"immediate": {"retries": 0}}}})
            task_id = _wait(lambda: [t["id"] for t in client.tasks(job_id)
                                     if t["status"]["state"] == "Started"], 120, "the task to start")[0]
            stdout = _wait(lambda: [p for p in agent_dir.rglob("stdout") if task_id in str(p)], 30,
                           "the task's stdout file")[0]
            ends = []  # the stream offset just past line i
            total = 0
            for i in range(1, lines + 1):
                total += len(f"line {i}\n")
                ends.append(total)
            written: list[float] = []

            def watch() -> None:
                while len(written) < lines:
                    size = stdout.stat().st_size
                    now = time.monotonic()
                    while len(written) < lines and size >= ends[len(written)]:
                        written.append(now)
                    time.sleep(0.001)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            env = {**os.environ, "TITUS_URL": url, "TITUS_API_TOKEN": API_TOKEN}
            argv = [sys.executable, "-m", "titus.cli", "task", "logs", task_id, "--follow"]
            follow = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE)
            assert follow.stdout is not None
            delivered: list[float] = []
            for line in iter(follow.stdout.readline, b""):
                delivered.append(time.monotonic())
                if line.strip() != f"line {len(delivered)}".encode():
                    raise RuntimeError(f"line {len(delivered)} came out as {line!r}")
            follow.wait(timeout=60)
            watcher.join(timeout=10)
        finally:
            agent.terminate()
            agent.wait(timeout=30)
            server.shutdown()
            thread.join(timeout=10)
    # A line already on disk when the follower started (it starts after the task does) is not a follow
    # latency: count only the lines written after the first delivery.
    first = delivered[0] if delivered else 0.0
    latencies = sorted((d - w) * 1000 for w, d in zip(written, delivered, strict=False) if w > first)
    if not latencies:
        raise RuntimeError("no line was written after the follower started")
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    result["figures"] = {
        "lines_measured": len(latencies),
        "follow_latency_p50_ms": round(statistics.median(latencies), 1),
        "follow_latency_p99_ms": round(p99, 1),
        "follow_latency_max_ms": round(latencies[-1], 1),
        "follow_exit_code": follow.returncode,
    }
    result["goals"] = {"follow_latency_p99_le_200ms": {"goal_ms": GOAL_MS, "value_ms": round(p99, 1),
                                                       "met": p99 <= GOAL_MS}}
    result["load_average_at_end"] = load_now()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", action="store_true", help="Write bench/results/log_follow.json.")
    parser.add_argument("--lines", type=int, default=40)
    parser.add_argument("--interval", type=float, default=0.25)
    args = parser.parse_args()
    result = run(args.lines, args.interval)
    print(json.dumps(result, indent=2))
    if args.json:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
