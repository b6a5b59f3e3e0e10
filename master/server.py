"""Runs a master: store, JobManager, its background loops and the HTTP server (waitress, threaded)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from waitress.server import create_server

from master.api.app import ApiConfig, create_app
from master.job_manager import JobManager, Settings
from master.resource_backend import NativeBackend, ResourceBackend
from master.store.base import JobStore
from master.store.sqlite import SqliteJobStore

log = logging.getLogger("titus.master")


@dataclass
class MasterConfig:
    host: str = "127.0.0.1"
    port: int = 7001
    data_dir: Path = Path(".titus")
    store: str = "sqlite"
    sqlite_synchronous: str = "FULL"
    api_token: str = ""
    agent_token: str = ""
    threads: int = 64
    heartbeat_timeout_ms: int = 15_000
    # store="cassandra": keyword arguments of master.store.cassandra.CassandraSettings (hosts, keyspace, ...)
    cassandra: dict[str, Any] = field(default_factory=dict)
    # "native" (our agents register) or "mesos" (resources come from Mesos offers)
    backend: str = "native"
    # backend="mesos": keyword arguments of master.mesos.framework.MesosSettings (master, role, ...)
    mesos: dict[str, Any] = field(default_factory=dict)


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


def build_store(config: MasterConfig) -> JobStore:
    if config.store == "sqlite":
        config.data_dir.mkdir(parents=True, exist_ok=True)
        return SqliteJobStore(config.data_dir / "titus.db", synchronous=config.sqlite_synchronous)
    if config.store == "cassandra":
        # Imported here: only deployments that use Cassandra need cassandra-driver installed.
        from master.store.cassandra import CassandraJobStore, CassandraSettings

        return CassandraJobStore(CassandraSettings(**config.cassandra))
    raise ValueError(f"unknown store {config.store!r} (supported: sqlite, cassandra)")


def build_backend(config: MasterConfig, manager: JobManager) -> ResourceBackend:
    if config.backend == "native":
        return NativeBackend()
    if config.backend == "mesos":
        # Imported here: only deployments on Mesos need pymesos installed.
        try:
            from master.mesos.framework import MesosBackend, MesosSettings
        except ImportError as exc:
            raise ValueError(f"the mesos backend needs pymesos (scripts/install-pymesos.sh): {exc}") from exc
        return MesosBackend(manager, MesosSettings(**config.mesos))
    raise ValueError(f"unknown backend {config.backend!r} (supported: native, mesos)")


class Loops:
    """The scheduler wakes on events (submissions, freed resources, new agents); timers are the safety net.

    A loop never dies on one bad pass: it logs and carries on.
    """

    def __init__(self, manager: JobManager) -> None:
        self.manager = manager
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(self._schedule, ), name="scheduler", daemon=True),
                        threading.Thread(target=self._run, args=(self._tick, ), name="timers", daemon=True)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.stopping.set()
        self.manager.schedule_wanted.set()

    def _run(self, body: Callable[[], None]) -> None:
        while not self.stopping.is_set() and not self.manager.fenced:
            try:
                body()
            except Exception:
                log.exception("background pass failed; continuing")
                self.stopping.wait(0.5)

    def _schedule(self) -> None:
        self.manager.schedule_wanted.wait(timeout=1.0)
        self.manager.schedule_wanted.clear()
        if not self.stopping.is_set():
            self.manager.schedule_once()

    def _tick(self) -> None:
        self.stopping.wait(0.5)
        self.manager.tick()


class MasterServer:
    def __init__(self, config: MasterConfig, clock: Callable[[], int] = wall_clock_ms) -> None:
        if not config.api_token or not config.agent_token:
            raise ValueError("both an API token and an agent token are required")
        self.config = config
        self.store = build_store(config)
        self.manager = JobManager(self.store, clock, Settings(heartbeat_timeout_ms=config.heartbeat_timeout_ms))
        self.manager.backend = build_backend(config, self.manager)
        self.loops = Loops(self.manager)
        self.app = create_app(ApiConfig(config.api_token, config.agent_token), self.manager)
        self.server = create_server(self.app, host=config.host, port=config.port, threads=config.threads,
                                    channel_timeout=120, connection_limit=1000, ident="titus")
        self.manager.on_fenced = self.shutdown

    @property
    def port(self) -> int:
        return int(self.server.effective_port)  # type: ignore[union-attr]

    def serve_forever(self) -> None:
        self.manager.start()
        self.manager.backend.start()  # only a leader talks to the resource manager
        self.loops.start()
        log.info("master listening on http://%s:%d", self.config.host, self.port)
        try:
            self.server.run()
        finally:
            self.loops.stop()
            self.store.close()

    def shutdown(self) -> None:
        self.manager.backend.stop()  # a fenced master stops its Mesos driver at once
        self.loops.stop()
        self.manager.close()
        time.sleep(0.05)  # let released long polls write their answers before the sockets go
        threading.Thread(target=self.server.close, daemon=True).start()
