"""Cassandra JobStore: the state of a highly available master (the only module importing cassandra-driver).

Layout (keyspace configurable, replication SimpleStrategy with an RF for tests, NetworkTopologyStrategy
per datacenter for production):

* `jobs`, `tasks`, `agents`: the active entities, one partition per entity, so every conditional write is
  a lightweight transaction (LWT) on its own partition and unrelated entities never contend.
* `archived_jobs`, `archived_tasks`, `archived_agents`: finished entities, written with a TTL
  (`archive_ttl_s`), so history stays readable for a while and then disappears without a cleanup job.
  `archive_log` indexes them by day (newest first) for `list_archived`, with the same TTL.
* `idempotency`: Idempotency-Key -> job id, claimed with INSERT ... IF NOT EXISTS.
* `leader`: the epoch row. `schema_version`: what `migrate` has applied.

Consistency: plain reads and writes use LOCAL_QUORUM; LWTs use `serial_consistency` for their Paxos phase
(LOCAL_SERIAL by default; use SERIAL when masters run in more than one datacenter, so the epoch and the
entity rows are linearizable across all of them) and LOCAL_QUORUM for their commit, which is why a
LOCAL_QUORUM read after an acknowledged LWT sees it. Epoch checks are reads at the serial level.

Conditional writes: an insert is `INSERT ... IF NOT EXISTS`; an update is `UPDATE ... IF version = ? AND
epoch <= ?`, so neither a stale version nor a row already stamped by a newer leader can be overwritten.

Batches are atomic from the caller's point of view although Cassandra has no multi-partition transaction:
the store applies a batch's rows conditionally and undoes what did apply when any row of the batch is
refused (a batch's single update goes last, after its inserts, so it never needs undoing): inserted rows are
deleted (`IF version = <ours>`), and when a batch updates two or more rows their previous contents are read
(at the serial level) first so they can be put back. A crash of the master in the middle of that can leave
part of a refused batch applied; the master then stops leading (any store error fences it), and the next
leader loads whatever is stored.

Fencing, and the window that remains. LWTs are per partition, so one statement cannot both check the epoch
row and write an entity. Each group commit therefore (1) reads the epoch at the serial level before writing
(or reuses the previous group's after-write read if it is younger than `epoch_fresh_s`, measured on the
monotonic clock, which keeps running through a SIGSTOP) and refuses batches from an older epoch, (2)
conditions every update on `epoch <= writer's`, and (3) reads the epoch again after its writes committed and
reports StaleEpoch instead of success if it moved. (3) is what makes acknowledgement safe: a batch
acknowledged at epoch e committed before any newer leader's `acquire_epoch`, hence before that leader's
`load_active`, which therefore sees it. What (1) cannot exclude is a writer that passed its check, stalled
(GC, SIGSTOP) while a new leader took over and loaded state, and then landed writes: those writes are never
acknowledged (3), but they are in the store. An insert becomes a row the new leader does not know until its
next start; an update of a row the new leader has not written yet bumps its version, so the new leader's
next write of that row gets a VersionConflict and it fences itself (safe, costs a failover). Closing the
window entirely needs multi-partition transactions (Accord, Cassandra 5.1+).

Ordering: one committer thread takes everything queued (group commit). Batches keep queue order wherever
they touch a common entity: the group is cut into segments of batches with pairwise disjoint entities,
each segment's statements run concurrently (async), segments run one after the other.

Cost: a submission is one LWT per row (job, each task, the idempotency key), each a Paxos round on
the Cassandra side (about 2 ms of server CPU per LWT measured on the single test node with paxos v1 and
C1-only JIT); `paxos_variant: v2` in cassandra.yaml makes them cheaper.

Archive moves: a write with archived=True first updates the active row conditionally (flagging it
archived, so load_active skips it from that moment), then inserts the archive row (with its TTL) and the
archive_log entry, then deletes the active row conditionally. get() reads both tables and returns the
newer version, so a crash between those steps is never visible as a lost or duplicated entity; the next
leader's acquire_epoch finishes any move left half done.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cassandra import ConsistencyLevel, DriverException, RequestExecutionException
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, ResponseFuture, Session
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
from cassandra.query import BoundStatement, PreparedStatement, SimpleStatement

from master.store.base import Kind, StaleEpoch, Stored, StoreError, VersionConflict, Write

log = logging.getLogger("titus.store.cassandra")

KINDS_V1: tuple[Kind, ...] = ("job", "task", "agent")
KINDS_V3: tuple[Kind, ...] = ("capacity_group", "instance_group")
KINDS_V4: tuple[Kind, ...] = ("framework",)
KINDS_V5: tuple[Kind, ...] = ("cluster", "credential")
KINDS: tuple[Kind, ...] = (*KINDS_V1, *KINDS_V3, *KINDS_V4, *KINDS_V5)
_DAY_S = 86_400


def _active_table(kind: Kind) -> str:
    return f"{kind}s"


def _archive_table(kind: Kind) -> str:
    return f"archived_{kind}s"


def _entity_columns() -> str:
    return "id text PRIMARY KEY, version bigint, epoch bigint, archived boolean, body text"


# Each migration is idempotent on its own (IF NOT EXISTS), so a crash between a migration and recording
# its number is repaired by running it again. Append; never edit a released step.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the entities, the epoch, idempotency keys.
    (
        *(f"CREATE TABLE IF NOT EXISTS {_active_table(k)} ({_entity_columns()})" for k in KINDS_V1),
        *(f"CREATE TABLE IF NOT EXISTS {_archive_table(k)} "
          "(id text PRIMARY KEY, version bigint, archived_at timestamp, body text)" for k in KINDS_V1),
        "CREATE TABLE IF NOT EXISTS idempotency (key text PRIMARY KEY, job_id text)",
        "CREATE TABLE IF NOT EXISTS leader (name text PRIMARY KEY, epoch bigint)",
    ),
    # 2: newest-first index of archived entities, one partition per kind and day.
    (
        "CREATE TABLE IF NOT EXISTS archive_log (kind text, day int, archived_at timestamp, id text, "
        "PRIMARY KEY ((kind, day), archived_at, id)) WITH CLUSTERING ORDER BY (archived_at DESC, id ASC)",
    ),
    # 3: capacity groups (ApplicationSLA) and instance groups (agent pools with their lifecycle).
    (
        *(f"CREATE TABLE IF NOT EXISTS {_active_table(k)} ({_entity_columns()})" for k in KINDS_V3),
        *(f"CREATE TABLE IF NOT EXISTS {_archive_table(k)} "
          "(id text PRIMARY KEY, version bigint, archived_at timestamp, body text)" for k in KINDS_V3),
    ),
    # 4: the Mesos backend's framework registrations (FrameworkID per framework name).
    (
        *(f"CREATE TABLE IF NOT EXISTS {_active_table(k)} ({_entity_columns()})" for k in KINDS_V4),
        *(f"CREATE TABLE IF NOT EXISTS {_archive_table(k)} "
          "(id text PRIMARY KEY, version bigint, archived_at timestamp, body text)" for k in KINDS_V4),
    ),
    # 5: the cluster's identity (master/cluster_identity.py); agent bootstrap tokens and per-agent
    # credentials (master/agent_auth.py).
    (
        *(f"CREATE TABLE IF NOT EXISTS {_active_table(k)} ({_entity_columns()})" for k in KINDS_V5),
        *(f"CREATE TABLE IF NOT EXISTS {_archive_table(k)} "
          "(id text PRIMARY KEY, version bigint, archived_at timestamp, body text)" for k in KINDS_V5),
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

_CONSISTENCY = {"SERIAL": ConsistencyLevel.SERIAL, "LOCAL_SERIAL": ConsistencyLevel.LOCAL_SERIAL}


@dataclass(frozen=True)
class CassandraSettings:
    hosts: tuple[str, ...] = ("127.0.0.1",)
    port: int = 9042
    keyspace: str = "titus"
    replication_strategy: str = "SimpleStrategy"  # or NetworkTopologyStrategy
    replication_factor: int = 1  # SimpleStrategy only
    datacenters: tuple[tuple[str, int], ...] = ()  # NetworkTopologyStrategy: (dc, rf) pairs
    local_dc: str | None = None  # for the load balancer; the driver picks the first host's DC if None
    archive_ttl_s: int = 7 * _DAY_S
    serial_consistency: str = "LOCAL_SERIAL"
    request_timeout_s: float = 12.0
    # A group commit skips its before-write epoch read if the previous after-write read is this recent.
    # Acknowledgement never depends on it (the after-write read does); it only narrows the window.
    epoch_fresh_s: float = 0.25

    def __post_init__(self) -> None:
        if not self.keyspace.isidentifier():
            raise ValueError(f"keyspace {self.keyspace!r} must be a plain identifier")
        if self.replication_strategy not in ("SimpleStrategy", "NetworkTopologyStrategy"):
            raise ValueError("replication strategy must be SimpleStrategy or NetworkTopologyStrategy")
        if self.replication_strategy == "NetworkTopologyStrategy" and not self.datacenters:
            raise ValueError("NetworkTopologyStrategy needs at least one datacenter:replication_factor")
        if self.replication_factor < 1 or any(rf < 1 for _, rf in self.datacenters):
            raise ValueError("replication factors must be at least 1")
        if self.archive_ttl_s < 1:
            raise ValueError("the archive TTL must be at least one second")
        if self.serial_consistency not in _CONSISTENCY:
            raise ValueError("serial consistency must be SERIAL or LOCAL_SERIAL")

    def replication_cql(self) -> str:
        if self.replication_strategy == "SimpleStrategy":
            return f"{{'class': 'SimpleStrategy', 'replication_factor': {self.replication_factor}}}"
        dcs = ", ".join(f"'{dc}': {rf}" for dc, rf in self.datacenters)
        return f"{{'class': 'NetworkTopologyStrategy', {dcs}}}"


# ============================================================================== committer plumbing
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


@dataclass
class _Op:
    """The net effect of a batch on one entity (several writes of one entity in a batch are folded)."""

    kind: Kind
    id: str
    expected: int
    new_version: int
    body: str
    archived: bool
    old: tuple[int, int, bool, str] | None = None  # (version, epoch, archived, body) read before an update
    applied: bool = False


@dataclass
class _Batch:
    request: _Request
    ops: list[_Op]
    keys: list[tuple[str, str]]  # (idempotency key, job id)
    keys_applied: list[tuple[str, str]] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.request.error is not None

    def fail(self, error: StoreError) -> None:
        if self.request.error is None:
            self.request.error = error

    def entities(self) -> set[tuple[str, str]]:
        return {(o.kind, o.id) for o in self.ops} | {("idempotency", k) for k, _ in self.keys}


def _fold(writes: Sequence[Write]) -> tuple[list[_Op], list[tuple[str, str]]]:
    ops: dict[tuple[str, str], _Op] = {}
    keys: list[tuple[str, str]] = []
    for w in writes:
        body = json.dumps(w.record, separators=(",", ":"))
        op = ops.get((w.kind, w.id))
        if op is None:
            ops[(w.kind, w.id)] = _Op(w.kind, w.id, w.expected_version, w.expected_version + 1, body,
                                      w.archived)
        elif w.expected_version != op.new_version:
            raise VersionConflict(f"{w.kind} {w.id} is not at version {w.expected_version}")
        else:
            op.new_version, op.body, op.archived = w.expected_version + 1, body, w.archived
        if w.idempotency_key is not None:
            keys.append((w.idempotency_key, w.id))
    return list(ops.values()), keys


def _segments(batches: list[_Batch]) -> list[list[_Batch]]:
    """Cut the queue into runs of batches touching disjoint entities; order holds across runs."""
    out: list[list[_Batch]] = []
    current: list[_Batch] = []
    seen: set[tuple[str, str]] = set()
    for b in batches:
        ents = b.entities()
        if ents & seen:
            out.append(current)
            current, seen = [], set()
        current.append(b)
        seen |= ents
    if current:
        out.append(current)
    return out


class CassandraJobStore:
    def __init__(self, settings: CassandraSettings) -> None:
        self.settings = settings
        self._serial = _CONSISTENCY[settings.serial_consistency]
        balancer = TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=settings.local_dc))
        profile = ExecutionProfile(load_balancing_policy=balancer,
                                   consistency_level=ConsistencyLevel.LOCAL_QUORUM,
                                   serial_consistency_level=self._serial,
                                   request_timeout=settings.request_timeout_s)
        self._cluster = Cluster(list(settings.hosts), port=settings.port,
                                execution_profiles={EXEC_PROFILE_DEFAULT: profile})
        try:
            self._session: Session = self._cluster.connect()
        except DriverException as exc:
            self._cluster.shutdown()
            raise StoreError(f"cannot reach Cassandra at {settings.hosts}:{settings.port}: {exc}") from exc
        self._prepared: dict[str, PreparedStatement] = {}
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._committer: threading.Thread | None = None
        self._closed = False
        # The last epoch the committer read at the serial level, and when (monotonic: it keeps running
        # through a SIGSTOP, so a writer that was paused always reads again before writing).
        self._epoch_seen = 0
        self._epoch_read_at = -1e9

    # ------------------------------------------------------------------------------------ lifecycle
    def migrate(self, up_to: int | None = None) -> None:
        """Bring the schema to SCHEMA_VERSION (or `up_to`); does no DDL when it is already there.

        DDL from several clients at once can leave Cassandra with disagreeing table ids, so operators run
        `titus db migrate` once per upgrade; a master's own call then finds the schema current.
        """
        target = SCHEMA_VERSION if up_to is None else up_to
        ks = self.settings.keyspace
        current = self.schema_version()
        if current < target:
            if current == 0:
                self._ddl(f"CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = "
                          f"{self.settings.replication_cql()}")
                self._ddl(f"CREATE TABLE IF NOT EXISTS {ks}.schema_version "
                          "(name text PRIMARY KEY, version int)")
            self._session.set_keyspace(ks)
            for number in range(current + 1, target + 1):
                for statement in MIGRATIONS[number - 1]:
                    self._ddl(statement)
                self._session.execute(SimpleStatement(
                    "INSERT INTO schema_version (name, version) VALUES ('titus', %s)"), (number,))
                log.info("schema of keyspace %s is at version %d", ks, number)
        self._session.set_keyspace(ks)
        self._prepared.clear()
        self._start_committer()

    def schema_version(self) -> int:
        """0 when the keyspace or its schema_version table does not exist yet."""
        ks = self.settings.keyspace
        rows = self._session.execute(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s AND table_name = %s",
            (ks, "schema_version"))
        if not list(rows):
            return 0
        row = self._session.execute(f"SELECT version FROM {ks}.schema_version WHERE name = 'titus'").one()
        return int(row.version) if row is not None else 0

    def _ddl(self, statement: str) -> None:
        self._session.execute(statement, timeout=60)
        # Wait until every node agrees, so the next statement (or another client) sees the new table.
        if not self._cluster.control_connection.wait_for_schema_agreement(wait_time=30):
            raise StoreError(f"schema agreement not reached after: {statement}")

    def _start_committer(self) -> None:
        if self._committer is None:
            self._committer = threading.Thread(target=self._commit_loop, name="cassandra-committer",
                                               daemon=True)
            self._committer.start()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        if self._committer is not None:
            self._committer.join(timeout=30)
        self._cluster.shutdown()

    # ------------------------------------------------------------------------------------- helpers
    def _bind(self, cql: str, values: Sequence[Any], consistency: int | None = None) -> BoundStatement:
        prepared = self._prepared.get(cql)
        if prepared is None:
            prepared = self._session.prepare(cql)
            self._prepared[cql] = prepared
        bound = prepared.bind(values)
        if consistency is not None:
            bound.consistency_level = consistency
        return bound

    def _run_all(self, statements: list[BoundStatement]) -> list[Any]:
        """Runs statements concurrently; returns each one's ResultSet or the exception it raised."""
        futures: list[ResponseFuture] = [self._session.execute_async(s) for s in statements]
        results: list[Any] = []
        for f in futures:
            try:
                results.append(f.result())
            except (DriverException, RequestExecutionException, OSError) as exc:
                results.append(exc)
        return results

    def _read_epoch(self) -> int:
        row = self._session.execute(
            self._bind("SELECT epoch FROM leader WHERE name = 'leader'", (), self._serial)).one()
        return int(row.epoch) if row is not None else 0

    # ---------------------------------------------------------------------------------------- epoch
    def acquire_epoch(self) -> int:
        while True:
            current = self._read_epoch()
            if current == 0:
                result = self._session.execute(self._bind(
                    "INSERT INTO leader (name, epoch) VALUES ('leader', 1) IF NOT EXISTS", ()))
            else:
                result = self._session.execute(self._bind(
                    "UPDATE leader SET epoch = ? WHERE name = 'leader' IF epoch = ?", (current + 1, current)))
            if result.was_applied:
                break
        epoch = current + 1
        self._finish_interrupted_moves()
        return epoch

    def _finish_interrupted_moves(self) -> None:
        version = self.schema_version()  # a store not yet upgraded lacks the later kinds' tables
        kinds = (*KINDS_V1, *(KINDS_V3 if version >= 3 else ()), *(KINDS_V4 if version >= 4 else ()),
                 *(KINDS_V5 if version >= 5 else ()))
        for kind in kinds:
            rows = self._session.execute(self._bind(
                f"SELECT id, version, body FROM {_active_table(kind)} WHERE archived = true ALLOW FILTERING",
                ()))
            ops = [_Op(kind, r.id, r.version - 1, r.version, r.body, True, applied=True) for r in rows]
            if ops:
                log.info("finishing %d interrupted archive moves of %s", len(ops), kind)
                self._complete_archive_moves(ops)

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
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            stop = False
            while True:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                group.append(nxt)
            try:
                self._commit(group)
            except Exception as exc:  # a bug or an unexpected driver error: fail the group, keep the loop
                log.exception("group commit failed")
                for r in group:
                    r.error = r.error or StoreError(f"cassandra: {exc}")
            finally:
                for r in group:
                    r.done.set()
            if stop:
                return

    def _committer_epoch(self, reuse_recent: bool) -> int:
        now = time.monotonic()
        if not reuse_recent or now - self._epoch_read_at > self.settings.epoch_fresh_s:
            self._epoch_seen = self._read_epoch()
            self._epoch_read_at = now
        return self._epoch_seen

    def _commit(self, group: list[_Request]) -> None:
        try:
            current = self._committer_epoch(reuse_recent=True)
        except (DriverException, RequestExecutionException) as exc:
            for r in group:
                r.error = StoreError(f"cassandra: epoch check failed: {exc}")
            return
        batches: list[_Batch] = []
        for r in group:
            if r.epoch < current:
                r.error = StaleEpoch(f"epoch {r.epoch} is older than {current}")
                continue
            try:
                ops, keys = _fold(r.writes)
            except VersionConflict as exc:
                r.error = exc
                continue
            batches.append(_Batch(r, ops, keys))
        for segment in _segments(batches):
            self._apply_segment(segment)
        if not any(not b.failed for b in batches):
            return
        try:
            after = self._committer_epoch(reuse_recent=False)
        except (DriverException, RequestExecutionException) as exc:
            after, error = None, StoreError(f"cassandra: epoch re-check failed: {exc}")
        for b in batches:
            if b.failed:
                continue
            if after is None:
                b.fail(error)
            elif b.request.epoch < after:
                b.fail(StaleEpoch(f"epoch {b.request.epoch} was superseded by {after} during the write"))

    def _apply_segment(self, segment: list[_Batch]) -> None:
        self._pre_read(segment)
        first: list[tuple[_Batch, _Op | tuple[str, str]]] = []
        second: list[tuple[_Batch, _Op | tuple[str, str]]] = []
        for b in segment:
            if b.failed:
                continue
            updates = [o for o in b.ops if o.expected > 0]
            # A lone update goes after the batch's reversible statements, so it never needs undoing.
            late = updates if len(updates) == 1 and (len(b.ops) > 1 or b.keys) else []
            first += [(b, o) for o in b.ops if o not in late] + [(b, k) for k in b.keys]
            second += [(b, o) for o in late]
        self._run_conditional(first)
        self._run_conditional([(b, item) for b, item in second if not b.failed])
        failed = [b for b in segment if b.failed]
        if failed:
            self._undo(failed)
        self._complete_archive_moves([o for b in segment if not b.failed for o in b.ops if o.archived])

    def _pre_read(self, segment: list[_Batch]) -> None:
        """Reads the rows a multi-update batch changes, to check them and to be able to put them back."""
        targets = [(b, o) for b in segment if sum(o.expected > 0 for o in b.ops) > 1
                   for o in b.ops if o.expected > 0]
        if not targets:
            return
        results = self._run_all([self._bind(
            f"SELECT version, epoch, archived, body FROM {_active_table(o.kind)} WHERE id = ?", (o.id,),
            self._serial) for _, o in targets])
        for (b, o), result in zip(targets, results, strict=True):
            if isinstance(result, Exception):
                b.fail(StoreError(f"cassandra: reading {o.kind} {o.id}: {result}"))
                continue
            row = result.one()
            if row is None or row.version != o.expected or row.archived:
                b.fail(VersionConflict(f"{o.kind} {o.id} is not at version {o.expected}"))
            elif row.epoch is not None and row.epoch > b.request.epoch:
                b.fail(StaleEpoch(f"{o.kind} {o.id} was written by newer epoch {row.epoch}"))
            else:
                o.old = (row.version, row.epoch or 0, bool(row.archived), row.body)

    def _run_conditional(self, items: list[tuple[_Batch, _Op | tuple[str, str]]]) -> None:
        statements: list[BoundStatement] = []
        for b, item in items:
            if isinstance(item, tuple):
                statements.append(self._bind(
                    "INSERT INTO idempotency (key, job_id) VALUES (?, ?) IF NOT EXISTS", item))
            elif item.expected == 0:
                statements.append(self._bind(
                    f"INSERT INTO {_active_table(item.kind)} (id, version, epoch, archived, body) "
                    "VALUES (?, ?, ?, ?, ?) IF NOT EXISTS",
                    (item.id, item.new_version, b.request.epoch, item.archived, item.body)))
            else:
                statements.append(self._bind(
                    f"UPDATE {_active_table(item.kind)} SET version = ?, epoch = ?, archived = ?, body = ? "
                    "WHERE id = ? IF version = ? AND epoch <= ?",
                    (item.new_version, b.request.epoch, item.archived, item.body, item.id, item.expected,
                     b.request.epoch)))
        for (b, item), result in zip(items, self._run_all(statements), strict=True):
            if isinstance(result, Exception):
                b.fail(StoreError(f"cassandra: outcome unknown for {item}: {result}"))
            elif result.was_applied:
                if isinstance(item, tuple):
                    b.keys_applied.append(item)
                else:
                    item.applied = True
            elif isinstance(item, tuple):
                b.fail(VersionConflict(f"idempotency key {item[0]!r} already used"))
            else:
                row = result.one()
                row_epoch = getattr(row, "epoch", None)
                if item.expected > 0 and row_epoch is not None and row_epoch > b.request.epoch:
                    b.fail(StaleEpoch(f"{item.kind} {item.id} was written by newer epoch {row_epoch}"))
                elif item.expected == 0:
                    b.fail(VersionConflict(f"{item.kind} {item.id} already exists"))
                else:
                    b.fail(VersionConflict(f"{item.kind} {item.id} is not at version {item.expected}"))

    def _undo(self, batches: list[_Batch]) -> None:
        """Takes back what applied of refused batches, so a refused batch leaves nothing behind."""
        statements: list[BoundStatement] = []
        for b in batches:
            for o in b.ops:
                if not o.applied:
                    continue
                if o.expected == 0:
                    statements.append(self._bind(
                        f"DELETE FROM {_active_table(o.kind)} WHERE id = ? IF version = ? AND epoch = ?",
                        (o.id, o.new_version, b.request.epoch)))
                elif o.old is not None:
                    version, epoch, archived, body = o.old
                    statements.append(self._bind(
                        f"UPDATE {_active_table(o.kind)} SET version = ?, epoch = ?, archived = ?, body = ? "
                        "WHERE id = ? IF version = ? AND epoch = ?",
                        (version, epoch, archived, body, o.id, o.new_version, b.request.epoch)))
                o.applied = False
            for key, job_id in b.keys_applied:
                statements.append(self._bind("DELETE FROM idempotency WHERE key = ? IF job_id = ?",
                                             (key, job_id)))
            b.keys_applied.clear()
        for result in self._run_all(statements):
            if isinstance(result, Exception) or not result.was_applied:
                log.error("could not undo part of a refused batch: %s", result)

    def _complete_archive_moves(self, ops: list[_Op]) -> None:
        """Archive row (with TTL) and log entry first, then the conditional delete of the active row."""
        if not ops:
            return
        now = time.time()
        ttl = self.settings.archive_ttl_s
        archived_at = int(now * 1000)
        inserts: list[BoundStatement] = []
        for o in ops:
            inserts.append(self._bind(
                f"INSERT INTO {_archive_table(o.kind)} (id, version, archived_at, body) VALUES (?, ?, ?, ?) "
                "USING TTL ?", (o.id, o.new_version, archived_at, o.body, ttl)))
            inserts.append(self._bind(
                "INSERT INTO archive_log (kind, day, archived_at, id) VALUES (?, ?, ?, ?) USING TTL ?",
                (o.kind, int(now // _DAY_S), archived_at, o.id, ttl)))
        if any(isinstance(r, Exception) for r in self._run_all(inserts)):
            log.error("archive rows not written; the next leader finishes those moves")
            return
        deletes = [self._bind(f"DELETE FROM {_active_table(o.kind)} WHERE id = ? IF version = ?",
                              (o.id, o.new_version)) for o in ops]
        for o, result in zip(ops, self._run_all(deletes), strict=True):
            if isinstance(result, Exception):
                log.error("active row of archived %s %s not deleted: %s", o.kind, o.id, result)

    # ----------------------------------------------------------------------------------------- reads
    def load_active(self, kind: Kind) -> list[Stored]:
        rows = self._session.execute(self._bind(
            f"SELECT version, archived, body FROM {_active_table(kind)}", ()))
        return [Stored(json.loads(r.body), int(r.version)) for r in rows if not r.archived]

    def get(self, kind: Kind, entity_id: str) -> Stored | None:
        active, archived = self._run_all([
            self._bind(f"SELECT version, body FROM {_active_table(kind)} WHERE id = ?", (entity_id,)),
            self._bind(f"SELECT version, body FROM {_archive_table(kind)} WHERE id = ?", (entity_id,))])
        best = None
        for result in (active, archived):
            if isinstance(result, Exception):
                raise StoreError(f"cassandra: reading {kind} {entity_id}: {result}")
            row = result.one()
            if row is not None and (best is None or row.version > best.version):
                best = row
        return Stored(json.loads(best.body), int(best.version)) if best is not None else None

    def list_archived(self, kind: Kind, limit: int) -> list[Stored]:
        today = int(time.time() // _DAY_S)
        oldest = today - self.settings.archive_ttl_s // _DAY_S - 1
        ids: list[str] = []
        seen: set[str] = set()
        for day in range(today, oldest - 1, -1):
            if len(ids) >= limit:
                break
            rows = self._session.execute(self._bind(
                "SELECT id FROM archive_log WHERE kind = ? AND day = ? LIMIT ?", (kind, day, limit * 2)))
            for r in rows:
                if r.id not in seen:
                    seen.add(r.id)
                    ids.append(r.id)
        ids = ids[:limit]
        results = self._run_all([self._bind(
            f"SELECT version, body FROM {_archive_table(kind)} WHERE id = ?", (i,)) for i in ids])
        out: list[Stored] = []
        for result in results:
            if isinstance(result, Exception):
                raise StoreError(f"cassandra: reading archived {kind}: {result}")
            row = result.one()
            if row is not None:  # its TTL may have run out since the log was read
                out.append(Stored(json.loads(row.body), int(row.version)))
        return out

    def job_for_idempotency_key(self, key: str) -> str | None:
        row = self._session.execute(self._bind("SELECT job_id FROM idempotency WHERE key = ?", (key,))).one()
        return str(row.job_id) if row is not None else None

    def truncate(self) -> None:
        """Empties every table of the keyspace (tests, development resets); keeps the schema version."""
        for table in [*map(_active_table, KINDS), *map(_archive_table, KINDS), "idempotency", "leader",
                      "archive_log"]:
            self._session.execute(f"TRUNCATE {table}", timeout=60)

    def drop_keyspace(self) -> None:
        """Deletes the keyspace and everything in it (tests); this client cannot write afterwards."""
        self._ddl(f"DROP KEYSPACE IF EXISTS {self.settings.keyspace}")
