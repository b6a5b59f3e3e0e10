"""The JobStore contract: what the master needs from durable storage, whatever the technology.

Writes are conditional on the version the writer last saw and on the writer's leader epoch, so a
Cassandra implementation with lightweight transactions fits behind the same calls (DESIGN.md #2, #3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Kind = Literal[
    "job", "task", "agent", "capacity_group", "instance_group", "framework", "cluster", "credential"
]
#: "framework": the Mesos backend's FrameworkID per framework name, so a new leader re-registers as the same
#: framework and keeps its tasks (never archived, never loaded at start-up).
#: "cluster": the one record `identity` holding the cluster id, written when a cluster is initialised
#: (master/cluster_identity.py, DESIGN.md #10).
#: "credential": agent bootstrap tokens and per-agent credentials (hashes only; master/agent_auth.py).


@dataclass(frozen=True)
class Write:
    """Put `record` for (kind, id) if the stored version is `expected_version` (0 = must not exist).

    The stored version becomes expected_version + 1. `archived` moves a finished entity out of the active
    set: it stays readable by id but is no longer loaded at start-up.
    """

    kind: Kind
    id: str
    expected_version: int
    record: dict[str, Any]
    archived: bool = False
    idempotency_key: str | None = None  # job writes only: remember key -> job id


@dataclass(frozen=True)
class Stored:
    record: dict[str, Any]
    version: int


class StoreError(Exception):
    pass


class StoreCorrupted(StoreError):
    """The store's files are damaged (not a passing failure): the master must stop and say so, not retry
    as a standby. The message names the file and what to do."""


class VersionConflict(StoreError):
    """Someone else wrote the entity since we read it; nothing of the batch was applied."""


class StaleEpoch(StoreError):
    """A newer leader exists; the writer must stop acting as leader."""


class PendingWrite(Protocol):
    def wait(self) -> None:
        ...


class JobStore(Protocol):
    def migrate(self) -> None:
        """Create or upgrade the schema; safe to run any number of times."""

    def acquire_epoch(self) -> int:
        """Start a new leadership term: atomically bump and return the epoch that fences older leaders."""

    def begin_apply(self, epoch: int, writes: Sequence[Write]) -> PendingWrite:
        """Queue writes in call order and return at once; `wait()` on the result blocks until durable.

        Callers queue under their own lock (so the store sees writes in the order memory changed) and
        wait outside it (so many requests share one commit). Batches apply atomically when the store can
        (SQLite), else each row conditionally (Cassandra). wait() raises StaleEpoch if `epoch` is older
        than the store's, VersionConflict on a version mismatch.
        """

    def apply(self, epoch: int, writes: Sequence[Write]) -> None:
        """begin_apply(...).wait()."""

    def load_active(self, kind: Kind) -> list[Stored]:
        """Every non-archived entity of a kind, for a new leader to rebuild its state."""

    def get(self, kind: Kind, entity_id: str) -> Stored | None:
        """One entity by id, archived or not."""

    def list_archived(self, kind: Kind, limit: int) -> list[Stored]:
        """The most recently archived entities of a kind, newest first."""

    def job_for_idempotency_key(self, key: str) -> str | None:
        """The job id a previous submission with this Idempotency-Key created, if any."""

    def close(self) -> None:
        ...
