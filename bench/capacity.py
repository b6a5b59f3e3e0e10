"""Capacity controller benchmark (issues 6 and 19): `python -m bench.capacity --json`.

Replays three seeded traces (`day`, `deploys`, `arrays`; see capacity/simulator.py) through the real
planner and three baselines (cluster-autoscaler, Karpenter, nomad-autoscaler's target value), same trace
and same boot-time distribution for each, and times one planner decision for 10,000 agents and 50,000
pending tasks (scale-up) and for 10,000 agents with nothing pending (consolidation). Prints every figure per
trace and policy and writes them all, with the goals met or not, to bench/results/capacity.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from capacity.model import (
    Agent,
    AgentState,
    CapacityGroup,
    Lifecycle,
    NodeGroupState,
    PendingTask,
    PlanInputs,
    Resources,
    RunningTask,
    Tier,
)
from capacity.planner import plan
from capacity.simulator import (
    INSTANCE,
    TRACES,
    ClusterAutoscalerPolicy,
    KarpenterPolicy,
    Policy,
    SimAgent,
    SimGroup,
    SimState,
    TargetUtilisationPolicy,
    TitusPolicy,
    Trace,
    TraceTask,
    default_tiers,
    simulate,
)
from master.core.disruption import Budget, JobView, TaskHealth

BOOT_S = (60.0, 180.0)
TASK_START_S = 15.0
SEED = 7


def big_inputs(seed: int = 1, agents: int = 10_000, tasks: int = 50_000, pending: bool = True) -> PlanInputs:
    """10,000 agents in 10 groups (2 critical, 8 flex), most busy, some idle or phased out; every running
    task is listed with its job (200 service jobs with budgets), so consolidation has its full input.
    Without `pending`, no task waits: the pass then consolidates instead of scaling up."""
    rng = random.Random(seed)
    groups = []
    for gi in range(10):
        tier = Tier.CRITICAL if gi < 2 else Tier.FLEX
        groups.append(
            NodeGroupState(
                f"asg-{gi}",
                tier,
                0,
                2000,
                agents // 10 + 20,
                "m5.4xlarge",
                INSTANCE,
                tuple(f"i-{gi}-{n}" for n in range(agents // 10 + 20)),
            )
        )
    now = 1_700_000_000.0
    agent_list = []
    job_tasks: dict[str, list[str]] = {}
    for n in range(agents):
        g = groups[n % 10]
        busy = rng.random() < 0.8
        lifecycle = Lifecycle.PHASED_OUT if rng.random() < 0.02 else Lifecycle.ACTIVE
        running = []
        if busy:
            for k in range(rng.randint(1, 6)):
                job = f"job-{rng.randrange(200)}"
                tid = f"t-{n}-{k}"
                job_tasks.setdefault(job, []).append(tid)
                cpu = rng.choice((1.0, 2.0))
                running.append(RunningTask(tid, job, Resources(cpu, cpu * 2048, 1024, 10)))
        used = Resources()
        for t in running:
            used = used + t.resources
        agent_list.append(
            Agent(
                f"agent-{n}",
                f"i-{n % 10}-{n // 10}",
                g.id,
                g.tier,
                lifecycle,
                AgentState.REGISTERED,
                INSTANCE,
                used,
                tuple(t.id for t in running),
                len(running) if g.tier is Tier.CRITICAL else 0,
                None if busy else now - rng.uniform(0, 3600),
                tuple(running),
            )
        )
    budget = Budget.from_wire(
        {
            "availabilityPercentageLimit": {"percentageOfHealthyContainers": 90},
            "ratePercentagePerHour": {"maxPercentageOfContainersRelocatedInHour": 20},
        }
    )
    jobs = {j: JobView(j, len(ts), budget, tuple(TaskHealth(t) for t in ts)) for j, ts in job_tasks.items()}
    waiting = tuple(
        PendingTask(
            f"p-{k}",
            Tier.CRITICAL if k % 10 == 0 else Tier.FLEX,
            Resources(rng.choice((1, 2, 4)), rng.choice((2048, 4096, 8192)), 10240, 100),
            now - rng.uniform(0, 120),
        )
        for k in range(tasks if pending else 0)
    )
    cgroups = tuple(
        CapacityGroup(f"app-{k}", Tier.CRITICAL, Resources(2, 4096, 10240, 100), 100) for k in range(50)
    )
    return PlanInputs(
        default_tiers(), cgroups, waiting, tuple(agent_list), tuple(groups), (), frozenset(), jobs, ()
    )


def time_planner(repeats: int = 7, pending: bool = True) -> tuple[float, list[float]]:
    inputs = big_inputs(pending=pending)
    now = 1_700_000_000.0
    plan(inputs, now)  # warm-up
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        plan(inputs, now)
        runs.append((time.perf_counter() - t0) * 1000)
    return statistics.median(runs), runs


def time_baseline(make_policy: Callable[[], Policy], repeats: int = 3) -> float:
    """The baselines' decision over the same scale: 10,000 agents and 50,000 pending tasks."""
    rng = random.Random(2)
    trace = Trace(
        tuple(
            TraceTask(k, Tier.FLEX, 0.0, 600.0, (1.0, 2048.0, 10240.0, 100.0), "batch", "")
            for k in range(50_000)
        ),
        (),
        0.0,
        1.0,
    )
    state = SimState(
        trace, [SimGroup("critical-a", Tier.CRITICAL, 0, 20_000), SimGroup("flex-a", Tier.FLEX, 0, 20_000)]
    )
    for n in range(10_000):
        tier = Tier.CRITICAL if n % 5 == 0 else Tier.FLEX
        a = SimAgent(f"i-{n}", "critical-a" if tier is Tier.CRITICAL else "flex-a", tier, -1000.0, -900.0)
        a.used = [rng.uniform(0, 16), rng.uniform(0, 65536), 0.0, 0.0]
        state.agents[a.id] = a
    for k in range(50_000):
        state.pending[k] = 0.0
    runs = []
    for _ in range(repeats):
        policy = make_policy()  # fresh: a cooldown from the previous repeat would skip the work
        t0 = time.perf_counter()
        policy.decide(state, 1.0)
        runs.append((time.perf_counter() - t0) * 1000)
    return statistics.median(runs)


