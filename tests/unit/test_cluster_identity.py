"""Cluster identity (master/cluster_identity.py): the pure decision, the manager's start-up on a real
SQLite store, and damaged SQLite files."""

from __future__ import annotations

from pathlib import Path

import pytest

from master.api.models import JobDescriptor
from master.cluster_identity import ClusterIdentityError, decide
from master.job_manager import JobManager
from master.store.base import StoreCorrupted
from master.store.sqlite import SqliteJobStore
from tests.conftest import service_job

WHERE = "/data/titus.db"

# (name, stored id, has data, init, expected id) -> (cluster id, write) or the refusal's words
CASES: list[tuple[str, str | None, bool, bool, str, tuple[str, bool] | str]] = [
    ("a named store runs as its cluster", "c1", True, False, "", ("c1", False)),
    ("init on a named store changes nothing", "c1", True, True, "", ("c1", False)),
    ("the expected cluster matches", "c1", True, False, "c1", ("c1", False)),
    ("another cluster's store is refused", "c1", True, True, "c2",
     "belongs to cluster c1, not to cluster c2"),
    ("an empty store is refused", None, False, False, "", "is empty or missing"),
    ("an empty store with init becomes a new cluster", None, False, True, "", ("new", True)),
    ("init takes the expected id when given", None, False, True, "c9", ("c9", True)),
    ("a store with data from before cluster ids is adopted", None, True, False, "", ("new", True)),
]


@pytest.mark.parametrize(("name", "stored", "has_data", "init", "expected", "outcome"), CASES,
                         ids=[c[0] for c in CASES])
def test_decide(name: str, stored: str | None, has_data: bool, init: bool, expected: str,
                outcome: tuple[str, bool] | str) -> None:
    if isinstance(outcome, str):
        with pytest.raises(ClusterIdentityError, match=outcome) as caught:
            decide(stored, has_data, init, expected, "new", WHERE)
        assert WHERE in str(caught.value)
        return
    verdict = decide(stored, has_data, init, expected, "new", WHERE)
    assert (verdict.cluster_id, verdict.write) == outcome


def test_the_refusal_says_what_to_do() -> None:
    with pytest.raises(ClusterIdentityError) as caught:
        decide(None, False, False, "", "new", WHERE)
    assert "--init-cluster" in str(caught.value) and "TITUS_DATA_DIR" in str(caught.value)


def test_a_master_on_an_empty_store_refuses_then_initialises_and_keeps_its_id(tmp_path: Path) -> None:
    db = tmp_path / "titus.db"
    first = JobManager(SqliteJobStore(db, "NORMAL"), lambda: 0)
    with pytest.raises(ClusterIdentityError, match="is empty or missing"):
        first.start(where=str(db))
    first.store.close()
    created = JobManager(SqliteJobStore(db, "NORMAL"), lambda: 0)
    created.start(init_cluster=True)
    assert created.cluster_id
    created.submit(JobDescriptor.model_validate(service_job(desired=0)))
    created.store.close()
    again = JobManager(SqliteJobStore(db, "NORMAL"), lambda: 0)
    again.start()  # no init needed: the store names its cluster
    assert again.cluster_id == created.cluster_id
    again.store.close()
    other = JobManager(SqliteJobStore(db, "NORMAL"), lambda: 0)
    with pytest.raises(ClusterIdentityError, match=f"belongs to cluster {created.cluster_id}"):
        other.start(expected_cluster_id="someone-else")
    other.store.close()


def _a_store_with_jobs(db: Path) -> None:
    jm = JobManager(SqliteJobStore(db, "FULL"), lambda: 0)
    jm.start(init_cluster=True)
    for _ in range(200):  # enough pages that damage lands in the middle of the data
        jm.submit(JobDescriptor.model_validate(service_job(desired=0)))
    jm.store.close()
    for suffix in ("-wal", "-shm"):  # checkpointed on close; make sure only the main file is judged
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def test_a_truncated_store_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "titus.db"
    _a_store_with_jobs(db)
    with db.open("r+b") as f:
        f.truncate(db.stat().st_size // 2)
    with pytest.raises(StoreCorrupted, match="is damaged") as caught:
        store = SqliteJobStore(db, "NORMAL")
        store.migrate()
    assert str(db) in str(caught.value) and "backup" in str(caught.value)


def test_garbage_in_the_middle_of_the_store_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "titus.db"
    _a_store_with_jobs(db)
    size = db.stat().st_size
    with db.open("r+b") as f:
        f.seek(size // 2)
        f.write(b"\xde\xad\xbe\xef" * 4096)
    with pytest.raises(StoreCorrupted, match="is damaged"):
        store = SqliteJobStore(db, "NORMAL")
        store.migrate()


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "titus.db"
    db.write_bytes(b"this is not SQLite" * 1000)
    with pytest.raises(StoreCorrupted, match="is damaged"):
        store = SqliteJobStore(db, "NORMAL")
        store.migrate()
