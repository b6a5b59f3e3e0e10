"""Docker runtime start latency against a bare container start on the same dockerd and the same image.

    python -m bench.agent_docker --json     (as root; starts dockerd/registry/image via scripts/ if needed)

docker_start_p50_ms: DockerRuntime.start() of the local-registry busybox image, already pulled, from the
  call until it returns, which it does once dockerd reports the container started (create + start over the
  engine API, with the task's limits, labels, dropped capabilities and tini as init).
docker_run_baseline_p50_ms: a bare create + start of `IMAGE sleep 60` through the same engine API (the SDK),
  with no limits, labels or init and default privileges: the issue asks for both through the API, since
  the CLI's own process start-up would flatter the ratio. Both stop at "started", so they measure the same
  step; neither includes the container's exit or removal (that is done, untimed, after each run).
docker_run_to_exit_p50_ms: `docker run --rm IMAGE true` to its exit, for reference: start + run + wait +
  remove, what a person means by "docker run is this fast".
docker_start_ratio: docker_start_p50_ms / docker_run_baseline_p50_ms (goal: at most 1.2).
The three are interleaved run by run so that drift in the host's load hits them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import docker

from agent.runtime.base import TaskSpec
from agent.runtime.docker import DockerRuntime
from bench.stats import pct

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "agent_docker.json"
IMAGE = "127.0.0.1:5000/titus/busybox:latest"


def _script(path: str, *args: str) -> None:
    done = subprocess.run(["bash", str(ROOT / path), *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{path} {' '.join(args)} failed:\n{done.stdout}{done.stderr}")


def _ensure_services() -> list[str]:
    """Start dockerd and the registry unless they run; returns the scripts whose service this started."""
    started = []
    for script in ("scripts/services/dockerd.sh", "scripts/services/registry.sh"):
        status = subprocess.run(["bash", str(ROOT / script), "status"], capture_output=True, check=False)
        if status.returncode != 0:
            _script(script, "install")
            _script(script, "start")
            started.append(script)
    _script("scripts/images/busybox.sh")
    return started


def _timed_cli(argv: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    elapsed = (time.perf_counter() - t0) * 1000
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return elapsed, done.stdout.strip()


def run(runs: int, warmup: int = 3) -> dict[str, Any]:
    started = _ensure_services()
    try:
        return _measure(runs, warmup)
    finally:
        for script in reversed(started):
            _script(script, "stop")


def _measure(runs: int, warmup: int) -> dict[str, Any]:
    cli = shutil.which("docker") or "/usr/bin/docker"
    client = docker.from_env()
    client.api.inspect_image(IMAGE)  # present: the start figure must not include a pull
    agent_id = f"bench-{uuid.uuid4().hex[:8]}"
    logs = tempfile.TemporaryDirectory(prefix="titus-bench-logs-")  # cleanup() saves logs there
    rt = DockerRuntime(agent_id, log_dir=logs.name)
    start_ms: list[float] = []
    baseline_ms: list[float] = []
    to_exit_ms: list[float] = []
    try:
        for i in range(warmup + runs):
            spec = TaskSpec(
                task_id=f"bench-{i}-{uuid.uuid4().hex[:6]}",
                job_id="bench",
                image=IMAGE,
                command=("sleep", "60"),
                cpu=1.0,
                memory_mb=128,
            )
            t0 = time.perf_counter()
            rt.start(spec)
            started = (time.perf_counter() - t0) * 1000
            rt.kill(spec.task_id, 0)
            deadline = time.monotonic() + 30
            while rt.poll(spec.task_id) is None and time.monotonic() < deadline:
                time.sleep(0.01)
            rt.cleanup(spec.task_id)  # done before the CLI runs, so that no teardown overlaps its timing
            # The baseline through the same API (the CLI's own start-up would flatter the ratio): a bare
            # create + start of the same image and command, none of the task's limits or labels.
            t0 = time.perf_counter()
            cid = client.api.create_container(IMAGE, ["sleep", "60"])["Id"]
            client.api.start(cid)
            base = (time.perf_counter() - t0) * 1000
            client.api.remove_container(cid, force=True)
            full, _ = _timed_cli([cli, "run", "--rm", IMAGE, "true"])
            if i >= warmup:
                start_ms.append(started)
                baseline_ms.append(base)
                to_exit_ms.append(full)
    finally:
        for c in client.api.containers(all=True, filters={"label": f"titus.agent_id={agent_id}"}):
            client.api.remove_container(c["Id"], force=True)
        rt.close()
        logs.cleanup()
    versions = client.version()
    cli_version = subprocess.run([cli, "--version"], capture_output=True, text=True, check=False).stdout
    client.close()
    p50_start, p50_base = statistics.median(start_ms), statistics.median(baseline_ms)
    return {
        "docker_start_p50_ms": round(p50_start, 1),
        "docker_start_p99_ms": round(pct(start_ms, 0.99), 1),
        "docker_run_baseline_p50_ms": round(p50_base, 1),
        "docker_run_baseline_p99_ms": round(pct(baseline_ms, 0.99), 1),
        "docker_run_to_exit_p50_ms": round(statistics.median(to_exit_ms), 1),
        "docker_start_ratio": round(p50_start / p50_base, 3),
        "runs": runs,
        "image": IMAGE,
        "dockerd_version": versions.get("Version"),
        "docker_cli": f"{cli}: {cli_version.strip()}",
        "cpus": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help=f"also write {RESULTS.relative_to(ROOT)}")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args(argv)
    result = run(args.runs)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
