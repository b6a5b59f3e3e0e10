"""Tools for fault tests: agent processes, what really runs in their cgroups, and the invariant checker.

The checker looks at both sides, as an operator would: the master's API (which task is Started) and each
agent's cgroups (which task has live processes). One task index (job id + task.index) running twice at
the same moment, on one agent or two, is a violation.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests

from tests.conftest import AGENT_TOKEN, API_TOKEN

PIDS_ROOT = Path("/sys/fs/cgroup/pids/titus")


def live_tasks(agent_id: str) -> dict[str, frozenset[int]]:
    """Task id -> pids of every task cgroup of this agent that holds at least one process."""
    base = PIDS_ROOT / agent_id
    found: dict[str, frozenset[int]] = {}
    if not base.is_dir():
        return found
    for d in base.iterdir():
        try:
            pids = frozenset(int(p) for p in (d / "cgroup.procs").read_text().split())
        except (FileNotFoundError, NotADirectoryError, ProcessLookupError, OSError):
            continue
        if pids:
            found[d.name] = pids
    return found


def task_cgroup_names(agent_id: str) -> set[str]:
    base = PIDS_ROOT / agent_id
    return {d.name for d in base.iterdir() if d.is_dir()} if base.is_dir() else set()


Slot = tuple[str, str]  # (job id, task.index)


def overlaps(snapshot: Mapping[str, Mapping[str, frozenset[int]]], slots: Mapping[str, Slot]
             ) -> dict[Slot, list[tuple[str, str]]]:
    """Slots with more than one live task in one snapshot: slot -> [(agent id, task id), ...]."""
    by_slot: dict[Slot, list[tuple[str, str]]] = {}
    for agent_id, tasks in snapshot.items():
        for task_id in tasks:
            slot = slots.get(task_id)
            if slot is not None:
                by_slot.setdefault(slot, []).append((agent_id, task_id))
    return {slot: where for slot, where in by_slot.items() if len(where) > 1}


def master_overlaps(tasks: Sequence[Mapping[str, Any]]) -> dict[Slot, list[str]]:
    """Slots the master itself shows Started more than once."""
    by_slot: dict[Slot, list[str]] = {}
    for t in tasks:
        if t["status"]["state"] == "Started":
            by_slot.setdefault((t["jobId"], t["taskContext"]["task.index"]), []).append(t["id"])
    return {slot: ids for slot, ids in by_slot.items() if len(ids) > 1}


@dataclass
class InvariantChecker:
    """Polls master and cgroups in a thread until stopped; `violations` lists what it caught."""

    url: str
    agent_ids: list[str]
    job_ids: list[str]
    read_live: Callable[[str], dict[str, frozenset[int]]] = live_tasks
    violations: list[str] = field(default_factory=list)
    samples: int = 0
    max_live: int = 0
    slots: dict[str, Slot] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> InvariantChecker:
        self._thread = threading.Thread(target=self._run, name="invariant-checker", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _master_tasks(self) -> list[dict[str, Any]]:
        params: dict[str, str | int] = {
            "jobIds": ",".join(self.job_ids), "pageSize": 1000,
            "taskStates": "Launched,StartInitiated,Started,KillInitiated,Finished"}
        r = requests.get(self.url + "/api/v3/tasks", headers={"Authorization": f"Bearer {API_TOKEN}"},
                         params=params, timeout=5)
        r.raise_for_status()
        items: list[dict[str, Any]] = r.json()["items"]
        return items

    def _run(self) -> None:
        while not self._stop.is_set():
            # The master may be down on purpose; the cgroup side is checked again next round.
            with contextlib.suppress(requests.RequestException):
                self.check_once()
            self._stop.wait(0.05)

    def check_once(self) -> None:
        snapshot = {a: self.read_live(a) for a in self.agent_ids}
        if any(t not in self.slots for tasks in snapshot.values() for t in tasks):
            for t in self._master_tasks():
                self.slots[t["id"]] = (t["jobId"], t["taskContext"]["task.index"])
        tasks = self._master_tasks()
        self.samples += 1
        self.max_live = max(self.max_live, sum(len(v) for v in snapshot.values()))
        for slot, ids in master_overlaps(tasks).items():
            self.violations.append(f"master shows {slot} Started as {ids}")
        for slot, where in overlaps(snapshot, self.slots).items():
            # Confirm: each was seen alive before this re-read; the same pids alive now means the
            # two were alive together at the moment of the first read of the later one.
            again = {a: self.read_live(a) for a, _ in where}
            still = [(a, t) for a, t in where if snapshot[a][t] & again[a].get(t, frozenset())]
            if len(still) > 1:
                self.violations.append(f"{slot} running as {still}")


_CACHE: list[Path] = []


def shared_image_cache() -> Path:
    """One image cache for every test agent of this session, filled from the host's network namespace:
    agents in their own network namespaces (test_multihost) cannot reach the registry on 127.0.0.1, and
    the OCI runtime uses what the host's cache already holds, as a fleet host would after its first pull."""
    if not _CACHE:
        from agent.runtime.images import ImageCache

        path = Path(tempfile.gettempdir()) / f"titus-test-images-{os.getpid()}"
        ImageCache(path).get("127.0.0.1:5000/titus/busybox:latest")
        atexit.register(shutil.rmtree, path, True)
        _CACHE.append(path)
    return _CACHE[0]


