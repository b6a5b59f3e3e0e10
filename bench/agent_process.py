"""Process runtime micro benchmark: task start latency and the cost of monitoring 100 running tasks.

    python -m bench.agent_process --json     (as root, on a host with cgroups; writes results JSON)

process_start_*: from the start() call to the task's program running, measured by the program itself
(`date +%s%N` prints the wall clock at its first instruction; cgroups are joined before exec).
start_call_*: how long start() blocks the caller (it returns once exec has succeeded).
monitor_*: this process's own CPU (percent of one core) and RSS while it samples usage() of every one of
100 running `sleep` tasks plus host_usage() once per second. supervisor_uss_kb: memory unique to each
task's supervisor process, the price of exit statuses surviving agent restarts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from agent.runtime.base import TaskSpec
from agent.runtime.process import ProcessRuntime
from bench.stats import pct, wait_ended

RESULTS = Path(__file__).parent / "results" / "agent_process.json"


def bench_start(rt: ProcessRuntime, starts: int) -> dict[str, float]:
    to_running: list[float] = []
    call: list[float] = []
    for i in range(starts + 5):
        task_id = f"start-{i}"
        spec = TaskSpec(task_id=task_id, job_id="bench", image="host", command=("date", "+%s%N"))
        t0 = time.time_ns()
        p0 = time.perf_counter()
        rt.start(spec)
        p1 = time.perf_counter()
        wait_ended(rt, task_id, timeout_s=30)
        ran_at = int(rt.logs(task_id, "stdout").strip())
        rt.cleanup(task_id)
        if i >= 5:  # the first starts warm up the spawner and the page cache
            to_running.append((ran_at - t0) / 1e6)
            call.append((p1 - p0) * 1000)
    return {
        "process_start_p50_ms": round(pct(to_running, 0.5), 2),
        "process_start_p99_ms": round(pct(to_running, 0.99), 2),
        "start_call_p50_ms": round(pct(call, 0.5), 2),
        "start_call_p99_ms": round(pct(call, 0.99), 2),
        "starts": starts,
    }


def bench_monitor(rt: ProcessRuntime, tasks: int, seconds: int) -> dict[str, float]:
    ids = [f"sleep-{i}" for i in range(tasks)]
    for task_id in ids:
        rt.start(TaskSpec(task_id=task_id, job_id="bench", image="host", command=("sleep", "600")))
    try:
        for task_id in ids:  # baseline sample, outside the measured window
            rt.usage(task_id)
        sample_ms: list[float] = []
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        w0 = time.monotonic()
        for tick in range(seconds):
            s0 = time.perf_counter()
            seen = sum(1 for task_id in ids if (u := rt.usage(task_id)) is not None and u.processes == 1)
            rt.host_usage()
            sample_ms.append((time.perf_counter() - s0) * 1000)
            if seen != tasks:
                raise RuntimeError(f"usage saw {seen} of {tasks} tasks")
            time.sleep(max(0.0, w0 + tick + 1 - time.monotonic()))
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        wall = time.monotonic() - w0
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        _, rss_mb = rt.monitor.self_stats()
        uss = [rt.monitor.uss_bytes(pid) for pid in (rt.supervisor_pid(t) for t in ids) if pid]
        uss_kb = [u / 1024 for u in uss if u is not None]
        return {
            "monitor_cpu_pct": round(100 * cpu / wall, 3),
            "monitor_rss_mb": round(rss_mb, 1),
            "monitor_sample_p50_ms": round(statistics.median(sample_ms), 2),
            "monitor_tasks": tasks,
            "monitor_seconds": seconds,
            "supervisor_uss_kb": round(statistics.mean(uss_kb), 1) if uss_kb else -1.0,
        }
    finally:
        for task_id in ids:
            rt.kill(task_id, 0)
        for task_id in ids:
            wait_ended(rt, task_id, timeout_s=30)
            rt.cleanup(task_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help=f"print JSON and write {RESULTS}")
    parser.add_argument("--starts", type=int, default=200)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--monitor-seconds", type=int, default=10)
    parser.add_argument("--cgroup-root", default="/sys/fs/cgroup")
    args = parser.parse_args(argv)
    agent_id = f"bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="titus-bench-") as data_dir:
        os.chmod(data_dir, 0o711)  # tasks run as their own uid and pass through to their work dir
        rt = ProcessRuntime(data_dir, agent_id, cgroup_root=args.cgroup_root)
        try:
            result = {**bench_start(rt, args.starts), **bench_monitor(rt, args.tasks, args.monitor_seconds)}
        finally:
            rt.cgroups.remove_agent(agent_id)
            rt.close()
    if args.json:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:24} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
