"""Cluster benchmark: the real master with many simulated agents on the real agent channel.

    python -m bench.cluster --json [--agents 5000] [--steps 500,1000,2500,5000] [--tasks-per-agent 10]
                                   [--duration 10] [--long-polls 32]

The master runs in its own process (SQLite, synchronous=FULL, the same MasterServer as `titus master`).
The simulated agents run in another process: they register over HTTP, fetch their desired sets and report
their tasks Started over the agent channel, heartbeat (a status report listing what they run) and, for
`--long-polls` of them, hold real long polls. Nothing is started on any host: the agents only speak the
protocol. The cluster grows through `--steps`; at each size:

1. agents register, then batch jobs fill the cluster to `tasks-per-agent` running tasks per agent;
2. scheduling pass cost: a 100-task probe job; the master's own pass histogram (titus_scheduling_pass_seconds,
   snapshot build + placement + commit) gives the time per pass and per placement;
3. steady state for `duration` seconds: every agent heartbeats as fast as a 1 s interval allows with
   `--heartbeat-threads` client threads, while 4 clients submit unplaceable one-task jobs (their latency
   is the submissions p50/p99); heartbeats/s is what the master handled; master RSS from /proc.

Figures are printed and written to bench/results/cluster.json with the commit, the machine and its load.
The goals are the issue's (submissions p99 <= 100 ms, >= 5,000 heartbeats/s, RSS <= 2 GB, pass cost flat
in running tasks); on a shared 2-core machine the heartbeat rate is bounded by the CPU, and the report says
which step reached what.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.facts import load_now, run_facts

RESULTS = Path(__file__).parent / "results"
API_TOKEN = "bench-api-token"
AGENT_TOKEN = "bench-agent-token"
ZONES = ("z1", "z2", "z3")


# ------------------------------------------------------------------------------------------- the master
def _serve(port: int, data_dir: str, heartbeat_timeout_ms: int, ready: Any) -> None:
    import logging

    from master.server import MasterConfig, MasterServer

    logging.basicConfig(level=logging.WARNING)
    config = MasterConfig(
        port=port,
        data_dir=Path(data_dir),
        api_token=API_TOKEN,
        agent_token=AGENT_TOKEN,
        sqlite_synchronous="FULL",
        heartbeat_timeout_ms=heartbeat_timeout_ms,
        threads=96,
        init_cluster=True,
    )
    server = MasterServer(config)
    ready.put(server.port)
    server.serve_forever()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


class Http:
    """One keep-alive connection; reconnects on errors."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(3):
            try:
                self.conn.request(method, path, body=data, headers=self.headers)
                resp = self.conn.getresponse()
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw else None)
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def _metrics(port: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {API_TOKEN}"})
    text = conn.getresponse().read().decode()
    conn.close()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


# -------------------------------------------------------------------------------- the simulated agents
class Fleet:
    """Simulated agents; each holds its session and the tasks the master gave it."""

    def __init__(self, port: int, threads: int) -> None:
        self.port = port
        self.threads = threads
        self.sessions: dict[str, int] = {}
        self.versions: dict[str, int] = {}
        self.running: dict[str, list[str]] = {}
        self._local = threading.local()

    def _http(self) -> Http:
        h = getattr(self._local, "http", None)
        if h is None:
            h = self._local.http = Http(self.port, AGENT_TOKEN)
        return h

    def _each(self, agent_ids: list[str], body: Callable[[str], None]) -> None:
        work: queue.SimpleQueue[str] = queue.SimpleQueue()
        for a in agent_ids:
            work.put(a)

        def run() -> None:
            while True:
                try:
                    a = work.get_nowait()
                except queue.Empty:
                    return
                body(a)

        pool = [threading.Thread(target=run) for _ in range(self.threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()

    def register(self, agent_ids: list[str]) -> None:
        def one(a: str) -> None:
            n = int(a.rsplit("-", 1)[1])
            status, body = self._http().call("POST", "/api/v3/agent/instances/register", {
                "id": a,
                "resources": {"cpu": 32, "memoryMB": 131_072, "diskMB": 1_000_000, "networkMbps": 10_000},
                "attributes": {"zone": ZONES[n % len(ZONES)], "instanceType": "sim.8xlarge"},
                "runningTaskIds": self.running.get(a, []),
            })  # fmt: skip
            assert status == 200, body
            self.sessions[a] = int(body["sessionEpoch"])
            self.versions[a] = 0
            self.running.setdefault(a, [])

        self._each(agent_ids, one)

    def converge(self, agent_ids: list[str]) -> int:
        """Fetch each agent's desired set (no wait) and report its new tasks Started; returns how many."""
        started = [0]
        lock = threading.Lock()

        def one(a: str) -> None:
            status, body = self._http().call(
                "GET",
                f"/api/v3/agent/instances/{a}/assignments?since={self.versions[a]}"
                f"&session={self.sessions[a]}&waitMs=0",
            )
            assert status == 200, body
            self.versions[a] = int(body["version"])
            mine = set(self.running[a])
            new = [t["taskId"] for t in body["tasks"] if not t.get("kill") and t["taskId"] not in mine]
            if not new:
                return
            updates = [{"taskId": t, "state": s} for t in new for s in ("StartInitiated", "Started")]
            self.running[a] = self.running[a] + new
            status, body = self._http().call("POST", f"/api/v3/agent/instances/{a}/status", {
                "sessionEpoch": self.sessions[a], "updates": updates, "runningTaskIds": self.running[a],
            })  # fmt: skip
            assert status == 200, body
            with lock:
                started[0] += len(new)

        self._each(agent_ids, one)
        return started[0]

    def heartbeats(self, agent_ids: list[str], seconds: float) -> tuple[int, int]:
        """Every agent reports once per second at most, for `seconds`; returns (sent, failed)."""
        stop_at = time.monotonic() + seconds
        counts = [0, 0]
        lock = threading.Lock()
        slices = [agent_ids[i :: self.threads] for i in range(self.threads)]

        def run(mine: list[str]) -> None:
            h = Http(self.port, AGENT_TOKEN)
            sent = failed = 0
            while time.monotonic() < stop_at:
                round_start = time.monotonic()
                for a in mine:
                    if time.monotonic() >= stop_at:
                        break
                    status, _ = h.call("POST", f"/api/v3/agent/instances/{a}/status", {
                        "sessionEpoch": self.sessions[a], "runningTaskIds": self.running[a],
                        "host": {"cpuPct": 10.0},
                    })  # fmt: skip
                    if status == 200:
                        sent += 1
                    else:
                        failed += 1
                idle = 1.0 - (time.monotonic() - round_start)
                if idle > 0:
                    time.sleep(min(idle, max(0.0, stop_at - time.monotonic())))
            with lock:
                counts[0] += sent
                counts[1] += failed

        pool = [threading.Thread(target=run, args=(s,)) for s in slices if s]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        return counts[0], counts[1]

    def long_polls(self, agent_ids: list[str], stop: threading.Event) -> list[threading.Thread]:
        def run(a: str) -> None:
            h = Http(self.port, AGENT_TOKEN)
            version = self.versions[a]
            while not stop.is_set():
                status, body = h.call(
                    "GET",
                    f"/api/v3/agent/instances/{a}/assignments?since={version}"
                    f"&session={self.sessions[a]}&waitMs=5000",
                )
                if status == 200:
                    version = int(body["version"])

        threads = [threading.Thread(target=run, args=(a,), daemon=True) for a in agent_ids]
        for t in threads:
            t.start()
        return threads


def _job(size: int, cpu: float) -> dict[str, Any]:
    return {
        "owner": {"teamEmail": "bench@example.com"},
        "applicationName": "cluster-bench",
        "container": {
            "resources": {"cpu": cpu, "memoryMB": 256, "diskMB": 100, "networkMbps": 10},
            "image": {"name": "busybox", "tag": "latest"},
            "command": ["/bin/sleep", "86400"],
        },
        "batch": {"size": size, "retryPolicy": {"immediate": {"retries": 0}}, "runtimeLimitSec": 864000},
    }


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def _submitters(port: int, seconds: float, clients: int) -> list[float]:
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def run() -> None:
        h = Http(port, API_TOKEN)
        mine = []
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            status, _ = h.call("POST", "/api/v3/jobs", _job(1, 64.0))  # more cpu than any agent: pending
            if status == 202:
                mine.append((time.perf_counter() - t0) * 1000)
        with lock:
            latencies.extend(mine)

    pool = [threading.Thread(target=run) for _ in range(clients)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return latencies


def _placed(port: int) -> float:
    """Placements the master completed (counted after their commit, unlike the Launched gauge)."""
    return _metrics(port).get("titus_tasks_placed_total", 0.0)


def _wait_placed(port: int, target: float, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while _placed(port) < target:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the master placed {_placed(port)} of {target} tasks in {timeout_s} s")
        time.sleep(0.05)


def _fill(port: int, fleet: Fleet, agent_ids: list[str], target_running: int) -> float:
    """Submit 1,000-task jobs up to `target_running` tasks, wait for their placement, then let every agent
    fetch its desired set and report its tasks Started; returns the seconds it took."""
    t0 = time.monotonic()
    api = Http(port, API_TOKEN)
    missing = target_running - sum(len(fleet.running[a]) for a in agent_ids)
    goal = _placed(port) + max(missing, 0)
    while missing > 0:
        size = min(1000, missing)
        status, body = api.call("POST", "/api/v3/jobs", _job(size, 0.5))
        assert status == 202, body
        missing -= size
    _wait_placed(port, goal)
    fleet.converge(agent_ids)
    return round(time.monotonic() - t0, 1)


def _probe_pass(port: int, fleet: Fleet, agent_ids: list[str]) -> dict[str, float]:
    before = _metrics(port)
    api = Http(port, API_TOKEN)
    status, body = api.call("POST", "/api/v3/jobs", _job(100, 0.5))
    assert status == 202, body
    _wait_placed(port, before.get("titus_tasks_placed_total", 0.0) + 100)
    after = _metrics(port)
    fleet.converge(agent_ids)
    passes = after["titus_scheduling_pass_seconds_count"] - before["titus_scheduling_pass_seconds_count"]
    seconds = after["titus_scheduling_pass_seconds_sum"] - before["titus_scheduling_pass_seconds_sum"]
    placed = after["titus_tasks_placed_total"] - before["titus_tasks_placed_total"]
    return {
        "probe_passes": passes,
        "probe_placed": placed,
        "pass_ms": round(seconds / passes * 1000, 2) if passes else float("nan"),
        "pass_ms_per_placement": round(seconds / placed * 1000, 3) if placed else float("nan"),
    }


def _fleet_main(port: int, args: dict[str, Any], master_pid: int, out: Any) -> None:
    """Runs in its own process so the simulated agents do not share the master's GIL."""
    fleet = Fleet(port, args["threads"])
    steps = []
    registered: list[str] = []
    stop_polls = threading.Event()
    for size in args["steps"]:
        new = [f"sim-{i}" for i in range(len(registered), size)]
        t0 = time.monotonic()
        fleet.register(new)
        register_s = round(time.monotonic() - t0, 1)
        if not registered:
            fleet.long_polls(new[: args["long_polls"]], stop_polls)
        registered += new
        fill_s = _fill(port, fleet, registered, size * args["tasks_per_agent"])
        probe = _probe_pass(port, fleet, registered)
        latencies: list[float] = []
        submitter = threading.Thread(
            target=lambda out=latencies: out.extend(_submitters(port, args["duration"], 4))
        )
        submitter.start()
        t0 = time.monotonic()
        sent, failed = fleet.heartbeats(registered, args["duration"])
        elapsed = time.monotonic() - t0
        submitter.join()
        lat = latencies
        metrics = _metrics(port)
        steps.append({
            "agents": size,
            "running_tasks": sum(len(fleet.running[a]) for a in registered),
            "register_s": register_s,
            "fill_s": fill_s,
            **probe,
            "heartbeats_per_s": round(sent / elapsed, 1),
            "heartbeat_failures": failed,
            "submissions": len(lat),
            "submit_p50_ms": _pct(lat, 0.5),
            "submit_p99_ms": _pct(lat, 0.99),
            "master_rss_mb": _rss_mb(master_pid),
            "agents_lost": metrics.get('titus_agents{state="Lost"}', 0.0),
            "load_average": load_now(),
        })  # fmt: skip
        print(json.dumps(steps[-1]), flush=True)
    stop_polls.set()
    out.put(steps)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=5000)
    parser.add_argument("--steps", default="500,1000,2500,5000")
    parser.add_argument("--tasks-per-agent", type=int, default=10)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--long-polls", type=int, default=32)
    parser.add_argument("--heartbeat-threads", type=int, default=16)
    # Long: while a step fills the cluster the simulated agents send no heartbeats.
    parser.add_argument("--heartbeat-timeout-ms", type=int, default=900_000)
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--json", action="store_true", help="write bench/results/cluster.json")
    a = parser.parse_args()
    steps = sorted({min(int(s), a.agents) for s in a.steps.split(",")} | {a.agents})
    facts = run_facts(sqlite_synchronous="FULL", heartbeat_timeout_ms=a.heartbeat_timeout_ms,
                      heartbeat_threads=a.heartbeat_threads, long_polls=a.long_polls)  # fmt: skip
    ctx = mp.get_context("spawn")
    data_dir = tempfile.mkdtemp(prefix="titus-cluster-bench-")
    port = a.port
    if port == 0:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    ready: Any = ctx.Queue()
    master = ctx.Process(target=_serve, args=(port, data_dir, a.heartbeat_timeout_ms, ready), daemon=True)
    master.start()
    try:
        ready.get(timeout=60)
        deadline = time.monotonic() + 60
        while True:
            try:
                _metrics(port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        out: Any = ctx.Queue()
        args = {"steps": steps, "threads": a.heartbeat_threads, "tasks_per_agent": a.tasks_per_agent,
                "duration": a.duration, "long_polls": a.long_polls}  # fmt: skip
        assert master.pid is not None
        fleet = ctx.Process(target=_fleet_main, args=(port, args, master.pid, out))
        fleet.start()
        results = out.get(timeout=7200)
        fleet.join()
    finally:
        master.terminate()
        master.join(timeout=30)
        shutil.rmtree(data_dir, ignore_errors=True)
    last = results[-1]
    per_placement = [s["pass_ms_per_placement"] for s in results]
    result: dict[str, Any] = {
        **facts,
        "steps": results,
        "agents": last["agents"],
        "running_tasks": last["running_tasks"],
        "submit_p99_ms": last["submit_p99_ms"],
        "heartbeats_per_s": max(s["heartbeats_per_s"] for s in results),
        "master_rss_mb": max(s["master_rss_mb"] for s in results),
        "pass_ms_per_placement_first_last": [per_placement[0], per_placement[-1]],
    }
    result["goals"] = {
        "scale_5000_agents_50000_tasks": last["agents"] >= 5000 and last["running_tasks"] >= 50_000,
        "submit_p99_ms<=100": last["submit_p99_ms"] <= 100,
        "heartbeats_per_s>=5000": result["heartbeats_per_s"] >= 5000,
        "master_rss_mb<=2048": result["master_rss_mb"] <= 2048,
        # Flat: the largest step's cost per placement within 2x of the smallest step's.
        "pass_cost_flat_in_running_tasks": per_placement[-1] <= 2 * per_placement[0],
    }
    print(json.dumps(result, indent=2))
    if a.json:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "cluster.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
