"""Three agents on three "hosts" (network namespaces on one bridge), one master; kill -9 and partitions.

Topology, all created here and removed afterwards (also on failure): a bridge in the root namespace holds
10.231.N.1/24 and the master listens there; namespaces tf<pid>-0..2 each get a veth into the bridge with
10.231.N.(10+i)/24 and run one agent. Agents enter only the network namespace (`nsenter --net`): `ip netns
exec` would also remount /sys and hide the host's cgroup tree, which the agents share, each under its own
agent id. A partition is iptables DROP rules inside one namespace; healing deletes them.
The invariant checker polls the master and every agent's cgroups throughout.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import free_port, service_job, wait_for
from tests.e2e.faultkit import (
    AgentProc,
    InvariantChecker,
    MasterProc,
    agents,
    live_tasks,
    started,
    submit,
    sweep,
    tasks_of,
)

pytestmark = [
    pytest.mark.e2e,
    # No skip for missing tools: scripts/install-fault-test-deps.sh (setup.sh --test) installs ip, iptables.
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces, veths and iptables"),
]

HEARTBEAT_MS = 3_000
HALF_CORE = {"resources": {"cpu": 0.5, "memoryMB": 16, "diskMB": 10, "networkMbps": 1}}
# Jobs that must never run twice opt into self-fencing (master/core/fault_policy.py): their tasks are
# replaced as soon as their agent is lost, because its watchdog stops them first.
FENCING_HALF_CORE = {**HALF_CORE, "attributes": {"titusParameter.agent.selfFence": "true"}}


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=30)


def free_subnet() -> int:
    """A 10.231.N.0/24 no interface on this machine uses yet (other test runs may hold one)."""
    used = sh("ip", "-4", "addr").stdout
    candidates: list[int] = [os.getpid() % 200 + 20, *range(20, 250)]
    for n in candidates:
        if f"10.231.{n}." not in used:
            return n
    raise RuntimeError("no free 10.231.N.0/24")


@dataclass
class Net:
    tag: str
    subnet: int
    namespaces: list[str]

    @property
    def bridge(self) -> str:
        return f"{self.tag}br"

    @property
    def master_ip(self) -> str:
        return f"10.231.{self.subnet}.1"

    def agent_ip(self, i: int) -> str:
        return f"10.231.{self.subnet}.{10 + i}"

    def partition(self, i: int) -> None:
        for rule in self._rules():
            sh("ip", "netns", "exec", self.namespaces[i], "iptables", "-A", *rule)

    def heal(self, i: int) -> None:
        for rule in self._rules():
            sh("ip", "netns", "exec", self.namespaces[i], "iptables", "-D", *rule)

    def _rules(self) -> list[list[str]]:
        return [["OUTPUT", "-d", self.master_ip, "-j", "DROP"], ["INPUT", "-s", self.master_ip, "-j", "DROP"]]


def build_net(count: int, suffix: str = "") -> Net:
    tag = f"tf{os.getpid() % 100000}{suffix}"  # interface names have at most 15 characters
    net = Net(tag, free_subnet(), [f"{tag}-{i}" for i in range(count)])
    try:
        sh("ip", "link", "add", net.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{net.master_ip}/24", "dev", net.bridge)
        sh("ip", "link", "set", net.bridge, "up")
        for i, ns in enumerate(net.namespaces):
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", f"{tag}v{i}", "type", "veth", "peer", "name", f"{tag}p{i}", "netns", ns)
            sh("ip", "link", "set", f"{tag}v{i}", "master", net.bridge)
            sh("ip", "link", "set", f"{tag}v{i}", "up")
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{net.agent_ip(i)}/24", "dev", f"{tag}p{i}")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", f"{tag}p{i}", "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
    except Exception:
        destroy_net(net)
        raise
    return net


def destroy_net(net: Net) -> None:
    """Deleting a namespace takes its veth end, its routes and its iptables rules with it."""
    for i, ns in enumerate(net.namespaces):
        sh("ip", "netns", "del", ns, check=False)
        sh("ip", "link", "del", f"{net.tag}v{i}", check=False)
    sh("ip", "link", "del", net.bridge, check=False)


@dataclass
class NetCluster:
    net: Net
    master: MasterProc
    agents: list[AgentProc]

    def holders(self, job_id: str) -> dict[str, list[dict[str, Any]]]:
        by_agent: dict[str, list[dict[str, Any]]] = {}
        for t in started(self.master.url, job_id):
            by_agent.setdefault(t["taskContext"]["agent.id"], []).append(t)
        return by_agent

    def index_of(self, agent_id: str) -> int:
        return next(i for i, a in enumerate(self.agents) if a.agent_id == agent_id)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetCluster]:
    base = tmp_path_factory.mktemp("multihost")
    net = build_net(3)
    master = MasterProc(base / "master", free_port(), host=net.master_ip, heartbeat_timeout_ms=HEARTBEAT_MS)
    procs: list[AgentProc] = []
    try:
        master.start()
        for i, ns in enumerate(net.namespaces):
            procs.append(AgentProc(f"{net.tag}-agent{i}", base / f"agent{i}", master.url, netns=ns,
                                   extra_env={"TITUS_AGENT_CPU": "1"}).start())
        wait_for(lambda: all(agents(master.url).get(a.agent_id, {}).get("state") == "Registered"
                             for a in procs), timeout=30, what="three agents registered")
        yield NetCluster(net, master, procs)
    finally:
        for a in procs:
            a.stop()
        for a in procs:
            sweep(a.agent_id, a.data_dir)
        master.kill9()
        destroy_net(net)


def test_agents_reach_the_master_only_through_their_namespaces(cluster: NetCluster) -> None:
    views = agents(cluster.master.url)
    assert {a.agent_id for a in cluster.agents} <= set(views)
    out = sh("ip", "netns", "exec", cluster.net.namespaces[0], "ip", "-4", "addr").stdout
    assert cluster.net.agent_ip(0) in out and "192.0.2." not in out


def test_kill_9_of_an_agent_moves_its_self_fencing_tasks_within_timeout_plus_5s(cluster: NetCluster) -> None:
    url = cluster.master.url
    job_id = submit(url, service_job(desired=4, container=FENCING_HALF_CORE))  # 2 per agent: two busy
    wait_for(lambda: len(started(url, job_id)) == 4, timeout=30, what="4 tasks running")
    victim_id, victims = next(iter(cluster.holders(job_id).items()))
    victim = cluster.agents[cluster.index_of(victim_id)]
    with InvariantChecker(url, [a.agent_id for a in cluster.agents], [job_id]) as checker:
        victim.kill9()
        killed_at = time.monotonic()

        def moved() -> bool:
            holders = cluster.holders(job_id)
            return victim_id not in holders and sum(len(v) for v in holders.values()) == 4

        wait_for(moved, timeout=HEARTBEAT_MS / 1000 + 5, interval=0.05,
                 what="the victim's tasks running elsewhere within heartbeat timeout + 5 s")
        moved_after = time.monotonic() - killed_at
        # The victim's watchdog stopped its copies although the agent itself is dead.
        assert not set(live_tasks(victim_id)) & {t["id"] for t in victims}
        victim.start()  # back for the next test; it reports what its watchdog stopped
        wait_for(lambda: agents(url)[victim_id]["state"] == "Registered", what="the victim back")
    print(f"kill -9: tasks running elsewhere after {moved_after:.2f} s (heartbeat timeout "
          f"{HEARTBEAT_MS / 1000:.0f} s)")
    assert checker.violations == []
    assert checker.max_live >= 4 and checker.samples > 10
    lost = [t for t in tasks_of(url, job_id, "Finished") if t["id"] in {v["id"] for v in victims}]
    assert {t["status"]["reasonCode"] for t in lost} == {"lost"}
    cluster.master.api("DELETE", f"/api/v3/jobs/{job_id}")
    wait_for(lambda: not tasks_of(url, job_id), what="the job's tasks gone")


def test_partition_and_heal_never_runs_a_self_fencing_task_index_twice(cluster: NetCluster) -> None:
    url = cluster.master.url
    job_id = submit(url, service_job(desired=4, container=FENCING_HALF_CORE))
    wait_for(lambda: len(started(url, job_id)) == 4, timeout=30, what="4 tasks running")
    cut_id, cut_tasks = next(iter(cluster.holders(job_id).items()))
    cut = cluster.index_of(cut_id)
    with InvariantChecker(url, [a.agent_id for a in cluster.agents], [job_id]) as checker:
        cluster.net.partition(cut)
        try:
            wait_for(lambda: cut_id not in cluster.holders(job_id)
                     and sum(len(v) for v in cluster.holders(job_id).values()) == 4,
                     timeout=HEARTBEAT_MS / 1000 + 10, what="the cut-off agent's tasks replaced")
            assert agents(url)[cut_id]["state"] == "Lost"
            assert not set(live_tasks(cut_id)) & {t["id"] for t in cut_tasks}, "it must have fenced itself"
        finally:
            cluster.net.heal(cut)
        wait_for(lambda: agents(url)[cut_id]["state"] == "Registered"
                 and agents(url)[cut_id]["acceptingWork"],
                 timeout=30, what="the healed agent back and taking work")
        wait_for(lambda: checker.samples > 40, what="enough checker samples after healing")
    assert checker.violations == []
    assert checker.max_live >= 4
    finished = {t["id"]: t for t in tasks_of(url, job_id, "Finished")}
    assert {finished[t["id"]]["status"]["reasonCode"] for t in cut_tasks} == {"lost"}
    assert len(started(url, job_id)) == 4
    cluster.master.api("DELETE", f"/api/v3/jobs/{job_id}")
    wait_for(lambda: not tasks_of(url, job_id), what="the job's tasks gone")


def test_partition_and_heal_keeps_a_default_jobs_tasks_running_disconnected_then_back(
        cluster: NetCluster) -> None:
    url = cluster.master.url
    job_id = submit(url, service_job(desired=2, container=HALF_CORE))  # no self-fencing: the default
    wait_for(lambda: len(started(url, job_id)) == 2, timeout=30, what="2 tasks running")
    cut_id, cut_tasks = next(iter(cluster.holders(job_id).items()))
    cut = cluster.index_of(cut_id)
    ids = {t["id"] for t in cut_tasks}
    pids = {t: p for t, p in live_tasks(cut_id).items() if t in ids}
    with InvariantChecker(url, [a.agent_id for a in cluster.agents], [job_id]) as checker:
        cluster.net.partition(cut)
        try:
            wait_for(lambda: {t["id"] for t in tasks_of(url, job_id, "Disconnected")} == ids,
                     timeout=HEARTBEAT_MS / 1000 + 10, what="the cut-off agent's tasks Disconnected")
            assert agents(url)[cut_id]["state"] == "Lost"
            time.sleep(2 * HEARTBEAT_MS / 1000)  # well past the heartbeat timeout: still not replaced
            assert len(tasks_of(url, job_id)) == 2
            assert {t: p for t, p in live_tasks(cut_id).items() if t in ids} == pids  # never stopped
        finally:
            cluster.net.heal(cut)
        wait_for(lambda: {t["id"] for t in started(url, job_id)} >= ids, timeout=30,
                 what="the healed agent's tasks Started again")
        wait_for(lambda: checker.samples > 20, what="checker samples after healing")
    assert checker.violations == []
    assert tasks_of(url, job_id, "Finished") == []
    assert {t: p for t, p in live_tasks(cut_id).items() if t in ids} == pids
    cluster.master.api("DELETE", f"/api/v3/jobs/{job_id}")
    wait_for(lambda: not tasks_of(url, job_id), what="the job's tasks gone")


def test_cleanup_leaves_nothing_behind() -> None:
    net = build_net(1, "x")
    assert net.namespaces[0] in sh("ip", "netns", "list").stdout
    destroy_net(net)
    assert net.namespaces[0] not in sh("ip", "netns", "list").stdout
    assert net.bridge not in sh("ip", "link").stdout
