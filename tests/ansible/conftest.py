"""The test cluster the Ansible roles are applied to, shared by test_converge.py and test_upgrade.py.

Hosts are containers from scripts/ansible-test-image.sh (debootstrap, imported into dockerd) booting
systemd; each role installs its packages from the Debian mirror and PyPI and starts its systemd units.
Topology: one ZooKeeper, one Cassandra, one master on the Cassandra store with ZooKeeper configured, and
two agents (so a drained agent's service tasks have somewhere to go).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ansible.harness import (
    AGENT_TOKEN,
    API_TOKEN,
    REPO,
    Cluster,
    ContainerHosts,
    cassandra_lib_archive,
    docker_available,
    tool,
    unique_prefix,
)

EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")


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
        **{
            agent: {
                "titus_role": "agent",
                "titus_tier": "flex",
                "titus_instance_group": "ansible-test-flex",
                "titus_agent_runtime": "process",
                "titus_agent_cpu": 1,
                "titus_agent_memory_mb": 512,
            }
            for agent in ("agent1", "agent2")
        },
    }


@pytest.fixture(scope="package")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tool("ansible-playbook")
    if not docker_available():
        pytest.fail("dockerd not answering: run scripts/services/dockerd.sh start (scripts/test.sh does)")
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
            "titus_master_init_cluster": True,  # a new cluster
            "titus_aws_region": "",
            # The CAs this machine trusts beyond Debian's (a TLS-intercepting egress proxy, if any), so the
            # hosts reach PyPI the way this machine does.
            "common_ca_certificates": sorted(str(p) for p in EXTRA_CA_DIR.glob("*.crt")),
        })
        runs = [hosts.playbook("site.yml", inventory, log_name="converge.log"),
                hosts.playbook("site.yml", inventory, log_name="idempotence.log")]
        yield hosts, inventory, runs
    finally:
        hosts.stop()
