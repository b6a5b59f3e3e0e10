"""site.yml applied for real to Debian 12 hosts booting systemd: converge, a second run that changes nothing,
then the services answer (ZooKeeper ruok, Cassandra CQL, master /healthz, agent registered).

The hosts are containers from scripts/ansible-test-image.sh (debootstrap, imported into dockerd); each
role installs its packages from the Debian mirror and PyPI and starts its systemd units. Topology: one
ZooKeeper, one Cassandra, one master on the Cassandra store with ZooKeeper configured, one agent.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ansible.harness import (
    AGENT_TOKEN,
    API_TOKEN,
    REPO,
    ContainerHosts,
    Recap,
    cassandra_lib_archive,
    docker_available,
    tool,
    unique_prefix,
)

Cluster = tuple[ContainerHosts, Path, list[Recap]]

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(1800)]


def build_image() -> None:
    result = subprocess.run([str(REPO / "scripts" / "ansible-test-image.sh"), "build"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def cluster_hosts(prefix: str, workdir: Path) -> dict[str, dict[str, object]]:
    return {
        "zk1": {"titus_role": "zookeeper", "titus_zookeeper_myid": 1, "zookeeper_heap_mb": 256},
        "cass1": {
            "titus_role": "cassandra",
            "cassandra_lib_archive": cassandra_lib_archive(workdir),
            "cassandra_heap_min": "512m",
            "cassandra_heap_max": "768m",
            "cassandra_num_tokens": 1,
            # One short-lived node: C1 JIT only, and no waiting for gossip peers that do not exist.
            "cassandra_jvm_extra_opts": [
                "-XX:TieredStopAtLevel=1",
                "-Dcassandra.skip_wait_for_gossip_to_settle=0",
                "-Dcassandra.ring_delay_ms=100",
            ],
        },
        "master1": {
            "titus_role": "master",
            "titus_store": "cassandra",
            "titus_cassandra_hosts": f"{prefix}-cass1",
            "titus_zk": f"{prefix}-zk1:2181",
            "titus_master_cassandra_replication_factor": 1,
        },
        "agent1": {
            "titus_role": "agent",
            "titus_tier": "flex",
            "titus_instance_group": "ansible-test-flex",
            "titus_agent_runtime": "process",
            "titus_agent_cpu": 1,
            "titus_agent_memory_mb": 512,
        },
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tool("ansible-playbook")
    if not docker_available():
        pytest.skip("dockerd not answering: run scripts/services/dockerd.sh start")
    build_image()
    workdir = tmp_path_factory.mktemp("ansible-converge")
    prefix = unique_prefix()
    hosts = ContainerHosts(prefix, cluster_hosts(prefix, workdir), workdir)
    try:
        hosts.start()
        inventory = hosts.inventory({
            "titus_cluster_name": "ansible-test",
            "titus_api_token": API_TOKEN,
            "titus_agent_token": AGENT_TOKEN,
            "titus_api_port": 7001,
            "titus_master_url": f"http://{prefix}-master1:7001",
            "titus_aws_region": "",
        })
        runs = [hosts.playbook("site.yml", inventory, log_name="converge.log"),
                hosts.playbook("site.yml", inventory, log_name="idempotence.log")]
        yield hosts, inventory, runs
    finally:
        hosts.stop()


def test_first_run_converges_every_host(cluster: Cluster) -> None:
    hosts, _, runs = cluster
    first = runs[0]
    assert set(first.hosts) == {hosts.name(h) for h in hosts.hosts}
    assert all(counts[3] == 0 and counts[2] == 0 for counts in first.hosts.values()), first.hosts
    assert all(changed > 0 for changed in first.changed().values()), first.hosts


def test_second_run_changes_nothing(cluster: Cluster) -> None:
    _, _, runs = cluster
    second = runs[1]
    assert second.changed() == dict.fromkeys(second.hosts, 0), second.changed_tasks()


def test_zookeeper_answers_ruok(cluster: Cluster) -> None:
    hosts, _, _ = cluster
    probe = ("import socket; s = socket.create_connection(('127.0.0.1', 2181), 5); s.sendall(b'ruok');"
             " print(s.recv(16).decode())")
    assert hosts.exec("zk1", ["python3", "-c", probe]).stdout.strip() == "imok"
    assert hosts.exec("zk1", ["systemctl", "is-enabled", "zookeeper"]).stdout.strip() == "enabled"


def test_cassandra_accepts_cql_from_the_master(cluster: Cluster) -> None:
    hosts, _, _ = cluster
    query = (
        "from cassandra.cluster import Cluster; import sys;"
        f" c = Cluster([{hosts.name('cass1')!r}]); s = c.connect();"
        " print(s.execute('SELECT release_version FROM system.local').one()[0]);"
        " rows = s.execute('SELECT keyspace_name FROM system_schema.keyspaces');"
        " print(','.join(sorted(r[0] for r in rows)));"
        " c.shutdown()"
    )
    out = hosts.exec("master1", ["/opt/titus/current/venv/bin/python", "-c", query]).stdout.split()
    assert out[0] == "5.0.9"
    assert "titus" in out[1].split(","), "the master's schema migration did not create its keyspace"


def test_master_answers_healthz_as_leader(cluster: Cluster) -> None:
    hosts, _, _ = cluster
    out = hosts.exec("master1", ["curl", "-sf", "http://127.0.0.1:7001/healthz"]).stdout
    assert json.loads(out)["status"] == "ok"
    unit = hosts.exec("master1", ["systemctl", "show", "-p", "User,ActiveState", "titus-master"]).stdout
    assert "User=titus" in unit and "ActiveState=active" in unit


def test_agent_is_registered_with_its_tier_and_group(cluster: Cluster) -> None:
    hosts, _, _ = cluster
    out = hosts.exec("master1", ["curl", "-sf", "-H", f"Authorization: Bearer {API_TOKEN}",
                                 "http://127.0.0.1:7001/api/v3/agent/instances"]).stdout
    agents = {a["id"]: a for a in json.loads(out)["items"]}
    agent = agents[hosts.name("agent1")]
    assert agent["state"] == "Registered"
    assert agent["instanceGroupId"] == "ansible-test-flex"
    assert agent["lifecycle"] == "Active"


def test_config_files_keep_tokens_private(cluster: Cluster) -> None:
    hosts, _, _ = cluster
    master_env = hosts.exec("master1", ["stat", "-c", "%a %U %G", "/etc/titus/master.env"]).stdout.split()
    agent_env = hosts.exec("agent1", ["stat", "-c", "%a %U %G", "/etc/titus/agent.env"]).stdout.split()
    assert master_env == ["640", "root", "titus"]
    assert agent_env == ["600", "root", "root"]
