"""Real `titus master` and `titus agent` processes for the high-availability tests and the failover benchmark.

Everything here is a real process on 127.0.0.1: masters elect a leader through a real ZooKeeper and share one
store (one SQLite file, or Cassandra); agents run tasks as host processes in cgroups. The harness plays the
supervisor (systemd's Restart=always): a master that exits is started again, as a fresh standby, on its port.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

API_TOKEN = "ha-api-token"
AGENT_TOKEN = "ha-agent-token"
REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def batch_job(cpu: float = 0.05, command: list[str] | None = None, app: str = "ha-batch") -> dict[str, Any]:
    return {
        "owner": {"teamEmail": "team@example.com"}, "applicationName": app,
        "container": {"resources": {"cpu": cpu, "memoryMB": 16, "diskMB": 10, "networkMbps": 1},
                      "image": {"name": "127.0.0.1:5000/titus/busybox", "tag": "latest"},
                      "command": command or ["/bin/true"]},
        "batch": {"size": 1, "retryPolicy": {"immediate": {"retries": 0}}},
    }


def service_job(desired: int, cpu: float = 0.1, app: str = "ha-service") -> dict[str, Any]:
    return {
        "owner": {"teamEmail": "team@example.com"}, "applicationName": app,
        "container": {"resources": {"cpu": cpu, "memoryMB": 16, "diskMB": 10, "networkMbps": 1},
                      "image": {"name": "127.0.0.1:5000/titus/busybox", "tag": "latest"},
                      "command": ["/bin/sleep", "3600"]},
        "service": {"capacity": {"min": 0, "desired": desired, "max": 10},
                    "retryPolicy": {"immediate": {"retries": 100}}},
    }


@dataclass
class MasterProc:
    index: int
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    exits: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def health(self) -> dict[str, Any] | None:
        try:
            # Role, leader and epoch are shown only to the API token; anonymous probes learn up/down only.
            r = requests.get(self.url + "/healthz", timeout=0.5,
                             headers={"Authorization": f"Bearer {API_TOKEN}"})
        except requests.RequestException:
            return None
        if r.status_code != 200:
            return None
        body: dict[str, Any] = r.json()
        return body


class HaCluster:
    """N masters sharing a store and a ZooKeeper root of their own; agents pointed at all of them."""

    def __init__(self, workdir: Path, zk_hosts: str, masters: int = 3, session_timeout_s: float = 4.0,
                 cassandra: tuple[str, int] | None = None, heartbeat_timeout_ms: int = 15_000) -> None:
        """`cassandra` (host, port) puts the state in a fresh keyspace there; otherwise in one SQLite file."""
        self.workdir = workdir
        self.zk_hosts = zk_hosts
        self.session_timeout_s = session_timeout_s
        self.zk_root = f"/titus-test/{uuid.uuid4().hex[:12]}"
        self.cassandra = cassandra
        self.keyspace = f"titus_ha_{uuid.uuid4().hex[:10]}"
        if cassandra is None:
            self.store_env = {"TITUS_STORE": "sqlite", "TITUS_SQLITE_SYNCHRONOUS": "NORMAL"}
        else:
            self.store_env = {"TITUS_STORE": "cassandra", "TITUS_CASSANDRA_HOSTS": cassandra[0],
                              "TITUS_CASSANDRA_PORT": str(cassandra[1]),
                              "TITUS_CASSANDRA_KEYSPACE": self.keyspace,
                              "TITUS_CASSANDRA_REPLICATION_STRATEGY": "SimpleStrategy",
                              "TITUS_CASSANDRA_REPLICATION_FACTOR": "1"}
        self.heartbeat_timeout_ms = heartbeat_timeout_ms
        self.data_dir = workdir / "master-data"  # one SQLite file shared by every master
        self.masters = [MasterProc(i, free_port(), workdir / f"master-{i}.log") for i in range(masters)]
        self.agents: list[AgentProc] = []
        self._supervise = threading.Event()
        self._lock = threading.Lock()
        self._supervisor: threading.Thread | None = None
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {API_TOKEN}"
        self._rr = itertools.count()

    @property
    def urls(self) -> list[str]:
        return [m.url for m in self.masters]

    # ---------------------------------------------------------------------------------- masters
    def master_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TITUS_")}
        env.update({"TITUS_API_TOKEN": API_TOKEN, "TITUS_AGENT_TOKEN": AGENT_TOKEN,
                    "TITUS_ZK_ROOT": self.zk_root, "TITUS_LOG_LEVEL": "INFO", "PYTHONPATH": str(REPO_ROOT),
                    "TITUS_HEARTBEAT_TIMEOUT_MS": str(self.heartbeat_timeout_ms),
                    "TITUS_INIT_CLUSTER": "true"})  # a fresh store: the first leader names the cluster
        env.update(self.store_env)
        return env

    def start_master(self, m: MasterProc) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(m.log_path, "ab")  # noqa: SIM115 - the child owns it
        m.proc = subprocess.Popen(
            [sys.executable, "-m", "titus.cli", "master", "--port", str(m.port),
             "--data-dir", str(self.data_dir), "--zk", self.zk_hosts,
             "--zk-session-timeout", str(self.session_timeout_s)],
            env=self.master_env(), stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        log.close()

    def open_store(self) -> Any:
        """A JobStore on the masters' state, for tests to check what was really written."""
        if self.cassandra is None:
            from master.store.sqlite import SqliteJobStore

            return SqliteJobStore(self.data_dir / "titus.db")
        from master.store.cassandra import CassandraJobStore, CassandraSettings

        store = CassandraJobStore(CassandraSettings(hosts=(self.cassandra[0],), port=self.cassandra[1],
                                                    keyspace=self.keyspace))
        store.migrate()  # idempotent; the schema exists, this selects the keyspace for reads
        return store

    def start(self, supervise: bool = True) -> None:
        if self.cassandra is not None:  # the schema is created once, before the masters (as in production)
            subprocess.run([sys.executable, "-m", "titus.cli", "db", "migrate"], env=self.master_env(),
                           cwd=REPO_ROOT, check=True, capture_output=True, timeout=180)
        for m in self.masters:
            self.start_master(m)
        for m in self.masters:
            wait_for(m.health, 30, f"master {m.index} to answer /healthz")
        if supervise:
            self._supervise.set()
            self._supervisor = threading.Thread(target=self._supervise_loop, daemon=True)
            self._supervisor.start()

    def pause_supervision(self) -> None:
        """Stop restarting masters that exit (an outage on purpose)."""
        self._supervise.clear()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)

    def resume_supervision(self) -> None:
        self._supervise.set()
        self._supervisor = threading.Thread(target=self._supervise_loop, daemon=True)
        self._supervisor.start()

    def _supervise_loop(self) -> None:
        while self._supervise.is_set():
            with self._lock:
                for m in self.masters:
                    if m.proc is not None and m.proc.poll() is not None:
                        m.exits.append(m.proc.returncode)
                        self.start_master(m)
            time.sleep(0.05)

    def leader(self, timeout: float = 30.0, exclude: MasterProc | None = None) -> MasterProc:
        """The one master whose /healthz says leader (and whose URL the others agree on)."""

        def find() -> MasterProc | None:
            leaders = []
            for m in self.masters:
                if m is exclude:
                    continue
                h = m.health()
                if h is not None and h.get("role") == "leader":
                    leaders.append(m)
            return leaders[0] if len(leaders) == 1 else None

        found: MasterProc = wait_for(find, timeout, "exactly one leader", interval=0.02)
        return found

    def signal_master(self, m: MasterProc, sig: int) -> None:
        assert m.proc is not None
        m.proc.send_signal(sig)

    def wait_exit(self, m: MasterProc, timeout: float = 30.0) -> int:
        """Waits for the process to end (the supervisor, if running, records it and restarts it)."""
        proc = m.proc
        assert proc is not None
        code = proc.wait(timeout=timeout)
        return code

    # -------------------------------------------------------------------------------------- API
    def api(self, method: str, path: str, *, attempts: int = 1, **kwargs: Any) -> requests.Response | None:
        """One request to some master, moving to the next on connection errors and 503s; None if none did."""
        last: requests.Response | None = None
        timeout = kwargs.pop("timeout", 10)
        for _ in range(attempts):
            url = self.urls[next(self._rr) % len(self.masters)]
            try:
                r = self.http.request(method, url + path, timeout=timeout, **kwargs)
            except requests.RequestException:
                time.sleep(0.02)
                continue
            if r.status_code == 503:
                last = r
                time.sleep(0.02)
                continue
            return r
        return last

    def submit(self, job: dict[str, Any], key: str, deadline_s: float = 30.0) -> str | None:
        """Submits with an Idempotency-Key, retrying through any master until acknowledged (202)."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            r = self.api("POST", "/api/v3/jobs", json=job, headers={"Idempotency-Key": key}, timeout=5)
            if r is not None and r.status_code in (200, 202):
                return str(r.json()["id"])
            if r is not None and r.status_code not in (503, 504):
                raise AssertionError(f"submission refused: {r.status_code} {r.text}")
            time.sleep(0.05)
        return None

    # ----------------------------------------------------------------------------------- agents
    def start_agent(self, agent_id: str, cpu: float = 2.0) -> AgentProc:
        a = AgentProc(agent_id, self.workdir / f"agent-{agent_id}", self.workdir / f"agent-{agent_id}.log")
        a.start(",".join(self.urls), cpu)
        self.agents.append(a)
        return a

    def stop(self) -> None:
        self._supervise.clear()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
        for a in self.agents:
            a.stop()
        for m in self.masters:
            if m.proc is not None and m.proc.poll() is None:
                m.proc.send_signal(signal.SIGCONT)
                m.proc.terminate()
        for m in self.masters:
            if m.proc is not None:
                try:
                    m.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    m.proc.kill()
                    m.proc.wait()
        if self.cassandra is not None:
            store = self.open_store()
            try:
                store.drop_keyspace()
            finally:
                store.close()


@dataclass
class AgentProc:
    agent_id: str
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self, master_urls: str, cpu: float) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TITUS_")}
        env.update({"TITUS_MASTER_URL": master_urls, "TITUS_AGENT_TOKEN": AGENT_TOKEN,
                    "TITUS_AGENT_ID": self.agent_id, "TITUS_DATA_DIR": str(self.data_dir),
                    "TITUS_RUNTIME": "oci", "TITUS_AGENT_CPU": str(cpu), "TITUS_AGENT_MEMORY_MB": "4096",
                    "TITUS_KILL_TASKS_ON_EXIT": "true", "TITUS_TASK_PIDS_LIMIT": "64",
                    "PYTHONPATH": str(REPO_ROOT)})
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen([sys.executable, "-m", "titus.cli", "agent"], env=env, stdout=log,
                                     stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        log.close()

    def running_task_ids(self) -> set[str]:
        """Tasks with live processes in their cgroups now: what really runs, whatever the master thinks."""
        from agent import cgroups

        hierarchy = cgroups.detect()
        running = set()
        for task_id in hierarchy.list_tasks(self.agent_id):
            try:
                if hierarchy.task_group(self.agent_id, task_id).pids():
                    running.add(task_id)
            except OSError:
                continue  # removed while we looked
        return running

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        from agent import cgroups

        # The agent removed its tasks' cgroups on exit; its own directory is left to whoever made it.
        with contextlib.suppress(OSError):
            cgroups.detect().remove_agent(self.agent_id)


class DuplicateWatcher:
    """Samples the agents' cgroups (and the leader's task list) to catch a task index running twice at once.

    Cgroup samples record task ids only; they are mapped to (job id, task index) at the end through the API,
    which knows every task, finished or not.
    """

    def __init__(self, cluster: HaCluster, interval_s: float = 0.2) -> None:
        self.cluster = cluster
        self.interval_s = interval_s
        self.samples: list[dict[str, set[str]]] = []  # agent id -> running task ids, per sample
        self.api_duplicates: list[tuple[str, str, list[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            self.samples.append({a.agent_id: a.running_task_ids() for a in self.cluster.agents})
            if n % 5 == 0:
                self._check_api()
            n += 1
            self._stop.wait(self.interval_s)

    def _check_api(self) -> None:
        r = self.cluster.api("GET", "/api/v3/tasks", params={"taskStates": "Started", "pageSize": 1000})
        if r is None or r.status_code != 200:
            return
        by_index: dict[tuple[str, str], list[str]] = {}
        for t in r.json()["items"]:
            key = (t["jobId"], t["taskContext"]["task.index"])
            by_index.setdefault(key, []).append(t["taskContext"].get("agent.id", "?"))
        for (job, index), agents in by_index.items():
            if len(agents) > 1:
                self.api_duplicates.append((job, index, agents))

    def duplicates(self, task_index: Callable[[str], tuple[str, str] | None]) -> list[dict[str, Any]]:
        """Samples in which two live task ids shared one (job id, index); `task_index` maps a task id."""
        cache: dict[str, tuple[str, str] | None] = {}
        found = []
        for i, sample in enumerate(self.samples):
            seen: dict[tuple[str, str], list[tuple[str, str]]] = {}
            for agent_id, task_ids in sample.items():
                for tid in task_ids:
                    if tid not in cache:
                        cache[tid] = task_index(tid)
                    key = cache[tid]
                    if key is not None:
                        seen.setdefault(key, []).append((agent_id, tid))
            for key, where in seen.items():
                if len({tid for _, tid in where}) > 1:
                    found.append({"sample": i, "job": key[0], "index": key[1], "where": where})
        return found


def task_index_via_api(cluster: HaCluster) -> Callable[[str], tuple[str, str] | None]:
    def lookup(task_id: str) -> tuple[str, str] | None:
        r = cluster.api("GET", f"/api/v3/tasks/{task_id}", attempts=50)
        if r is None or r.status_code != 200:
            return None
        t = r.json()
        return str(t["jobId"]), str(t["taskContext"]["task.index"])

    return lookup
