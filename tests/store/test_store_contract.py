"""The JobStore contract, run against every implementation: SQLite and a real Cassandra 5.0 node."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from master.store.base import JobStore, StaleEpoch, VersionConflict, Write
from master.store.sqlite import SqliteJobStore

if TYPE_CHECKING:
    from tests.fixtures.servers import CassandraEndpoint


StoreFactory = Callable[[], JobStore]
CONTRACT_KEYSPACE = "titus_contract_test"


@pytest.fixture(scope="module")
def cassandra_keyspace(cassandra_server: CassandraEndpoint) -> Iterator[object]:
    """One keyspace for the module, created once and emptied before each test (much faster than per test)."""
    from master.store.cassandra import CassandraJobStore, CassandraSettings

    settings = CassandraSettings(hosts=(cassandra_server.host,), port=cassandra_server.port,
                                 keyspace=CONTRACT_KEYSPACE)
    admin = CassandraJobStore(settings)
    admin.migrate()
    yield admin
    admin.drop_keyspace()
    admin.close()


@pytest.fixture(params=["sqlite", "cassandra"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Returns a factory: every call opens another client on the same storage (as a second master would)."""
    opened: list[JobStore] = []
    if request.param == "cassandra":
        from master.store.cassandra import CassandraJobStore

        admin = request.getfixturevalue("cassandra_keyspace")
        assert isinstance(admin, CassandraJobStore)
        admin.truncate()

    def make() -> JobStore:
        store: JobStore
        if request.param == "sqlite":
            store = SqliteJobStore(tmp_path / "titus.db", synchronous="NORMAL")
        else:
            store = CassandraJobStore(admin.settings)
        store.migrate()
        opened.append(store)
        return store

    yield make
    for s in opened:
        s.close()


def job(job_id: str, note: str = "") -> dict[str, object]:
    return {"id": job_id, "note": note}


def test_insert_then_conditional_update(store_factory: StoreFactory) -> None:
    store = store_factory()
    epoch = store.acquire_epoch()
    store.apply(epoch, [Write("job", "j1", 0, job("j1", "a"))])
    assert store.get("job", "j1").record["note"] == "a"  # type: ignore[union-attr]
    store.apply(epoch, [Write("job", "j1", 1, job("j1", "b"))])
    stored = store.get("job", "j1")
    assert stored is not None and stored.version == 2 and stored.record["note"] == "b"


def test_stale_version_is_refused_and_batch_is_atomic(store_factory: StoreFactory) -> None:
    store = store_factory()
    epoch = store.acquire_epoch()
    store.apply(epoch, [Write("job", "j1", 0, job("j1"))])
    with pytest.raises(VersionConflict):
        store.apply(epoch, [Write("job", "j2", 0, job("j2")), Write("job", "j1", 5, job("j1", "lost"))])
    assert store.get("job", "j2") is None
    assert store.get("job", "j1").record["note"] == ""  # type: ignore[union-attr]


def test_duplicate_insert_is_a_conflict(store_factory: StoreFactory) -> None:
    store = store_factory()
    epoch = store.acquire_epoch()
    store.apply(epoch, [Write("task", "t1", 0, {"id": "t1"})])
    with pytest.raises(VersionConflict):
        store.apply(epoch, [Write("task", "t1", 0, {"id": "t1"})])


def test_newer_epoch_fences_the_old_writer(store_factory: StoreFactory) -> None:
    old, new = store_factory(), store_factory()
    old_epoch = old.acquire_epoch()
    new_epoch = new.acquire_epoch()
    assert new_epoch > old_epoch
    with pytest.raises(StaleEpoch):
        old.apply(old_epoch, [Write("job", "j1", 0, job("j1"))])
    new.apply(new_epoch, [Write("job", "j1", 0, job("j1"))])
    assert old.get("job", "j1") is not None


def test_archived_entities_leave_the_active_set_but_stay_readable(store_factory: StoreFactory) -> None:
    store = store_factory()
    epoch = store.acquire_epoch()
    store.apply(epoch, [Write("job", "j1", 0, job("j1")), Write("job", "j2", 0, job("j2"))])
    store.apply(epoch, [Write("job", "j1", 1, job("j1", "done"), archived=True)])
    assert [s.record["id"] for s in store.load_active("job")] == ["j2"]
    assert store.get("job", "j1").record["note"] == "done"  # type: ignore[union-attr]
    assert [s.record["id"] for s in store.list_archived("job", 10)] == ["j1"]


def test_idempotency_keys_map_to_one_job(store_factory: StoreFactory) -> None:
    store = store_factory()
    epoch = store.acquire_epoch()
    store.apply(epoch, [Write("job", "j1", 0, job("j1"), idempotency_key="k")])
    assert store.job_for_idempotency_key("k") == "j1"
    assert store.job_for_idempotency_key("other") is None
    with pytest.raises(VersionConflict):
        store.apply(epoch, [Write("job", "j2", 0, job("j2"), idempotency_key="k")])


def test_concurrent_writers_share_commits_and_lose_nothing(store_factory: StoreFactory) -> None:
    store = store_factory()
    epoch = store.acquire_epoch()
    errors: list[Exception] = []

    def writer(n: int) -> None:
        try:
            for i in range(50):
                store.apply(epoch, [Write("task", f"t{n}-{i}", 0, {"id": f"t{n}-{i}"})])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.load_active("task")) == 400


def test_a_second_client_sees_committed_writes(store_factory: StoreFactory) -> None:
    writer, reader = store_factory(), store_factory()
    epoch = writer.acquire_epoch()
    writer.apply(epoch, [Write("agent", "a1", 0, {"id": "a1"})])
    assert [s.record["id"] for s in reader.load_active("agent")] == ["a1"]


def test_migrate_is_idempotent(store_factory: StoreFactory) -> None:
    store = store_factory()
    epoch = store.acquire_epoch()
    store.apply(epoch, [Write("job", "j1", 0, job("j1"))])
    store.migrate()
    store.migrate()
    assert store.get("job", "j1") is not None
    assert store.acquire_epoch() == epoch + 1


@pytest.mark.parametrize("kind", ["capacity_group", "instance_group"])
def test_group_kinds_round_trip(store_factory: StoreFactory, kind: str) -> None:
    store = store_factory()
    epoch = store.acquire_epoch()
    store.apply(epoch, [Write(kind, "g1", 0, {"id": "g1", "n": 1})])  # type: ignore[arg-type]
    store.apply(epoch, [Write(kind, "g1", 1, {"id": "g1", "n": 2})])  # type: ignore[arg-type]
    assert [s.record for s in store.load_active(kind)] == [{"id": "g1", "n": 2}]  # type: ignore[arg-type]
