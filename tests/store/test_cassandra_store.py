"""What only the Cassandra store has: TTL'd archive, versioned schema, LWT races between two clients.

One keyspace for the module; each test uses its own entity ids, so nothing is truncated between tests
(the migration test uses a keyspace of its own, since creating one is what it tests).
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from master.store.base import StaleEpoch, VersionConflict, Write

if TYPE_CHECKING:
    from tests.fixtures.servers import CassandraEndpoint

from master.store.cassandra import SCHEMA_VERSION, CassandraJobStore, CassandraSettings

KEYSPACE = "titus_cassandra_test"
OpenStore = Callable[..., CassandraJobStore]


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def poll(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def settings(cassandra_server: CassandraEndpoint) -> Iterator[CassandraSettings]:
    base = CassandraSettings(hosts=(cassandra_server.host,), port=cassandra_server.port, keyspace=KEYSPACE)
    admin = CassandraJobStore(base)
    admin.migrate()
    yield base
    admin.drop_keyspace()
    admin.close()


@pytest.fixture
def open_store(settings: CassandraSettings) -> Iterator[OpenStore]:
    """Opens clients on the module's keyspace, as separate masters would; closes them afterwards."""
    opened: list[CassandraJobStore] = []

    def make(**overrides: Any) -> CassandraJobStore:
        store = CassandraJobStore(dataclasses.replace(settings, **overrides))
        store.migrate()
        opened.append(store)
        return store

    yield make
    for s in opened:
        s.close()


def test_archived_rows_expire_after_their_ttl_and_never_come_back(open_store: OpenStore) -> None:
    short = open_store(archive_ttl_s=2)
    long = open_store()
    epoch = long.acquire_epoch()
    brief, kept = uid("brief"), uid("kept")
    long.apply(epoch, [Write("job", kept, 0, {"id": kept}),
                       Write("job", kept, 1, {"id": kept}, archived=True)])
    short.apply(epoch, [Write("job", brief, 0, {"id": brief}),
                        Write("job", brief, 1, {"id": brief, "note": "done"}, archived=True)])
    assert brief not in [s.record["id"] for s in short.load_active("job")]

    poll(lambda: short.get("job", brief) is None, what="the archived job's TTL to run out")

    assert brief not in [s.record["id"] for s in long.load_active("job")]
    assert brief not in [s.record["id"] for s in long.list_archived("job", 1000)]
    kept_now = long.get("job", kept)
    assert kept_now is not None and kept_now.version == 2
    assert kept in [s.record["id"] for s in long.list_archived("job", 1000)]


def test_list_archived_is_newest_first(open_store: OpenStore) -> None:
    store = open_store()
    epoch = store.acquire_epoch()
    ids = [uid("order") for _ in range(3)]
    for job_id in ids:
        store.apply(epoch, [Write("task", job_id, 0, {"id": job_id})])
        store.apply(epoch, [Write("task", job_id, 1, {"id": job_id}, archived=True)])
        time.sleep(0.01)  # distinct archive timestamps (milliseconds), not a wait for an outcome
    listed = [s.record["id"] for s in store.list_archived("task", 100) if s.record["id"] in ids]
    assert listed == list(reversed(ids))


def test_migrate_creates_and_upgrades_the_schema_idempotently(cassandra_server: CassandraEndpoint) -> None:
    settings = CassandraSettings(hosts=(cassandra_server.host,), port=cassandra_server.port,
                                 keyspace="titus_migrate_test")
    store = CassandraJobStore(settings)
    try:
        store.drop_keyspace()
        assert store.schema_version() == 0
        store.migrate(up_to=1)  # an installation made by the first release
        assert store.schema_version() == 1
        epoch = store.acquire_epoch()
        store.apply(epoch, [Write("job", "old", 0, {"id": "old"})])

        store.migrate()  # the upgrade
        assert store.schema_version() == SCHEMA_VERSION == 5
        store.migrate()
        assert store.schema_version() == 5
        stored = store.get("job", "old")
        assert stored is not None and stored.record == {"id": "old"}
        assert store.acquire_epoch() == epoch + 1  # the epoch survived both migrations
        store.apply(epoch + 1, [Write("job", "old", 1, {"id": "old"}, archived=True)])
        assert [s.record["id"] for s in store.list_archived("job", 10)] == ["old"]  # needs migration 2
        store.apply(epoch + 1, [Write("framework", "titus", 0, {"frameworkId": "fw-1"})])  # needs migration 4
        framework = store.get("framework", "titus")
        assert framework is not None and (framework.record, framework.version) == ({"frameworkId": "fw-1"}, 1)
        store.apply(epoch + 1, [Write("credential", "agent:c1", 0, {"type": "agent"})])  # needs migration 5
        assert [s.record for s in store.load_active("credential")] == [{"type": "agent"}]
    finally:
        store.drop_keyspace()
        store.close()