POLICIES: dict[str, Callable[[], Policy]] = {
    "titus": lambda: TitusPolicy(default_tiers()),
    "cluster_autoscaler": ClusterAutoscalerPolicy,
    "karpenter": KarpenterPolicy,
    "karpenter_no_pdbs": lambda: KarpenterPolicy(honour_pdbs=False),
    "target_utilisation": TargetUtilisationPolicy,
}


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _goals(trace: str, figures: dict[str, dict[str, Any]]) -> dict[str, bool]:
    ours = figures["titus"]
    ca = figures["cluster_autoscaler"]
    goals = {
        f"{trace}: instance_hours_ratio <= 1.05": ours["instance_hours_ratio"] <= 1.05,
        f"{trace}: pending_p95_s <= cluster_autoscaler's": ours["pending_p95_s"] <= ca["pending_p95_s"],
        f"{trace}: critical_tasks_killed == 0": ours["critical_tasks_killed"] == 0,
        f"{trace}: budget_violations == 0": ours["budget_violations"] == 0,
        f"{trace}: tasks_evicted < cluster_autoscaler's": ours["tasks_evicted"] < ca["tasks_evicted"],
        f"{trace}: batch_tasks_evicted == 0": ours["batch_tasks_evicted"] == 0,
        f"{trace}: critical_below_reservation_minutes == 0": ours["critical_below_reservation_minutes"] == 0,
    }
    for name, base in figures.items():
        if name != "titus":
            goals[f"{trace}: flex instance-hours <= {name}'s"] = (
                ours["flex_instance_hours"] <= base["flex_instance_hours"]
            )
    return goals


def _one_run(job: tuple[str, str, int]) -> dict[str, Any]:
    name, policy_name, seed = job
    t0 = time.perf_counter()
    r = simulate(TRACES[name](), POLICIES[policy_name](), boot_s=BOOT_S, seed=seed, task_start_s=TASK_START_S)
    return {**r.to_json(), "sim_wall_s": round(time.perf_counter() - t0, 1)}


def run(seed: int = SEED, traces: tuple[str, ...] = tuple(TRACES), workers: int = 1) -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {}
    goals: dict[str, bool] = {}
    runs_todo = [(name, policy_name, seed) for name in traces for policy_name in POLICIES]
    # Runs are independent and deterministic: spread them over processes (the result does not depend on it).
    with multiprocessing.Pool(processes=max(1, min(workers, len(runs_todo)))) as pool:
        done = pool.map(_one_run, runs_todo, chunksize=1)
    for name in traces:
        figures = {p: f for (n, p, _), f in zip(runs_todo, done, strict=True) if n == name}
        for policy_name, f in figures.items():
            print(f"{name:8s} {policy_name:19s} {json.dumps(f)}", flush=True)
        results[name] = figures
        goals.update(_goals(name, figures))
    planner_ms, runs = time_planner()
    consolidation_ms, consolidation_runs = time_planner(pending=False)
    planner = {
        "titus_scale_up_ms": round(planner_ms, 1),
        "titus_consolidation_ms": round(consolidation_ms, 1),
        "titus_runs_ms": [round(r, 1) for r in runs + consolidation_runs],
        **{f"{n}_ms": round(time_baseline(m), 1) for n, m in POLICIES.items() if n != "titus"},
    }
    goals["planner_ms <= 200 (10,000 agents, 50,000 pending)"] = planner_ms <= 200
    goals["consolidation pass ms <= 200 (10,000 agents)"] = consolidation_ms <= 200
    return {
        "commit": _commit(),
        "machine": {
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
        },
        "settings": {
            "seed": seed,
            "boot_s_uniform": list(BOOT_S),
            "task_start_s": TASK_START_S,
            "tick_s": 10.0,
            "durability": "none: a pure simulation, no store",
            "workers": workers,
        },
        "traces": results,
        "planner": planner,
        "goals": goals,
        "all_goals_met": all(goals.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="write bench/results/capacity.json")
    parser.add_argument("--seed", type=int, default=SEED, help="seed of the boot-time draws")
    parser.add_argument("--trace", action="append", choices=sorted(TRACES), help="only these traces")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="simulations run in parallel processes"
    )
    args = parser.parse_args()
    report = run(args.seed, tuple(args.trace or TRACES), args.workers)
    print(json.dumps({k: report[k] for k in ("planner", "goals", "all_goals_met")}, indent=2))
    if args.json:
        path = Path(__file__).resolve().parent / "results" / "capacity.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