@dataclass
class AgentProc:
    agent_id: str
    data_dir: Path
    url: str
    proc: subprocess.Popen[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    netns: str | None = None

    def start(self) -> AgentProc:
        env = {**os.environ, "TITUS_MASTER_URL": self.url, "TITUS_AGENT_TOKEN": AGENT_TOKEN,
               "TITUS_AGENT_ID": self.agent_id, "TITUS_DATA_DIR": str(self.data_dir),
               "TITUS_RUNTIME": "oci", "TITUS_AGENT_CPU": "4", "TITUS_AGENT_MEMORY_MB": "4096",
               "TITUS_UNKNOWN_TASK_GRACE_S": "1", "PYTHONPATH": str(Path(__file__).parents[2]),
               "TITUS_IMAGE_CACHE_DIR": str(shared_image_cache()),
               **self.extra_env}
        env.pop("TITUS_API_TOKEN", None)
        cmd = [sys.executable, "-m", "titus.cli", "agent"]
        if self.netns is not None:
            # Only the network namespace: `ip netns exec` would also remount /sys, hiding the host's
            # cgroup tree that the agents on all "hosts" share.
            cmd = ["nsenter", f"--net=/var/run/netns/{self.netns}", *cmd]
        log = open(self.data_dir.parent / f"{self.agent_id}.log", "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
        log.close()
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def sweep(agent_id: str, data_dir: Path) -> None:
    """Test teardown: no process, cgroup or watchdog of this agent survives, whatever the test did."""
    for proc in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            cmd = proc.info["cmdline"] or []
            if "agent.fence" in cmd and str(data_dir) in cmd:
                proc.send_signal(signal.SIGKILL)
    from agent.runtime.oci import OciRuntime

    runtime = OciRuntime(data_dir, agent_id)
    try:
        for task_id in runtime.list_tasks():
            with contextlib.suppress(Exception):
                runtime.cleanup(task_id)
    finally:
        runtime.close()
    from agent import cgroups

    with contextlib.suppress(Exception):
        cgroups.detect().remove_agent(agent_id)


def agents(url: str) -> dict[str, dict[str, Any]]:
    r = requests.get(url + "/api/v3/agent/instances", headers={"Authorization": f"Bearer {API_TOKEN}"},
                     timeout=5)
    return {a["id"]: a for a in r.json()["items"]}


def tasks_of(url: str, job_id: str, states: str | None = None) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"jobIds": job_id, "pageSize": 1000}
    if states:
        params["taskStates"] = states
    r = requests.get(url + "/api/v3/tasks", headers={"Authorization": f"Bearer {API_TOKEN}"}, params=params,
                     timeout=5)
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def started(url: str, job_id: str) -> list[dict[str, Any]]:
    return [t for t in tasks_of(url, job_id) if t["status"]["state"] == "Started"]


def submit(url: str, job: dict[str, Any]) -> str:
    r = requests.post(url + "/api/v3/jobs", json=job, headers={"Authorization": f"Bearer {API_TOKEN}"},
                      timeout=10)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def monotonic_ms() -> float:
    return time.monotonic() * 1000


@dataclass
class MasterProc:
    """`titus master` as its own process, so a restart is a real one (kill -9, then start again)."""

    data_dir: Path
    port: int
    host: str = "127.0.0.1"
    heartbeat_timeout_ms: int = 6_000
    netns: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    init_cluster: bool = True  # a test's master starts on a fresh data dir (master/cluster_identity.py)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> MasterProc:
        env = {**os.environ, "TITUS_API_TOKEN": API_TOKEN, "TITUS_AGENT_TOKEN": AGENT_TOKEN,
               "TITUS_HOST": self.host, "TITUS_SQLITE_SYNCHRONOUS": "NORMAL",
               "TITUS_HEARTBEAT_TIMEOUT_MS": str(self.heartbeat_timeout_ms),
               "TITUS_INIT_CLUSTER": "true" if self.init_cluster else "false",
               "PYTHONPATH": str(Path(__file__).parents[2])}
        cmd = [sys.executable, "-m", "titus.cli", "master", "--port", str(self.port), "--data-dir",
               str(self.data_dir)]
        if self.netns is not None:
            cmd = ["nsenter", f"--net=/var/run/netns/{self.netns}", *cmd]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir.parent / "master.log", "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"master exited with {self.proc.returncode}")
            time.sleep(0.05)
        raise RuntimeError("master did not become healthy")

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, self.url + path, headers={"Authorization": f"Bearer {API_TOKEN}"},
                                timeout=10, **kwargs)
