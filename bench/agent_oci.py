"""OCI runtime benchmark: task start with a cached image, cold start from the registry, and the agent's
cost with 100 running containers.

    python -m bench.agent_oci --json     (as root; the local registry on 127.0.0.1:5000 must run)

oci_start_*: the start() call until it returns, image already in the cache: overlay and tmpfs mounts,
  config.json, `runc run --detach` (which returns once runc has released the container's init to exec
  the task's program), the supervisor's report. busybox's date has no nanoseconds, so the program cannot
  stamp its own first instruction as the process benchmark does; oci_start_to_exit_p50_ms (start() until
  the runtime reports that `true` ended) bounds it from above.
cold_start_ms: start() with an empty cache, of a ~5 MB image (busybox plus a 3 MB
  layer) from the local registry: pull (skopeo), verified extraction, then the same start.
cold_baseline_ms: `skopeo copy` of the same image into a fresh OCI layout plus oci_start_p50_ms (the
  runtime start). cold_ratio = cold_start_ms / cold_baseline_ms (goal <= 1.5). Medians of --cold-runs.
monitor_*: this process's CPU (percent of one core) and RSS while it samples usage() of 100 running
  containers every second, as the agent's reporter does.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from agent.runtime.base import TaskSpec
from agent.runtime.images import ImageCache
from agent.runtime.oci import OciRuntime
from bench.stats import pct, wait_ended

RESULTS = Path(__file__).parent / "results" / "agent_oci.json"
IMAGE = "127.0.0.1:5000/titus/busybox:latest"


def _start_ms(rt: OciRuntime, image: str) -> tuple[float, float]:
    """(start() latency, start() until the end of `true` is known), in ms."""
    task_id = f"start-{uuid.uuid4().hex[:10]}"
    t0 = time.perf_counter()
    rt.start(TaskSpec(task_id=task_id, job_id="bench", image=image, command=("true",)))
    started = time.perf_counter()
    wait_ended(rt, task_id, timeout_s=60)
    ended = time.perf_counter()
    status = rt.poll(task_id)
    rt.cleanup(task_id)
    if status is None or status.reason != "normal":
        raise RuntimeError(f"bench task failed: {status}")
    return (started - t0) * 1000, (ended - t0) * 1000


def bench_start(rt: OciRuntime, starts: int) -> dict[str, float]:
    rt.images.get(IMAGE)
    samples = [_start_ms(rt, IMAGE) for _ in range(starts + 5)][5:]  # the first ones warm caches up
    times = [s for s, _ in samples]
    return {"oci_start_p50_ms": round(pct(times, 0.5), 1), "oci_start_p99_ms": round(pct(times, 0.99), 1),
            "oci_start_to_exit_p50_ms": round(pct([e for _, e in samples], 0.5), 1), "oci_starts": starts}


def _five_mb_image() -> str:
    """busybox + a 3 MB random layer, pushed under a fresh tag so that nothing caches it."""
    import docker

    tag = f"127.0.0.1:5000/titus/bench-5mb:{uuid.uuid4().hex[:8]}"
    dockerfile = f"FROM {IMAGE}\nRUN head -c 3000000 /dev/urandom > /payload\n"
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile.encode()))
    context.seek(0)
    client = docker.from_env()
    try:
        client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True)
        for line in client.api.push(tag, stream=True, decode=True):
            if "error" in line:
                raise RuntimeError(line["error"])
        client.api.remove_image(tag)
    finally:
        client.close()
    return tag


def bench_cold(data_dir: Path, agent_id: str, runs: int, runtime_start_ms: float) -> dict[str, Any]:
    image = _five_mb_image()
    cold: list[float] = []
    base: list[float] = []
    size = 0
    for i in range(runs):
        layout = data_dir / f"layout-{i}"
        t0 = time.perf_counter()
        subprocess.run(["skopeo", "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false",
                        f"docker://{image}", f"oci:{layout}:latest"], check=True)
        base.append((time.perf_counter() - t0) * 1000 + runtime_start_ms)
        size = sum(p.stat().st_size for p in layout.rglob("*") if p.is_file())
        shutil.rmtree(layout)
        rt = OciRuntime(data_dir / f"cold-{i}", agent_id, images=ImageCache(data_dir / f"cache-{i}"))
        try:
            cold.append(_start_ms(rt, image)[0])
        finally:
            rt.close()
    c, b = statistics.median(cold), statistics.median(base)
    return {"cold_start_ms": round(c, 1), "cold_baseline_ms": round(b, 1), "cold_ratio": round(c / b, 3),
            "cold_image_bytes": size, "cold_runs": runs}


def bench_monitor(rt: OciRuntime, tasks: int, seconds: int) -> dict[str, float]:
    ids = [f"sleep-{uuid.uuid4().hex[:8]}" for _ in range(tasks)]
    for task_id in ids:
        rt.start(TaskSpec(task_id=task_id, job_id="bench", image=IMAGE, command=("sleep", "600"),
                          memory_mb=32))
    try:
        for task_id in ids:
            rt.usage(task_id)
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        w0 = time.monotonic()
        for tick in range(seconds):
            seen = sum(1 for task_id in ids if rt.usage(task_id) is not None)
            rt.host_usage()
            if seen != tasks:
                raise RuntimeError(f"usage saw {seen} of {tasks} containers")
            time.sleep(max(0.0, w0 + tick + 1 - time.monotonic()))
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        wall = time.monotonic() - w0
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        _, rss_mb = rt.monitor.self_stats()
        return {"oci_monitor_cpu_pct": round(100 * cpu / wall, 3), "oci_monitor_rss_mb": round(rss_mb, 1),
                "oci_monitor_containers": tasks, "oci_monitor_seconds": seconds}
    finally:
        for task_id in ids:
            rt.kill(task_id, 0)
        for task_id in ids:
            wait_ended(rt, task_id, timeout_s=60)
            rt.cleanup(task_id)


def run(starts: int, cold_runs: int, tasks: int, seconds: int) -> dict[str, Any]:
    agent_id = f"bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="titus-bench-oci-") as tmp:
        data_dir = Path(tmp)
        rt = OciRuntime(data_dir / "agent", agent_id, images=ImageCache(data_dir / "images"))
        try:
            result: dict[str, Any] = bench_start(rt, starts)
            result.update(bench_cold(data_dir, agent_id, cold_runs, result["oci_start_p50_ms"]))
            result.update(bench_monitor(rt, tasks, seconds))
        finally:
            rt.cgroups.remove_agent(agent_id)
            rt.close()
    runc = subprocess.run(["runc", "--version"], capture_output=True, text=True, check=False).stdout
    result["runc"] = runc.splitlines()[0] if runc else "?"
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help=f"print JSON and write {RESULTS}")
    parser.add_argument("--starts", type=int, default=100)
    parser.add_argument("--cold-runs", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--monitor-seconds", type=int, default=10)
    args = parser.parse_args(argv)
    result = run(args.starts, args.cold_runs, args.tasks, args.monitor_seconds)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
