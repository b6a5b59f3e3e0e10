"""Placement benchmark: the engine against plain first fit on the same seeded workload.

    python -m bench.scheduler --json [--tasks 100000] [--agents 10000] [--seed 7]

Four measurements, each in a fresh interpreter so peak RSS belongs to one of them alone:
  engine / first fit on the mixed cluster (3 instance types x 3 zones, critical and flex tiers):
      placements_per_s, zone_skew, peak_rss_mb;
  engine / first fit on a uniform-agent cluster (one instance type, flex tier, bin-packing jobs):
      agents_used_ratio = agents used / max over dimensions of ceil(total demand / agent capacity).
Only `schedule()` (or the first-fit loop) is timed there, not building the request. `placements_per_s` is
per cpu-second of the measuring process (what one core does, even on a busy machine);
`placements_per_s_wall` is per wall-clock second.

`master_pass` measures the whole pass as the master runs it: a real JobManager (SQLite store, synchronous
OFF so the disk is not what is timed) with `--master-agents` registered agents, fed 1,000-task jobs until
`--master-tasks` run; each `schedule_once()` is timed in wall-clock and cpu time, snapshot build (from the
task index), placement, state updates and the commit included, and the snapshot build alone is reported
beside it.

The uniform run leaves out `spread` jobs (they ask for emptier agents on purpose) and machineType
jobs (there is one type); everything else, zoneBalance, uniqueHost and soft zone preferences
included, is the same generator.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import random
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.facts import run_facts
from master.scheduler import (
    AgentView,
    CapacityGroupView,
    PendingTask,
    Resources,
    ScheduleRequest,
    schedule,
)
from master.scheduler.constraints import parse_constraints

ZONES = ("us-east-1a", "us-east-1b", "us-east-1c")


@dataclass(frozen=True)
class InstanceType:
    name: str
    cpu: float
    memory_mb: int
    disk_mb: int
    network_mbps: int

    def resources(self) -> Resources:
        return Resources(self.cpu, self.memory_mb, self.disk_mb, self.network_mbps)


MIXED_TYPES = (
    InstanceType("m5.4xlarge", 16, 65_536, 256_000, 10_000),
    InstanceType("r5.4xlarge", 16, 131_072, 256_000, 10_000),
    InstanceType("c5.9xlarge", 36, 73_728, 256_000, 10_000),
)
UNIFORM_TYPE = InstanceType("m5.8xlarge", 32, 131_072, 512_000, 10_000)

# (cpu, memory MB, disk MB, network Mbps), relative frequency: mostly small, a tail of big ones.
SHAPES: tuple[tuple[tuple[float, int, int, int], int], ...] = (
    ((0.5, 1024, 2_000, 64), 20),
    ((1.0, 2048, 5_000, 128), 25),
    ((1.0, 4096, 10_000, 128), 15),
    ((2.0, 4096, 10_000, 256), 12),
    ((2.0, 8192, 20_000, 256), 10),
    ((4.0, 8192, 20_000, 512), 6),
    ((4.0, 16_384, 40_000, 512), 4),
    ((1.0, 16_384, 10_000, 128), 4),
    ((6.0, 4096, 10_000, 512), 3),
    ((8.0, 24_576, 60_000, 1000), 1),
)

# Job kinds: (name, weight, hard constraints, soft constraints, spread)
KINDS: tuple[tuple[str, int, dict[str, str], dict[str, str], bool], ...] = (
    ("batch", 55, {}, {}, False),
    ("service-zone-balanced", 20, {"zoneBalance": "true"}, {}, False),
    ("unique-host", 6, {"uniqueHost": "true"}, {}, False),
    ("prefers-zone", 6, {}, {"availabilityZone": "<zone>"}, False),
    ("machine-type", 5, {"machineType": "<type>"}, {}, False),
    ("critical-spread", 8, {}, {"zoneBalance": "true"}, True),
)

CRITICAL_GROUPS = ("payments", "playback", "search")
FLEX_GROUPS = ("DEFAULT", "encoding", "analytics", "ml-training")


@dataclass(frozen=True)
class Workload:
    tasks: list[PendingTask]
    agents: list[AgentView]
    groups: list[CapacityGroupView]
    agent_capacity: Resources | None  # set on the uniform run: the one instance type


def generate(n_tasks: int, n_agents: int, seed: int, uniform: bool) -> Workload:
    """A seeded cluster and a queue of jobs' tasks, in submission order."""
    rnd = random.Random(seed)
    agents: list[AgentView] = []
    types = (UNIFORM_TYPE,) if uniform else MIXED_TYPES
    critical_agents = 0 if uniform else n_agents // 5
    for i in range(n_agents):
        itype = types[i % len(types)]
        zone = ZONES[(i // len(types)) % len(ZONES)]
        tier = "critical" if i < critical_agents else "flex"
        agent_id = f"i-{i:08x}"
        agents.append(
            AgentView(
                agent_id=agent_id,
                instance_group=f"{tier}-{itype.name}",
                tier=tier,  # type: ignore[arg-type]
                lifecycle="Active",
                total=itype.resources(),
                used=Resources(),
                attributes={"zone": zone, "instanceType": itype.name, "id": agent_id},
            )
        )
    shapes = [s for s, _ in SHAPES]
    shape_weights = [w for _, w in SHAPES]
    kinds = [k for k in KINDS if not (uniform and (k[4] or k[0] == "machine-type"))]
    kind_weights = [k[1] for k in kinds]
    tasks: list[PendingTask] = []
    job = 0
    while len(tasks) < n_tasks:
        job += 1
        name, _, hard, soft, spread = rnd.choices(kinds, kind_weights)[0]
        critical = not uniform and (spread or rnd.random() < 0.08)
        group = rnd.choice(CRITICAL_GROUPS) if critical else rnd.choice(FLEX_GROUPS)
        cpu, mem, disk, net = rnd.choices(shapes, shape_weights)[0]
        size = min(rnd.randint(1, 40), n_tasks - len(tasks))
        if name == "unique-host":
            size = min(size, 12)
        zone = rnd.choice(ZONES)
        type_name = rnd.choice(types).name
        fill: dict[str, str] = {"<zone>": zone, "<type>": type_name}
        job_hard: dict[str, str] = {k: fill.get(v, v) for k, v in hard.items()}
        job_soft: dict[str, str] = {k: fill.get(v, v) for k, v in soft.items()}
        for t in range(size):
            tasks.append(
                PendingTask(
                    task_id=f"job{job}-{t}",
                    job_id=f"job{job}",
                    resources=Resources(cpu, mem, disk, net),
                    capacity_group=group,
                    tier="critical" if critical else "flex",
                    hard_constraints=job_hard,
                    soft_constraints=job_soft,
                    spread=spread,
                )
            )
    groups: list[CapacityGroupView] = []
    for g in CRITICAL_GROUPS if not uniform else ():
        groups.append(
            CapacityGroupView(g, "critical", Resources(4, 16_384, 40_000, 512).scale(1200), Resources())
        )
    for g in FLEX_GROUPS:
        groups.append(
            CapacityGroupView(g, "flex", Resources(4, 16_384, 40_000, 512).scale(2000), Resources())
        )
    return Workload(tasks, agents, groups, UNIFORM_TYPE.resources() if uniform else None)


def first_fit(tasks: Sequence[PendingTask], agents: Sequence[AgentView]) -> dict[str, str]:
    """The core issue's scheduler: each task on the first Active agent of its tier with room."""
    free = [[a.total.cpu - a.used.cpu, a.total.memory_mb - a.used.memory_mb, a.total.disk_mb - a.used.disk_mb,
             a.total.network_mbps - a.used.network_mbps] for a in agents]  # fmt: skip
    usable = [a.lifecycle == "Active" for a in agents]
    tiers = [a.tier for a in agents]
    placed: dict[str, str] = {}
    for task in tasks:
        r = task.resources
        cpu, mem, disk, net = r.cpu, r.memory_mb, r.disk_mb, r.network_mbps
        tier = task.tier
        for i, f in enumerate(free):
            if (
                f[0] >= cpu
                and f[1] >= mem
                and f[2] >= disk
                and f[3] >= net
                and usable[i]
                and tiers[i] == tier
            ):
                f[0] -= cpu
                f[1] -= mem
                f[2] -= disk
                f[3] -= net
                placed[task.task_id] = agents[i].agent_id
                break
    return placed


def zone_skew(w: Workload, placed: dict[str, str]) -> tuple[int, int]:
    """(worst per-job skew, skew of all zoneBalance tasks together): max minus min tasks per zone."""
    zone_of = {a.agent_id: a.attributes["zone"] for a in w.agents}
    per_job: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(ZONES, 0))
    total = dict.fromkeys(ZONES, 0)
    for t in w.tasks:
        balanced = parse_constraints(t.hard_constraints).zone_balance
        if balanced and t.task_id in placed:
            zone = zone_of[placed[t.task_id]]
            per_job[t.job_id][zone] += 1
            total[zone] += 1
    worst = max((max(c.values()) - min(c.values()) for c in per_job.values()), default=0)
    return worst, max(total.values()) - min(total.values())


def agents_used_ratio(w: Workload, placed: dict[str, str]) -> tuple[float, int, int]:
    cap = w.agent_capacity
    assert cap is not None
    demand = [0.0, 0, 0, 0]
    for t in w.tasks:
        if t.task_id in placed:
            r = t.resources
            demand[0] += r.cpu
            demand[1] += r.memory_mb
            demand[2] += r.disk_mb
            demand[3] += r.network_mbps
    capacity = (cap.cpu, cap.memory_mb, cap.disk_mb, cap.network_mbps)
    bound = max(math.ceil(d / c - 1e-9) for d, c in zip(demand, capacity, strict=True))
    used = len(set(placed.values()))
    return (used / bound if bound else 1.0), used, bound


def engine_in_passes(w: Workload, batch: int) -> tuple[dict[str, str], float, float]:
    """The engine over successive passes of `batch` tasks, carrying each pass's placements into the
    next snapshot as the master's loop would; only the `schedule()` calls are timed."""
    agents = {a.agent_id: a for a in w.agents}
    groups = {g.name: g for g in w.groups}
    zone_counts: dict[str, dict[str, int]] = defaultdict(dict)
    placed: dict[str, str] = {}
    cpu = wall = 0.0
    for first in range(0, len(w.tasks), batch):
        chunk = w.tasks[first : first + batch]
        request = ScheduleRequest(
            tasks=chunk, agents=list(agents.values()), capacity_groups=list(groups.values()),
            job_zone_counts=zone_counts,
        )  # fmt: skip
        start, start_cpu = time.perf_counter(), time.process_time()
        reply = schedule(request)
        cpu += time.process_time() - start_cpu
        wall += time.perf_counter() - start
        by_id = {t.task_id: t for t in chunk}
        for a in reply.assignments:
            t, agent = by_id[a.task_id], agents[a.agent_id]
            jobs = dict(agent.job_task_counts)
            jobs[t.job_id] = jobs.get(t.job_id, 0) + 1
            exclusive = agent.exclusive or parse_constraints(t.hard_constraints).exclusive_host
            agents[a.agent_id] = replace(
                agent, used=agent.used.add(t.resources), job_task_counts=jobs, exclusive=exclusive
            )
            group = groups.get(t.capacity_group)
            if group is not None:
                groups[group.name] = replace(group, used=group.used.add(t.resources))
            zone = agent.attributes["zone"]
            zone_counts[t.job_id][zone] = zone_counts[t.job_id].get(zone, 0) + 1
            placed[a.task_id] = a.agent_id
    return placed, cpu, wall


def run_one(
    algorithm: str, uniform: bool, n_tasks: int, n_agents: int, seed: int, batch: int = 0
) -> dict[str, Any]:
    """One measurement; meant to run in its own process. `batch` > 0: the engine in passes of that size."""
    w = generate(n_tasks, n_agents, seed, uniform)
    start, start_cpu = time.perf_counter(), time.process_time()
    if algorithm == "engine" and batch > 0:
        placed, cpu, wall = engine_in_passes(w, batch)
    else:
        if algorithm == "engine":
            reply = schedule(ScheduleRequest(tasks=w.tasks, agents=w.agents, capacity_groups=w.groups))
            placed = {a.task_id: a.agent_id for a in reply.assignments}
        else:
            placed = first_fit(w.tasks, w.agents)
        cpu = time.process_time() - start_cpu
        wall = time.perf_counter() - start
    out: dict[str, Any] = {
        "tasks": len(w.tasks),
        "agents": len(w.agents),
        "passes": -(-len(w.tasks) // batch) if algorithm == "engine" and batch > 0 else 1,
        "placed": len(placed),
        "cpu_seconds": round(cpu, 3),
        "wall_seconds": round(wall, 3),
        # Per cpu-second of this process: "on one core", whatever else the machine is running.
        "placements_per_s": round(len(placed) / cpu, 1),
        "placements_per_s_wall": round(len(placed) / wall, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if uniform:
        ratio, used, bound = agents_used_ratio(w, placed)
        out.update(agents_used_ratio=round(ratio, 4), agents_used=used, agents_lower_bound=bound)
    else:
        worst, total = zone_skew(w, placed)
        out.update(zone_skew=worst, zone_skew_all_tasks=total)
    return out


def _child(args: tuple[str, bool, int, int, int, int]) -> dict[str, Any]:
    return run_one(*args)


def master_pass(n_agents: int, n_tasks: int, job_size: int = 1000) -> dict[str, Any]:
    """Scheduling passes through a real JobManager (see the module docstring); runs in its own process."""
    import tempfile

    from master.api.models import AgentRegistration, JobDescriptor
    from master.job_manager import JobManager
    from master.store.sqlite import SqliteJobStore

    data = Path(tempfile.mkdtemp(prefix="titus-sched-bench-"))
    jm = JobManager(SqliteJobStore(data / "t.db", "OFF"), lambda: int(time.time() * 1000))
    jm.start(init_cluster=True)
    for i in range(n_agents):
        jm.register_agent(AgentRegistration.model_validate({
            "id": f"agent-{i}", "attributes": {"zone": ZONES[i % len(ZONES)]},
            "resources": {"cpu": 32, "memoryMB": 131_072, "diskMB": 1_000_000, "networkMbps": 10_000},
        }))  # fmt: skip
    spec = JobDescriptor.model_validate({
        "owner": {"teamEmail": "bench@example.com"}, "applicationName": "sched-bench",
        "container": {"resources": {"cpu": 0.5, "memoryMB": 512, "diskMB": 100, "networkMbps": 10},
                      "image": {"name": "busybox", "tag": "latest"}, "command": ["/bin/true"]},
        "batch": {"size": job_size, "retryPolicy": {"immediate": {"retries": 0}}},
    })  # fmt: skip
    snapshot_s = [0.0]
    build = jm._schedule_request

    def timed_build(*args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return build(*args)
        finally:
            snapshot_s[0] += time.perf_counter() - t0

    jm._schedule_request = timed_build  # type: ignore[method-assign,assignment]
    wall = cpu = 0.0
    placed = passes = 0
    first_pass_ms = last_pass_ms = 0.0
    while placed < n_tasks:
        jm.submit(spec)
        t0, c0 = time.perf_counter(), time.process_time()
        n = jm.schedule_once()
        elapsed = time.perf_counter() - t0
        wall += elapsed
        cpu += time.process_time() - c0
        placed += n
        passes += 1
        last_pass_ms = elapsed * 1000
        if passes == 1:
            first_pass_ms = last_pass_ms
        if n == 0:
            break
    jm.store.close()
    return {
        "agents": n_agents,
        "placed": placed,
        "passes": passes,
        "placements_per_s_wall": round(placed / wall, 1) if wall else float("nan"),
        "placements_per_s": round(placed / cpu, 1) if cpu else float("nan"),
        "snapshot_build_ms_per_pass": round(snapshot_s[0] / passes * 1000, 2),
        "pass_ms_first": round(first_pass_ms, 1),
        "pass_ms_last": round(last_pass_ms, 1),
        "running_tasks_at_last_pass": placed,
    }


def _master_child(args: tuple[int, int]) -> dict[str, Any]:
    return master_pass(*args)


def measure(algorithm: str, n_tasks: int, n_agents: int, seed: int, batch: int = 0) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    results = {}
    for uniform in (False, True):
        with ctx.Pool(1) as pool:
            results[uniform] = pool.apply(_child, ((algorithm, uniform, n_tasks, n_agents, seed, batch),))
    mixed, flat = results[False], results[True]
    return {
        "placements_per_s": mixed["placements_per_s"],
        "agents_used_ratio": flat["agents_used_ratio"],
        "zone_skew": mixed["zone_skew"],
        "peak_rss_mb": max(mixed["peak_rss_mb"], flat["peak_rss_mb"]),
        "mixed_run": mixed,
        "uniform_run": flat,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--baseline-tasks", type=int, default=None, help="first-fit size (default: --tasks)")
    parser.add_argument(
        "--baseline-agents", type=int, default=None, help="first-fit size (default: --agents)"
    )
    parser.add_argument(
        "--batch", type=int, default=0, help="engine in passes of this many tasks (default: one pass)"
    )
    parser.add_argument("--master-agents", type=int, default=5000)
    parser.add_argument("--master-tasks", type=int, default=50_000)
    parser.add_argument("--json", action="store_true", help="write bench/results/scheduler.json")
    args = parser.parse_args(argv)
    result = measure("engine", args.tasks, args.agents, args.seed, args.batch)
    base_tasks = args.baseline_tasks or args.tasks
    base_agents = args.baseline_agents or args.agents
    result["baseline"] = {
        "algorithm": "first fit",
        **measure("first-fit", base_tasks, base_agents, args.seed),
    }
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        result["master_pass"] = pool.apply(_master_child, ((args.master_agents, args.master_tasks),))
    result.update(run_facts(sqlite_synchronous_master_pass="OFF"))
    result["goals"] = {
        "placements_per_s": ">= 20000",
        "agents_used_ratio": "<= 1.05",
        "peak_rss_mb": "<= 1024",
    }
    result["params"] = {
        "tasks": args.tasks, "agents": args.agents, "seed": args.seed, "batch": args.batch,
        "python": sys.version,
    }  # fmt: skip
    mp_ = result["master_pass"]
    print(
        f"master pass: {mp_['placements_per_s_wall']:,.0f} placements/s wall ({mp_['placements_per_s']:,.0f}"
        f" per cpu-s), snapshot build {mp_['snapshot_build_ms_per_pass']} ms/pass, pass "
        f"{mp_['pass_ms_first']} ms first -> {mp_['pass_ms_last']} ms last at {mp_['placed']} running tasks"
    )
    for name, figures in (("engine", result), ("first fit", result["baseline"])):
        print(
            f"{name:>9}: {figures['placements_per_s']:>10,.0f} placements/s  "
            f"agents used {figures['agents_used_ratio']:.3f}x lower bound  "
            f"zone skew {figures['zone_skew']}  peak RSS {figures['peak_rss_mb']:.0f} MB  "
            f"(placed {figures['mixed_run']['placed']}/{figures['mixed_run']['tasks']})"
        )
    if args.json:
        out = Path(__file__).parent / "results" / "scheduler.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
