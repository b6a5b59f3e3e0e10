"""SQLite JobStore: the embedded default. WAL mode, one writer thread doing group commit.

Group commit is how acknowledging only durable writes stays fast: every request thread hands its batch
to the committer and waits; the committer applies everything queued in one transaction (a savepoint per
batch, so one conflicting batch fails alone) and pays one fsync for all of them (DESIGN.md #3).
"""

from __future__ import annotations

import json
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from master.store.base import Kind, StaleEpoch, StoreCorrupted, Stored, StoreError, VersionConflict, Write

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS entities (
    kind TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, archived INTEGER NOT NULL DEFAULT 0,
    archived_at REAL, body TEXT NOT NULL, PRIMARY KEY (kind, id));
CREATE INDEX IF NOT EXISTS entities_active ON entities (kind, archived);
CREATE TABLE IF NOT EXISTS idempotency (key TEXT PRIMARY KEY, job_id TEXT NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('epoch', 0), ('schema_version', 1);
"""


@dataclass
class _Request:
    epoch: int
    writes: Sequence[Write]
    done: threading.Event = field(default_factory=threading.Event)
    error: StoreError | None = None

    def wait(self) -> None:
        self.done.wait()
        if self.error is not None:
            raise self.error


class SqliteJobStore:
    def __init__(self, path: str | Path, synchronous: str = "FULL") -> None:
        self._path = str(path)
        if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"unknown synchronous mode {synchronous}")
        self._synchronous = synchronous
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._read_lock = threading.Lock()
        try:
            self._reader = self._connect()
        except sqlite3.DatabaseError as exc:
            raise self._corrupted(exc) from exc
        self._committer: threading.Thread | None = None
        self._closed = False
        # Told the duration and size of every group commit (master/metrics.py); plain numbers, no library.
        self.on_commit: Callable[[float, int], None] = lambda seconds, batch: None

    def _connect(self) -> sqlite3.Connection:
        if self._path != ":memory:":  # 0600 before the first byte; SQLite gives -wal/-shm the same mode
            os.close(os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600))
            os.chmod(self._path, 0o600)
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    # ------------------------------------------------------------------------------------ lifecycle
    def _corrupted(self, exc: BaseException) -> StoreCorrupted:
        return StoreCorrupted(
            f"the SQLite store {self._path} is damaged ({exc}); the master cannot trust it and stops. "
            f"Restore the file from a backup, or move it aside (with its -wal and -shm files) and start a "
            f"new cluster with --init-cluster (its jobs are then gone)"
        )

    def migrate(self) -> None:
        """Create the schema, after checking the file's integrity: a damaged file is StoreCorrupted here,
        at start-up, rather than a traceback at the first read of a bad page."""
        with self._read_lock:
            try:
                problems = [row[0] for row in self._reader.execute("PRAGMA quick_check").fetchall()]
                if problems != ["ok"]:
                    raise self._corrupted(RuntimeError("; ".join(problems[:3])))
                self._reader.executescript(_SCHEMA)
            except sqlite3.DatabaseError as exc:
                raise self._corrupted(exc) from exc
        if self._committer is None:
            self._committer = threading.Thread(target=self._commit_loop, name="sqlite-committer", daemon=True)
            self._committer.start()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        if self._committer is not None:
            self._committer.join(timeout=10)
        with self._read_lock:
            self._reader.close()

    # ---------------------------------------------------------------------------------------- epoch
    def acquire_epoch(self) -> int:
        with self._read_lock:
            self._reader.execute("BEGIN IMMEDIATE")
            try:
                self._reader.execute("UPDATE meta SET value = value + 1 WHERE key = 'epoch'")
                (epoch,) = self._reader.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
                self._reader.execute("COMMIT")
            except BaseException:
                self._reader.execute("ROLLBACK")
                raise
        return int(epoch)

    # ---------------------------------------------------------------------------------------- writes
    def begin_apply(self, epoch: int, writes: Sequence[Write]) -> _Request:
        request = _Request(epoch, writes)
        if not writes:
            request.done.set()
        elif self._closed or self._committer is None:
            request.error = StoreError("store is not open")
            request.done.set()
        else:
            self._queue.put(request)
        return request

    def apply(self, epoch: int, writes: Sequence[Write]) -> None:
        self.begin_apply(epoch, writes).wait()

    def _commit_loop(self) -> None:
        conn = self._connect()
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch = [first]
                while True:  # take everything that queued up while the last fsync ran
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        self._commit(conn, batch)
                        return
                    batch.append(nxt)
                self._commit(conn, batch)
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[_Request]) -> None:
        started = time.perf_counter()
        try:
            conn.execute("BEGIN IMMEDIATE")
            (current_epoch,) = conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
            for request in batch:
                if request.epoch < current_epoch:
                    request.error = StaleEpoch(f"epoch {request.epoch} is older than {current_epoch}")
                    continue
                conn.execute("SAVEPOINT req")
                try:
                    self._apply_one(conn, request.writes)
                    conn.execute("RELEASE req")
                except StoreError as exc:
                    conn.execute("ROLLBACK TO req")
                    conn.execute("RELEASE req")
                    request.error = exc
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            damaged = isinstance(exc, sqlite3.DatabaseError) and "malformed" in str(exc)
            for request in batch:
                request.error = request.error or (
                    self._corrupted(exc) if damaged else StoreError(f"sqlite: {exc}")
                )
        finally:
            for request in batch:
                request.done.set()
            self.on_commit(time.perf_counter() - started, len(batch))

    @staticmethod
    def _apply_one(conn: sqlite3.Connection, writes: Sequence[Write]) -> None:
        now = time.time()
        for w in writes:
            body = json.dumps(w.record, separators=(",", ":"))
            archived_at = now if w.archived else None
            if w.expected_version == 0:
                try:
                    conn.execute(
                        "INSERT INTO entities (kind, id, version, archived, archived_at, body) "
                        "VALUES (?, ?, 1, ?, ?, ?)",
                        (w.kind, w.id, int(w.archived), archived_at, body),
                    )
                except sqlite3.IntegrityError as exc:
                    raise VersionConflict(f"{w.kind} {w.id} already exists") from exc
            else:
                cur = conn.execute(
                    "UPDATE entities SET version = version + 1, archived = ?, archived_at = ?, body = ? "
                    "WHERE kind = ? AND id = ? AND version = ?",
                    (int(w.archived), archived_at, body, w.kind, w.id, w.expected_version),
                )
                if cur.rowcount != 1:
                    raise VersionConflict(f"{w.kind} {w.id} is not at version {w.expected_version}")
            if w.idempotency_key is not None:
                try:
                    conn.execute(
                        "INSERT INTO idempotency (key, job_id) VALUES (?, ?)", (w.idempotency_key, w.id)
                    )
                except sqlite3.IntegrityError as exc:
                    raise VersionConflict(f"idempotency key {w.idempotency_key!r} already used") from exc

    # ----------------------------------------------------------------------------------------- reads
    def load_active(self, kind: Kind) -> list[Stored]:
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT body, version FROM entities WHERE kind = ? AND archived = 0", (kind,)
            ).fetchall()
        return [Stored(json.loads(body), version) for body, version in rows]

    def get(self, kind: Kind, entity_id: str) -> Stored | None:
        with self._read_lock:
            row = self._reader.execute(
                "SELECT body, version FROM entities WHERE kind = ? AND id = ?", (kind, entity_id)
            ).fetchone()
        return Stored(json.loads(row[0]), row[1]) if row else None

    def list_archived(self, kind: Kind, limit: int) -> list[Stored]:
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT body, version FROM entities WHERE kind = ? AND archived = 1 "
                "ORDER BY archived_at DESC LIMIT ?",
                (kind, limit),
            ).fetchall()
        return [Stored(json.loads(body), version) for body, version in rows]

    def job_for_idempotency_key(self, key: str) -> str | None:
        with self._read_lock:
            row = self._reader.execute("SELECT job_id FROM idempotency WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None
