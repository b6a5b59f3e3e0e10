"""Smoke tests of the real test servers: the ZooKeeper and Cassandra behaviour the HA code builds on.

ZooKeeper: znodes persist, ephemeral znodes vanish with their session (leader election rests on that).
Cassandra: schema, writes and reads at LOCAL_QUORUM, and lightweight transactions whose `applied` flag
tells the writer whether its condition held - the CassandraJobStore's versioned writes and epoch fencing
rest on exactly that, including under concurrent writers.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from cassandra import ConsistencyLevel
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, Session
from cassandra.policies import RoundRobinPolicy
from kazoo.client import KazooClient

from tests.fixtures.servers import CASSANDRA_DATACENTER, CassandraEndpoint, ServerHandle


@pytest.fixture()
def kazoo_client(zookeeper_server: str) -> Iterator[KazooClient]:
    client = KazooClient(hosts=zookeeper_server, timeout=10.0)
    client.start(timeout=15.0)
    yield client
    client.stop()
    client.close()


def test_zookeeper_znode_round_trip(kazoo_client: KazooClient) -> None:
    path = f"/titus-smoke/{uuid.uuid4().hex}"
    kazoo_client.create(path, b"leader-epoch=1", makepath=True)

    data, stat = kazoo_client.get(path)

    assert data == b"leader-epoch=1"
    assert stat.version == 0
    kazoo_client.set(path, b"leader-epoch=2", version=0)
    assert kazoo_client.get(path)[0] == b"leader-epoch=2"
    kazoo_client.delete(path)
    assert kazoo_client.exists(path) is None


def test_zookeeper_ephemeral_node_dies_with_its_session(zookeeper_server: str) -> None:
    path = f"/titus-smoke/ephemeral-{uuid.uuid4().hex}"
    owner = KazooClient(hosts=zookeeper_server, timeout=10.0)
    observer = KazooClient(hosts=zookeeper_server, timeout=10.0)
    owner.start(timeout=15.0)
    observer.start(timeout=15.0)
    try:
        owner.create(path, b"me", ephemeral=True, makepath=True)
        assert observer.exists(path) is not None

        owner.stop()  # closes the session, so the server deletes its ephemeral nodes

        assert observer.exists(path) is None
    finally:
        owner.close()
        observer.stop()
        observer.close()


def test_extra_zookeeper_instance_starts_once_and_stops(
    zookeeper_factory: Callable[[], ServerHandle], zookeeper_server: str
) -> None:
    extra = zookeeper_factory()
    assert extra.hosts != zookeeper_server
    pid = (extra.directory / "zookeeper.pid").read_text()
    extra.start()  # a second start of a healthy instance must reuse it, not spawn another
    assert (extra.directory / "zookeeper.pid").read_text() == pid
    client = KazooClient(hosts=extra.hosts, timeout=10.0)
    client.start(timeout=15.0)
    try:
        client.create("/only-here", b"x")
        assert client.exists("/only-here") is not None
    finally:
        client.stop()
        client.close()

    extra.stop()

    assert not extra.is_running()
    assert (extra.directory / "data").is_dir()


@pytest.fixture(scope="module")
def cassandra_session(cassandra_server: CassandraEndpoint) -> Iterator[Session]:
    profile = ExecutionProfile(
        load_balancing_policy=RoundRobinPolicy(),
        consistency_level=ConsistencyLevel.LOCAL_QUORUM,
        serial_consistency_level=ConsistencyLevel.LOCAL_SERIAL,
        request_timeout=30.0,
    )
    cluster = Cluster(
        contact_points=[cassandra_server.host],
        port=cassandra_server.port,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
    )
    session = cluster.connect()
    keyspace = f"smoke_{uuid.uuid4().hex[:12]}"
    session.execute(
        f"CREATE KEYSPACE {keyspace} WITH replication = "
        f"{{'class': 'NetworkTopologyStrategy', '{CASSANDRA_DATACENTER}': 1}}"
    )
    session.set_keyspace(keyspace)
    session.execute("CREATE TABLE jobs (job_id text PRIMARY KEY, version int, state text)")
    yield session
    session.execute(f"DROP KEYSPACE {keyspace}")
    cluster.shutdown()


def test_cassandra_write_then_read(cassandra_session: Session) -> None:
    cassandra_session.execute(
        "INSERT INTO jobs (job_id, version, state) VALUES (%s, %s, %s)", ("plain-1", 1, "Accepted")
    )

    row = cassandra_session.execute("SELECT version, state FROM jobs WHERE job_id = %s", ("plain-1",)).one()

    assert (row.version, row.state) == (1, "Accepted")


def test_cassandra_insert_if_not_exists_applies_once(cassandra_session: Session) -> None:
    insert = cassandra_session.prepare(
        "INSERT INTO jobs (job_id, version, state) VALUES (?, ?, ?) IF NOT EXISTS"
    )

    first = cassandra_session.execute(insert, ("lwt-insert", 1, "Accepted"))
    second = cassandra_session.execute(insert, ("lwt-insert", 1, "Overwritten"))

    assert first.was_applied
    assert not second.was_applied
    # A refused LWT returns the row that made it fail, so the writer learns the current state in one trip.
    existing = second.one()
    assert (existing.version, existing.state) == (1, "Accepted")
    row = cassandra_session.execute("SELECT state FROM jobs WHERE job_id = 'lwt-insert'").one()
    assert row.state == "Accepted"


def test_cassandra_update_if_version_is_compare_and_set(cassandra_session: Session) -> None:
    cassandra_session.execute(
        "INSERT INTO jobs (job_id, version, state) VALUES ('lwt-cas', 1, 'Accepted') IF NOT EXISTS"
    )
    update = cassandra_session.prepare(
        "UPDATE jobs SET version = ?, state = ? WHERE job_id = ? IF version = ?"
    )

    moved = cassandra_session.execute(update, (2, "Running", "lwt-cas", 1))
    stale = cassandra_session.execute(update, (2, "Finished", "lwt-cas", 1))

    assert moved.was_applied
    assert not stale.was_applied
    assert stale.one().version == 2
    row = cassandra_session.execute("SELECT version, state FROM jobs WHERE job_id = 'lwt-cas'").one()
    assert (row.version, row.state) == (2, "Running")


def test_cassandra_concurrent_conditional_updates_let_exactly_one_win(cassandra_session: Session) -> None:
    cassandra_session.execute(
        "INSERT INTO jobs (job_id, version, state) VALUES ('lwt-race', 1, 'Accepted') IF NOT EXISTS"
    )
    update = cassandra_session.prepare(
        "UPDATE jobs SET version = 2, state = ? WHERE job_id = ? IF version = 1"
    )
    writers = [f"writer-{i}" for i in range(8)]

    with ThreadPoolExecutor(max_workers=len(writers)) as pool:
        results = list(pool.map(lambda w: cassandra_session.execute(update, (w, "lwt-race")), writers))

    winners = [w for w, result in zip(writers, results, strict=True) if result.was_applied]
    assert len(winners) == 1
    row = cassandra_session.execute("SELECT version, state FROM jobs WHERE job_id = 'lwt-race'").one()
    assert (row.version, row.state) == (2, winners[0])
