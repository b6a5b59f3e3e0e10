"""Capacity controller benchmark (issue 6): `python -m bench.capacity --json`.

Replays one seeded day through the real planner and two baselines (same trace, same run) and times one
planner decision for 10,000 agents and 50,000 pending tasks. Writes bench/results/capacity.json with the
issue's keys plus `baselines`; prints the details and the goals to stdout.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
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
    Tier,
)
from capacity.planner import plan
from capacity.simulator import (
    INSTANCE,
    ClusterAutoscalerPolicy,
    Policy,
    SimAgent,
    SimGroup,
    SimState,
    TargetUtilisationPolicy,
    TitusPolicy,
    Trace,
    TraceTask,
    default_tiers,
    make_trace,
    simulate,
)

KEYS = (
    "instance_hours_ratio",
    "pending_p95_s",
    "critical_below_reservation_minutes",
    "critical_tasks_killed",
    "scale_actions",
)
BOOT_S = 90.0
SEED = 7


def big_inputs(seed: int = 1, agents: int = 10_000, tasks: int = 50_000) -> PlanInputs:
    """10,000 agents in 10 groups (2 critical, 8 flex), half busy, some idle or phased out."""
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
    for n in range(agents):
        g = groups[n % 10]
        busy = rng.random() < 0.8
        lifecycle = Lifecycle.PHASED_OUT if rng.random() < 0.02 else Lifecycle.ACTIVE
        used = Resources(rng.uniform(1, 16), rng.uniform(1024, 65536), 10240, 100) if busy else Resources()
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
                tuple(f"t-{n}-{k}" for k in range(rng.randint(1, 6))) if busy else (),
                1 if busy and g.tier is Tier.CRITICAL else 0,
                None if busy else now - rng.uniform(0, 3600),
            )
        )
    pending = tuple(
        PendingTask(
            f"p-{k}",
            Tier.CRITICAL if k % 10 == 0 else Tier.FLEX,
            Resources(rng.choice((1, 2, 4)), rng.choice((2048, 4096, 8192)), 10240, 100),
            now - rng.uniform(0, 120),
        )
        for k in range(tasks)
    )
    cgroups = tuple(
        CapacityGroup(f"app-{k}", Tier.CRITICAL, Resources(2, 4096, 10240, 100), 100) for k in range(50)
    )
    return PlanInputs(default_tiers(), cgroups, pending, tuple(agent_list), tuple(groups), ())


def time_planner(repeats: int = 7) -> tuple[float, list[float]]:
    inputs = big_inputs()
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
            TraceTask(k, Tier.FLEX, 0.0, 600.0, (1.0, 2048.0, 10240.0, 100.0), "batch") for k in range(50_000)
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


def run(seed: int = SEED) -> dict[str, Any]:
    trace = make_trace(seed)
    results: dict[str, Any] = {}
    details: dict[str, Any] = {}
    for policy in (TitusPolicy(default_tiers()), ClusterAutoscalerPolicy(), TargetUtilisationPolicy()):
        t0 = time.perf_counter()
        r = simulate(trace, policy, boot_s=BOOT_S)
        doc = r.to_json()
        details[policy.name] = {**doc, "sim_wall_s": round(time.perf_counter() - t0, 1)}
        results[policy.name] = {k: doc[k] for k in KEYS}
    planner_ms, runs = time_planner()
    out: dict[str, Any] = {**results["titus"], "planner_ms": round(planner_ms, 1)}
    out["baselines"] = {
        "cluster_autoscaler": {
            **results["cluster_autoscaler"],
            "planner_ms": round(time_baseline(ClusterAutoscalerPolicy), 1),
        },
        "target_utilisation": {
            **results["target_utilisation"],
            "planner_ms": round(time_baseline(TargetUtilisationPolicy), 1),
        },
    }
    threshold = default_tiers()[Tier.FLEX].pending_threshold_s
    goals = {
        "instance_hours_ratio <= 1.15": out["instance_hours_ratio"] <= 1.15,
        f"pending_p95_s <= threshold + boot ({threshold + BOOT_S:g})": out["pending_p95_s"]
        <= threshold + BOOT_S,
        "critical_below_reservation_minutes == 0": out["critical_below_reservation_minutes"] == 0,
        "critical_tasks_killed == 0": out["critical_tasks_killed"] == 0,
        "planner_ms <= 200": out["planner_ms"] <= 200,
    }
    for name, base in out["baselines"].items():
        goals[f"beats {name} on instance-hours at equal or better p95"] = (
            out["instance_hours_ratio"] < base["instance_hours_ratio"]
            and out["pending_p95_s"] <= base["pending_p95_s"]
        )
    return {"result": out, "details": details, "planner_runs_ms": [round(r, 1) for r in runs], "goals": goals}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="write bench/results/capacity.json")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    report = run(args.seed)
    print(json.dumps(report, indent=2))
    if args.json:
        path = Path(__file__).resolve().parent / "results" / "capacity.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report["result"], indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
