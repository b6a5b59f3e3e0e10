"""Agent benchmark: the issue's figures in one run, from the OCI, process and Docker runtime benchmarks.

    python -m bench.agent --json      (as root; starts dockerd and the local registry if needed)

oci_start_* / cold_* / oci_monitor_*: the OCI runtime, the default (bench.agent_oci: cached start, cold
start of a ~5 MB image against skopeo copy + runtime start, 100 running containers).
process_start_*: start() of the process runtime to the task's first instruction (bench.agent_process).
docker_start_p50_ms / docker_run_baseline_p50_ms / docker_start_ratio: DockerRuntime.start() against a bare
create + start of the same image through the same engine API in the same run (bench.agent_docker).
monitor_*: the process runtime's own CPU (percent of one core) and RSS while sampling 100 running tasks
every second. Writes bench/results/agent.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

from agent.runtime.process import ProcessRuntime
from bench import agent_docker, agent_oci, agent_process

RESULTS = Path(__file__).parent / "results" / "agent.json"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help=f"write {RESULTS}")
    parser.add_argument("--starts", type=int, default=200)
    parser.add_argument("--docker-runs", type=int, default=30)
    parser.add_argument("--oci-starts", type=int, default=100)
    args = parser.parse_args()
    agent_id = f"bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="titus-bench-") as data_dir:
        os.chmod(data_dir, 0o711)  # process-runtime tasks run as their own uid and pass through to work/
        rt = ProcessRuntime(data_dir, agent_id)
        try:
            process = {
                **agent_process.bench_start(rt, args.starts),
                **agent_process.bench_monitor(rt, 100, 10),
            }
        finally:
            rt.cgroups.remove_agent(agent_id)
            rt.close()
    oci = agent_oci.run(args.oci_starts, 5, 100, 10)
    docker: dict[str, Any] = agent_docker.run(args.docker_runs)
    result: dict[str, Any] = {
        "oci_start_p50_ms": oci["oci_start_p50_ms"],
        "oci_start_p99_ms": oci["oci_start_p99_ms"],
        "oci_start_to_exit_p50_ms": oci["oci_start_to_exit_p50_ms"],
        "cold_start_ms": oci["cold_start_ms"],
        "cold_baseline_ms": oci["cold_baseline_ms"],
        "cold_ratio": oci["cold_ratio"],
        "cold_image_bytes": oci["cold_image_bytes"],
        "oci_monitor_cpu_pct": oci["oci_monitor_cpu_pct"],
        "oci_monitor_rss_mb": oci["oci_monitor_rss_mb"],
        "process_start_p50_ms": process["process_start_p50_ms"],
        "process_start_p99_ms": process["process_start_p99_ms"],
        "docker_start_p50_ms": docker["docker_start_p50_ms"],
        "docker_run_baseline_p50_ms": docker["docker_run_baseline_p50_ms"],
        "docker_start_ratio": docker["docker_start_ratio"],
        "monitor_cpu_pct": process["monitor_cpu_pct"],
        "monitor_rss_mb": process["monitor_rss_mb"],
    }
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False,
                            cwd=Path(__file__).parent).stdout.strip()
    result["commit"] = commit
    result["machine"] = {"cpus": os.cpu_count(), "kernel": platform.release(), "runc": oci["runc"],
                         "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
                         "note": "shared machine: other sessions' test suites run alongside"}
    result["durability"] = "not applicable: no store is written; task state files are not fsynced"
    result["goals"] = {
        "oci_start_p50_ms<=60": result["oci_start_p50_ms"] <= 60,
        "oci_start_p99_ms<=150": result["oci_start_p99_ms"] <= 150,
        "cold_ratio<=1.5": result["cold_ratio"] <= 1.5,
        "oci_monitor_cpu_pct<=2": result["oci_monitor_cpu_pct"] <= 2,
        "oci_monitor_rss_mb<=100": result["oci_monitor_rss_mb"] <= 100,
        "process_start_p50_ms<=50": result["process_start_p50_ms"] <= 50,
        "docker_start_ratio<=1.2": result["docker_start_ratio"] <= 1.2,
        "monitor_cpu_pct<=2": result["monitor_cpu_pct"] <= 2,
        "monitor_rss_mb<=100": result["monitor_rss_mb"] <= 100,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
