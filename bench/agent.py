"""Agent benchmark: the issue's figures in one run, from the process and Docker runtime benchmarks.

    python -m bench.agent --json      (as root; starts dockerd and the local registry if needed)

process_start_*: start() of the process runtime to the task's first instruction (bench.agent_process).
docker_start_p50_ms / docker_run_baseline_p50_ms / docker_start_ratio: DockerRuntime.start() against a bare
`docker run -d` of the same image in the same run (bench.agent_docker). monitor_*: the runtime's own CPU
(percent of one core) and RSS while sampling 100 running tasks every second. Writes bench/results/agent.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import uuid
from pathlib import Path
from typing import Any

from agent.runtime.process import ProcessRuntime
from bench import agent_docker, agent_process

RESULTS = Path(__file__).parent / "results" / "agent.json"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help=f"write {RESULTS}")
    parser.add_argument("--starts", type=int, default=200)
    parser.add_argument("--docker-runs", type=int, default=30)
    args = parser.parse_args()
    agent_id = f"bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="titus-bench-") as data_dir:
        rt = ProcessRuntime(data_dir, agent_id)
        try:
            process = {
                **agent_process.bench_start(rt, args.starts),
                **agent_process.bench_monitor(rt, 100, 10),
            }
        finally:
            rt.cgroups.remove_agent(agent_id)
            rt.close()
    docker: dict[str, Any] = agent_docker.run(args.docker_runs)
    result = {
        "process_start_p50_ms": process["process_start_p50_ms"],
        "process_start_p99_ms": process["process_start_p99_ms"],
        "docker_start_p50_ms": docker["docker_start_p50_ms"],
        "docker_run_baseline_p50_ms": docker["docker_run_baseline_p50_ms"],
        "docker_start_ratio": docker["docker_start_ratio"],
        "monitor_cpu_pct": process["monitor_cpu_pct"],
        "monitor_rss_mb": process["monitor_rss_mb"],
    }
    result["goals"] = {
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
