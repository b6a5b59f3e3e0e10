"""site.yml applied for real to Debian 12 hosts booting systemd (see conftest.py): converge, a second run
that changes nothing, then the services answer (ZooKeeper ruok, Cassandra CQL, master /healthz, agents
registered).
"""

from __future__ import annotations

import json

import pytest

from tests.ansible.harness import API_TOKEN, Cluster

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(1800)]


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


def test_check_mode_on_the_converged_cluster_predicts_no_change(cluster: Cluster) -> None:
    hosts, inventory, _ = cluster
    check = hosts.playbook("site.yml", inventory, "--check", log_name="check.log")
    assert check.changed() == dict.fromkeys(check.hosts, 0), check.changed_tasks()


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


def test_agents_are_registered_with_tier_and_group(cluster: Cluster) -> None:
    hosts, _, _ = cluster
    out = hosts.exec("master1", ["curl", "-sf", "-H", f"Authorization: Bearer {API_TOKEN}",
                                 "http://127.0.0.1:7001/api/v3/agent/instances"]).stdout
    agents = {a["id"]: a for a in json.loads(out)["items"]}
    for name in ("agent1", "agent2"):
        agent = agents[hosts.name(name)]
        assert agent["state"] == "Registered"
        assert agent["instanceGroupId"] == "ansible-test-flex"
        assert agent["lifecycle"] == "Active"


def test_config_files_keep_tokens_private(cluster: Cluster) -> None:
    hosts, _, _ = cluster
    master_env = hosts.exec("master1", ["stat", "-c", "%a %U %G", "/etc/titus/master.env"]).stdout.split()
    agent_env = hosts.exec("agent1", ["stat", "-c", "%a %U %G", "/etc/titus/agent.env"]).stdout.split()
    assert master_env == ["640", "root", "titus"]
    assert agent_env == ["600", "root", "root"]
