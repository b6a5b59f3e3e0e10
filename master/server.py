"""Runs a master: store, JobManager, its background loops and the HTTP server (waitress, threaded)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from master.api.app import ApiConfig, create_app
from master.cluster_identity import EXIT_NO_CLUSTER, EXIT_STORE_CORRUPTED, ClusterIdentityError
from master.core.disruption import SystemBudget
from master.core.fault_policy import Defaults
from master.edge import EdgeLimits, EdgeServer, server_tls_context
from master.job_manager import JobManager, Settings
from master.leader import AlwaysLeader, LeaderElection
from master.metrics import MasterMetrics
from master.principals import load_principals
from master.resource_backend import NativeBackend, ResourceBackend
from master.store.base import JobStore, StoreCorrupted
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
    # The shared agent token: dev/compat mode only (titus dev, tests). Any holder may act as any agent;
    # without it agents enrol with a bootstrap token and use their own credential (master/agent_auth.py).
    agent_token: str = ""
    # Callers: the API token is the admin principal named here; more principals (name, e-mail, role) with
    # their own tokens come from a JSON file (master/principals.py).
    api_token_name: str = "operator"
    api_token_email: str = "operator@titus.local"
    principals_file: Path | None = None
    threads: int = 64
    heartbeat_timeout_ms: int = 15_000
    # Default disconnected timeouts (master/core/fault_policy.py), in ms; None: wait for the agent for ever.
    service_disconnected_timeout_ms: int | None = 300_000
    batch_disconnected_timeout_ms: int | None = None
    # The cluster-wide bucket every system eviction draws from (master/core/disruption.py SystemBudget):
    # how many may happen at once and how fast the bucket refills.
    system_disruption_burst: int = 50
    system_disruption_rate_per_s: float = 1.0
    # Cluster identity (master/cluster_identity.py): initialise a new cluster if the store holds none;
    # the cluster this master must belong to ("" = whichever the store says).
    init_cluster: bool = False
    cluster_id: str = ""
    # store="cassandra": keyword arguments of master.store.cassandra.CassandraSettings (hosts, keyspace, ...)
    cassandra: dict[str, Any] = field(default_factory=dict)
    # "native" (our agents register) or "mesos" (resources come from Mesos offers)
    backend: str = "native"
    # backend="mesos": keyword arguments of master.mesos.framework.MesosSettings (master, role, ...)
    mesos: dict[str, Any] = field(default_factory=dict)
    zk_hosts: str = ""  # empty: single master, always leader
    zk_session_timeout_s: float = 10.0
    zk_root: str = "/titus/master"
    advertise_url: str = ""  # what standbys forward to; default http://<host>:<port>
    # Finished tasks' logs once their agent is gone: a shared.log_archive.S3LogArchive, or None.
    log_archive: Any = None
    # The HTTP edge (master/edge.py): request body cap (413 above it), JSON nesting cap (400), connection cap
    # (idle connections are shed to make room), idle, header-read and whole-request deadlines.
    # HTTPS: certificate chain and key files (PEM); with a client CA, clients must present a certificate it
    # signed (mutual TLS). Empty: plain HTTP.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    max_body_bytes: int = 1 << 20
    max_json_depth: int = 32
    connection_limit: int = 1000
    idle_timeout_s: float = 60.0
    header_timeout_s: float = 10.0
    request_timeout_s: float = 60.0


#: Exit code of a master that lost leadership (or was fenced): its supervisor restarts it as a standby.
LOST_LEADERSHIP = 3


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


def build_store(config: MasterConfig) -> JobStore:
    if config.store == "sqlite":
        config.data_dir.mkdir(parents=True, exist_ok=True)
        config.data_dir.chmod(0o700)  # the store holds every job's env: no other user may read it
        return SqliteJobStore(config.data_dir / "titus.db", synchronous=config.sqlite_synchronous)
    if config.store == "cassandra":
        # Imported here: only deployments that use Cassandra need cassandra-driver installed.
        from master.store.cassandra import CassandraJobStore, CassandraSettings

        return CassandraJobStore(CassandraSettings(**config.cassandra))
    raise ValueError(f"unknown store {config.store!r} (supported: sqlite, cassandra)")


def build_election(config: MasterConfig, url: str) -> LeaderElection:
    if not config.zk_hosts:
        return AlwaysLeader(url)
    from master.leader import KazooLeaderElection

    return KazooLeaderElection(config.zk_hosts, url, config.zk_session_timeout_s, config.zk_root)


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
        self.threads = [
            threading.Thread(target=self._run, args=(self._schedule,), name="scheduler", daemon=True),
            threading.Thread(target=self._run, args=(self._tick,), name="timers", daemon=True),
        ]

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
    """One master process. With ZooKeeper it starts as a standby that forwards to the leader; when elected it
    takes a new epoch, loads state and runs the loops. Losing leadership takes the process down (exit code
    LOST_LEADERSHIP) so its supervisor restarts it as a fresh standby: memory from a lost term is never
    trusted again.
    """

    def __init__(
        self,
        config: MasterConfig,
        clock: Callable[[], int] = wall_clock_ms,
        election: LeaderElection | None = None,
    ) -> None:
        if not config.api_token:
            raise ValueError("an API token is required")
        if config.agent_token:
            log.warning("shared agent token set (TITUS_AGENT_TOKEN): dev/compat mode, any holder may act as"
                        " any agent; enrol agents with bootstrap tokens instead")
        self.config = config
        self.store = build_store(config)
        self.manager = JobManager(
            self.store, clock, Settings(
                heartbeat_timeout_ms=config.heartbeat_timeout_ms,
                disconnect_defaults=Defaults(
                    config.service_disconnected_timeout_ms, config.batch_disconnected_timeout_ms
                ),
                system_disruption_budget=SystemBudget(
                    config.system_disruption_rate_per_s, config.system_disruption_burst
                ),
            )
        )
        self.manager.backend = build_backend(config, self.manager)
        self.manager.log_archive = config.log_archive
        self.loops = Loops(self.manager)
        self.exit_code = 0
        self.refusal = ""  # why this master refused to run on its store (ClusterIdentityError, corruption)
        self._role = "standby"
        self._role_lock = threading.Lock()
        self._stopping = False
        self._closed = threading.Event()
        self.metrics = MasterMetrics()
        self.metrics.attach(self.manager)
        if isinstance(self.store, SqliteJobStore):
            self.store.on_commit = self.metrics.on_commit
        self.app = create_app(
            ApiConfig(config.api_token, config.agent_token, max_body_bytes=config.max_body_bytes,
                      max_json_depth=config.max_json_depth,
                      principals=load_principals(config.api_token, config.principals_file,
                                                 config.api_token_name, config.api_token_email)),
            self.manager, routing=self, metrics=self.metrics,
        )
        limits = EdgeLimits(
            max_body_bytes=config.max_body_bytes,
            connection_limit=config.connection_limit,
            idle_timeout_s=config.idle_timeout_s,
            header_timeout_s=config.header_timeout_s,
            request_timeout_s=config.request_timeout_s,
        )
        tls = None
        if config.tls_cert_file or config.tls_key_file:
            if not (config.tls_cert_file and config.tls_key_file):
                raise ValueError("TLS needs both a certificate file and a key file")
            tls = server_tls_context(config.tls_cert_file, config.tls_key_file, config.tls_client_ca_file)
        self.server = EdgeServer(self.app, limits, tls, host=config.host, port=config.port,
                                 threads=config.threads, ident="titus")
        self.election = election or build_election(config, self.own_url)
        self.manager.on_fenced = self._fenced

    @property
    def port(self) -> int:
        return int(self.server.effective_port)

    @property
    def own_url(self) -> str:
        scheme = "https" if self.server.tls is not None else "http"
        return self.config.advertise_url or f"{scheme}://{self.config.host}:{self.port}"

    # ------------------------------------------------------------------------------- Routing protocol
    def role(self) -> str:
        return self._role

    def leader_url(self) -> str | None:
        return self.election.leader_url()

    # ------------------------------------------------------------------------------------ lifecycle
    def serve_forever(self) -> int:
        """Serve until shut down; returns the process exit code (non-zero when leadership was lost)."""
        log.info(
            "master listening on %s (%s)",
            self.own_url,
            "single master" if not self.config.zk_hosts else f"ZooKeeper {self.config.zk_hosts}",
        )
        self.election.start(self._elected, self._lost)
        server = self.server
        try:
            # waitress's run() lasts while any keep-alive connection is open; loop until told to stop instead.
            while not self._closed.is_set():
                server.run_once(timeout=1.0)
        finally:
            for channel in list(server._map.values()):
                channel.close()
            server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
            self.loops.stop()
            self.store.close()
        return self.exit_code

    def _elected(self) -> None:
        with self._role_lock:
            if self._role != "standby":
                return
            self._role = "starting"
        try:
            self.manager.start(self.config.init_cluster, self.config.cluster_id, self.store_location())
        except ClusterIdentityError as exc:
            self._refuse(str(exc), EXIT_NO_CLUSTER)
            return
        except StoreCorrupted as exc:
            self._refuse(str(exc), EXIT_STORE_CORRUPTED)
            return
        except Exception:
            log.exception("taking over as leader failed")
            self._depose("could not load state as the new leader")
            return
        with self._role_lock:
            if self._role != "starting":
                return  # lost again while loading: _lost already took us down
            self._role = "leader"
        self.manager.backend.start()  # only a leader talks to the resource manager (Mesos)
        self.loops.start()
        self.election.publish()

    def store_location(self) -> str:
        """Where the store is, for messages that must say which data to check."""
        if self.config.store == "sqlite":
            return f"{self.config.data_dir / 'titus.db'} (data dir {self.config.data_dir})"
        options = self.config.cassandra
        hosts = ",".join(options.get("hosts", ()))
        return f"Cassandra keyspace {options.get('keyspace', 'titus')} on {hosts}"

    def _refuse(self, why: str, code: int) -> None:
        """Not a lost election: this master must not run on this store at all, so it stops with a code of
        its own (not LOST_LEADERSHIP, which a supervisor answers by restarting it as a standby)."""
        log.error("refusing to start: %s", why)
        self.refusal = why
        self.manager.fenced = True
        with self._role_lock:
            self._role = "deposed"
        self.exit_code = code
        threading.Thread(target=self.shutdown, name="shutdown", daemon=True).start()

    def _lost(self) -> None:
        """Leadership in doubt or gone: no write may start from here on (runs on the election's thread)."""
        self._depose("leadership lost")

    def _fenced(self) -> None:
        """The manager refused to go on writing (newer epoch, store failure)."""
        if self.manager.store_corrupted:
            self._refuse(self.manager.store_corrupted, EXIT_STORE_CORRUPTED)
            return
        self._depose("the store fenced this master")

    def _depose(self, why: str) -> None:
        self.manager.fenced = True  # first, synchronously: stops every write path at once
        with self._role_lock:
            if self._role == "deposed" or self._stopping:
                return
            self._role = "deposed"
        self.exit_code = LOST_LEADERSHIP
        log.error("%s: stopping; the supervisor restarts this master as a standby", why)
        threading.Thread(target=self.shutdown, name="shutdown", daemon=True).start()

    def shutdown(self) -> None:
        """Graceful stop (SIGTERM): stop writing, make queued writes durable, then let leadership go.

        Closing the ZooKeeper session last but promptly hands over in well under a second, instead of
        making the standbys wait out the session timeout.
        """
        with self._role_lock:
            if self._stopping:
                return
            self._stopping = True
            if self._role in ("leader", "starting"):
                self._role = "deposed"
        self.manager.fenced = True
        self.manager.backend.stop()  # a fenced or stopping master stops its Mesos driver at once
        self.loops.stop()
        self.manager.close()
        # Writes already queued finish (durable or refused) before leadership goes; any that outlived the
        # wait would be refused by the next leader's epoch, never half-acknowledged.
        self.manager.wait_writes_settled(timeout_s=2.0)
        self.election.resign()
        self.store.close()
        time.sleep(0.05)  # let released long polls write their answers before the sockets go
        self._closed.set()
        self.server.pull_trigger()