def race(*attempts: Callable[[], None]) -> list[str]:
    """Runs the attempts at the same moment; returns 'won' or 'lost' (VersionConflict) for each."""
    barrier = threading.Barrier(len(attempts))
    outcomes = [""] * len(attempts)

    def run(i: int) -> None:
        barrier.wait()
        try:
            attempts[i]()
            outcomes[i] = "won"
        except VersionConflict:
            outcomes[i] = "lost"

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(attempts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def test_two_clients_racing_on_one_row_exactly_one_wins_each_round(open_store: OpenStore) -> None:
    a, b = open_store(), open_store()
    epoch = a.acquire_epoch()
    job_id = uid("race")
    a.apply(epoch, [Write("job", job_id, 0, {"id": job_id, "by": "a"})])
    for version in range(1, 11):
        writes = {n: [Write("job", job_id, version, {"id": job_id, "by": n})] for n in "ab"}
        outcomes = race(functools.partial(a.apply, epoch, writes["a"]),
                        functools.partial(b.apply, epoch, writes["b"]))
        assert sorted(outcomes) == ["lost", "won"]
        stored = b.get("job", job_id)
        winner = "a" if outcomes[0] == "won" else "b"
        assert stored is not None and stored.version == version + 1 and stored.record["by"] == winner


def test_two_clients_inserting_one_id_exactly_one_wins(open_store: OpenStore) -> None:
    a, b = open_store(), open_store()
    epoch = a.acquire_epoch()
    for _ in range(5):
        task_id = uid("insert")
        writes = {n: [Write("task", task_id, 0, {"id": task_id, "by": n})] for n in "ab"}
        outcomes = race(functools.partial(a.apply, epoch, writes["a"]),
                        functools.partial(b.apply, epoch, writes["b"]))
        assert sorted(outcomes) == ["lost", "won"]
        stored = b.get("task", task_id)
        assert stored is not None and stored.record["by"] == ("a" if outcomes[0] == "won" else "b")


def test_a_refused_batch_puts_back_the_rows_it_had_updated(open_store: OpenStore) -> None:
    store = open_store()
    epoch = store.acquire_epoch()
    one, two, new = uid("one"), uid("two"), uid("new")
    store.apply(epoch, [Write("task", one, 0, {"id": one, "v": 1}),
                        Write("task", two, 0, {"id": two, "v": 1})])
    with pytest.raises(VersionConflict):
        store.apply(epoch, [Write("task", one, 1, {"id": one, "v": 2}), Write("task", new, 0, {"id": new}),
                            Write("task", two, 7, {"id": two, "v": 2})])
    first = store.get("task", one)
    assert first is not None and first.version == 1 and first.record["v"] == 1
    assert store.get("task", new) is None
    store.apply(epoch, [Write("task", one, 1, {"id": one, "v": 2})])  # the row is writable as before
    assert store.get("task", one).version == 2  # type: ignore[union-attr]


def test_a_refused_idempotency_key_leaves_no_job_behind(open_store: OpenStore) -> None:
    store = open_store()
    epoch = store.acquire_epoch()
    key, first, second = uid("key"), uid("job"), uid("job")
    store.apply(epoch, [Write("job", first, 0, {"id": first}, idempotency_key=key)])
    with pytest.raises(VersionConflict):
        store.apply(epoch, [Write("job", second, 0, {"id": second}, idempotency_key=key),
                            Write("task", uid("task"), 0, {"id": "t"})])
    assert store.get("job", second) is None
    assert store.job_for_idempotency_key(key) == first


def test_writes_of_one_entity_queued_together_apply_in_queue_order(open_store: OpenStore) -> None:
    store = open_store()
    epoch = store.acquire_epoch()
    task_id = uid("chain")
    pending = [store.begin_apply(epoch, [Write("task", task_id, v, {"id": task_id, "v": v + 1})])
               for v in range(20)]
    for p in pending:
        p.wait()
    stored = store.get("task", task_id)
    assert stored is not None and stored.version == 20 and stored.record["v"] == 20


def test_a_deposed_writer_is_refused_even_with_writes_already_queued(open_store: OpenStore) -> None:
    old, new = open_store(), open_store()
    old_epoch = old.acquire_epoch()
    job_id = uid("fenced")
    old.apply(old_epoch, [Write("job", job_id, 0, {"id": job_id})])
    new_epoch = new.acquire_epoch()
    new.apply(new_epoch, [Write("job", job_id, 1, {"id": job_id, "by": "new"})])
    pending = [old.begin_apply(old_epoch, [Write("job", job_id, 2, {"id": job_id, "by": "old"})]),
               old.begin_apply(old_epoch, [Write("job", uid("fresh"), 0, {"id": "x"})])]
    for p in pending:
        with pytest.raises(StaleEpoch):
            p.wait()
    stored = new.get("job", job_id)
    assert stored is not None and stored.record["by"] == "new" and stored.version == 2


class CrashesMidMove(CassandraJobStore):
    """Stops an archive move after its conditional first step, as a master killed at that moment would."""

    def _complete_archive_moves(self, ops: list[Any]) -> None:
        pass


def test_an_archive_move_cut_short_is_invisible_and_finished_by_the_next_leader(
        open_store: OpenStore, settings: CassandraSettings) -> None:
    crashing = CrashesMidMove(settings)
    crashing.migrate()
    try:
        epoch = crashing.acquire_epoch()
        job_id = uid("moving")
        crashing.apply(epoch, [Write("job", job_id, 0, {"id": job_id})])
        crashing.apply(epoch, [Write("job", job_id, 1, {"id": job_id, "note": "done"}, archived=True)])
    finally:
        crashing.close()
    reader = open_store()
    assert job_id not in [s.record["id"] for s in reader.load_active("job")]
    half_moved = reader.get("job", job_id)
    assert half_moved is not None and half_moved.version == 2 and half_moved.record["note"] == "done"
    assert job_id not in [s.record["id"] for s in reader.list_archived("job", 1000)]

    reader.acquire_epoch()  # the next leader

    assert job_id in [s.record["id"] for s in reader.list_archived("job", 1000)]
    moved = reader.get("job", job_id)
    assert moved is not None and moved.version == 2 and moved.record["note"] == "done"
