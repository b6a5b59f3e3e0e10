"""The `titus` command: run the components (dev, master, agent) and drive the API (job, task, agent, groups).

Start-up time matters for a command typed many times a day: this module imports only click and the small
config parser. The API commands live in titus.cli_jobs and titus.cli_fleet and are imported only when one of
them runs (LazyGroup), and every heavy import (requests, the master, the agent, boto3) is inside a function.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, NoReturn

import click

from shared.config import ConfigError, get_float, get_int, merged
from titus.cli_common import EXIT_BAD_INPUT, EXIT_ERROR, CliError, json_wanted, report_error


def _setup_logging(level: str = "INFO") -> None:
    """JSON lines by default (TITUS_LOG_FORMAT=text for the old plain format)."""
    import logging

    from shared.logs import configure as configure_logging

    fmt = os.environ.get("TITUS_LOG_FORMAT", "json").lower()
    configure_logging(getattr(logging, level.upper(), logging.INFO), "text" if fmt == "text" else "json")


def _fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use: `lazy` maps a name to ("module:attribute",
    short help). `--help` lists them from the short help without importing anything; a subcommand whose
    module needs an optional extra that is missing stays listed and says what is missing when run."""

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands or cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        target, short_help = self.lazy[cmd_name]
        module_name, _, attribute = target.partition(":")
        try:
            command = getattr(importlib.import_module(module_name), attribute)
        except ImportError as exc:
            command = _unavailable(cmd_name, short_help, str(exc))
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        self.add_command(command, cmd_name)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As click's, but a command not imported yet shows its short help from `lazy`."""
        rows = []
        for name in self.list_commands(ctx):
            command = self.commands.get(name)
            if command is None:
                rows.append((name, self.lazy[name][1]))
            elif not command.hidden:
                rows.append((name, command.get_short_help_str(formatter.width - 30)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _unavailable(name: str, short_help: str, missing: str) -> click.Command:
    """Stands in for a command whose optional extra is not installed."""

    @click.command(name, help=short_help, context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def unavailable(args: tuple[str, ...]) -> None:
        _fail(f"titus {name} is not available here: {missing}")

    return unavailable


class TitusGroup(LazyGroup):
    """The root group: errors that happen before a command runs (usage errors, a bad option) are reported
    as a JSON error object too when the command line has --json, with the same exit codes (docs/cli.md)."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        if not standalone_mode:
            return super().main(argv, prog_name, complete_var, standalone_mode, **extra)
        try:
            super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(EXIT_ERROR)
        except click.ClickException as exc:
            if json_wanted(argv):
                report_error(CliError(exc.format_message(), exc.exit_code), True)
            exc.show()
            sys.exit(exc.exit_code)
        except CliError as exc:
            report_error(exc, json_wanted(argv))
        sys.exit(0)


_API_COMMANDS = {
    "job": ("titus.cli_jobs:job", "Submit and manage jobs."),
    "task": ("titus.cli_jobs:task", "Inspect and kill tasks, read their logs."),
    "instance-group": ("titus.cli_fleet:instance_group", "Agent pools: list, get, lifecycle."),
    "capacity-group": ("titus.cli_fleet:capacity_group", "Capacity groups: reservations and their use."),
    "agent-tokens": ("titus.cli_identity:agent_tokens", "Bootstrap tokens agents enrol with."),
    "agent-credentials": ("titus.cli_identity:agent_credentials", "Agents' credentials: list, revoke."),
    "cluster": ("titus.cluster:cluster", "Bring a cluster up on AWS with Terraform."),
    "capacity-controller": ("capacity.cli:capacity_controller", "Size the agent autoscaling groups."),
}


@click.group(cls=TitusGroup, lazy=_API_COMMANDS)
@click.version_option("0.1.0", prog_name="titus")
def main() -> None:
    """Titus in Python: run containers on a fleet of hosts.

    Exit codes: 0 ok, 1 error (the master failed or is unreachable), 2 bad input, 3 not found, 4 token
    refused, 5 --wait timed out, 6 --wait saw the job or task end badly. With --json, results and errors
    ({"error": {...}}) are JSON on stdout. Completion: eval "$(titus completion bash)".
    """


@main.command(short_help="Print the shell completion script.")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script (click's): eval "$(titus completion bash)"."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    if cls is None:
        _fail(f"no completion for {shell}", EXIT_BAD_INPUT)
    click.echo(cls(main, {}, "titus", "_TITUS_COMPLETE").source())


# ==================================================================================== components
@main.command(short_help="All-in-one cluster: a master and a local agent.")
@click.option("--port", default=7001, show_default=True, help="API port on 127.0.0.1.")
@click.option("--data-dir", default=".titus", show_default=True, type=click.Path(path_type=Path))
@click.option("--agent-memory-mb", default=None, type=int, help="Memory the local agent offers.")
@click.option("--agent-cpu", default=None, type=float, help="CPUs the local agent offers.")
@click.option("--tls/--no-tls", default=True, show_default=True,
              help="HTTPS with a CA of the cluster's own, made on first start (--no-tls: plain HTTP).")
def dev(port: int, data_dir: Path, agent_memory_mb: int | None, agent_cpu: float | None, tls: bool) -> None:
    """Run an all-in-one cluster in the foreground: one master and one local agent. Ctrl-C stops both."""
    from master.cluster_identity import EXIT_STORE_CORRUPTED
    from master.store.base import StoreCorrupted
    from titus.dev import DevRefused, run_dev

    _setup_logging(os.environ.get("TITUS_LOG_LEVEL", "INFO"))
    try:
        run_dev(port, data_dir, agent_memory_mb, agent_cpu, tls)
    except DevRefused as exc:
        _fail(str(exc), exc.code)
    except StoreCorrupted as exc:
        _fail(str(exc), EXIT_STORE_CORRUPTED)
    except (ConfigError, OSError, ValueError) as exc:
        _fail(str(exc))


def _cassandra_options(values: dict[str, str]) -> dict[str, Any]:
    """TITUS_CASSANDRA_* settings as keyword arguments of CassandraSettings (validated there)."""
    options: dict[str, Any] = {
        "hosts": tuple(
            h.strip() for h in values.get("TITUS_CASSANDRA_HOSTS", "127.0.0.1").split(",") if h.strip()
        ),
        "port": get_int(values, "TITUS_CASSANDRA_PORT", 9042),
        "keyspace": values.get("TITUS_CASSANDRA_KEYSPACE", "titus"),
        "replication_strategy": values.get("TITUS_CASSANDRA_REPLICATION_STRATEGY", "SimpleStrategy"),
        "replication_factor": get_int(values, "TITUS_CASSANDRA_REPLICATION_FACTOR", 1),
        "archive_ttl_s": get_int(values, "TITUS_CASSANDRA_ARCHIVE_TTL_S", 7 * 86_400),
        "serial_consistency": values.get("TITUS_CASSANDRA_SERIAL_CONSISTENCY", "LOCAL_SERIAL").upper(),
    }
    datacenters: list[tuple[str, int]] = []
    for part in filter(None, (p.strip() for p in values.get("TITUS_CASSANDRA_DATACENTERS", "").split(","))):
        name, sep, rf = part.partition(":")
        if not sep or not name.strip() or not rf.strip().isdigit():
            raise ConfigError(f"TITUS_CASSANDRA_DATACENTERS: {part!r} is not NAME:REPLICATION_FACTOR")
        datacenters.append((name.strip(), int(rf)))
    options["datacenters"] = tuple(datacenters)
    if values.get("TITUS_CASSANDRA_LOCAL_DC"):
        options["local_dc"] = values["TITUS_CASSANDRA_LOCAL_DC"]
    return options


def _master_config(values: dict[str, str], port: int | None = None, data_dir: Path | None = None) -> Any:
    from master.server import MasterConfig

    store = values.get("TITUS_STORE", "sqlite")
    backend = values.get("TITUS_BACKEND", "native")
    if backend not in ("native", "mesos"):
        raise ConfigError(f"TITUS_BACKEND must be native or mesos, not {backend!r}")
    return MasterConfig(
        host=values.get("TITUS_HOST", "127.0.0.1"),
        port=port if port is not None else get_int(values, "TITUS_PORT", 7001),
        data_dir=data_dir or Path(values.get("TITUS_DATA_DIR", "/var/lib/titus-master")),
        store=store,
        sqlite_synchronous=values.get("TITUS_SQLITE_SYNCHRONOUS", "FULL"),
        api_token=values.get("TITUS_API_TOKEN", ""),
        agent_token=values.get("TITUS_AGENT_TOKEN", ""),
        api_token_name=values.get("TITUS_API_TOKEN_NAME", "operator"),
        api_token_email=values.get("TITUS_API_TOKEN_EMAIL", "operator@titus.local"),
        principals_file=Path(values["TITUS_PRINCIPALS_FILE"]) if values.get("TITUS_PRINCIPALS_FILE")
        else None,
        heartbeat_timeout_ms=get_int(values, "TITUS_HEARTBEAT_TIMEOUT_MS", 15_000),
        init_cluster=values.get("TITUS_INIT_CLUSTER", "false").lower() == "true",
        cluster_id=values.get("TITUS_CLUSTER_ID", ""),
        service_disconnected_timeout_ms=_timeout_ms(values, "TITUS_SERVICE_DISCONNECTED_TIMEOUT_S", "300"),
        batch_disconnected_timeout_ms=_timeout_ms(values, "TITUS_BATCH_DISCONNECTED_TIMEOUT_S", "never"),
        system_disruption_burst=_at_least(values, "TITUS_SYSTEM_DISRUPTION_BURST", 50, 1),
        system_disruption_rate_per_s=_at_least(values, "TITUS_SYSTEM_DISRUPTION_RATE_PER_S", 1.0, 0.0),
        cassandra=_cassandra_options(values) if store == "cassandra" else {},
        zk_hosts=values.get("TITUS_ZK", ""),
        zk_session_timeout_s=get_float(values, "TITUS_ZK_SESSION_TIMEOUT_S", 10.0),
        zk_root=values.get("TITUS_ZK_ROOT", "/titus/master"),
        advertise_url=values.get("TITUS_ADVERTISE_URL", ""),
        backend=backend,
        mesos=_mesos_options(values) if backend == "mesos" else {},
        log_archive=_log_archive(values),
        tls_cert_file=values.get("TITUS_TLS_CERT", ""),
        tls_key_file=values.get("TITUS_TLS_KEY", ""),
        tls_client_ca_file=values.get("TITUS_TLS_CLIENT_CA", ""),
        # The HTTP edge's limits (docs/ARCHITECTURE.md, "The API edge").
        max_body_bytes=get_int(values, "TITUS_MAX_BODY_BYTES", 1 << 20),
        max_json_depth=get_int(values, "TITUS_MAX_JSON_DEPTH", 32),
        connection_limit=get_int(values, "TITUS_CONNECTION_LIMIT", 1000),
        idle_timeout_s=get_float(values, "TITUS_IDLE_TIMEOUT_S", 60.0),
        header_timeout_s=get_float(values, "TITUS_HEADER_TIMEOUT_S", 10.0),
        request_timeout_s=get_float(values, "TITUS_REQUEST_TIMEOUT_S", 60.0),
    )


def _log_archive(values: dict[str, str]) -> Any:
    """TITUS_LOG_S3_*: where finished tasks' logs are read from once their agent is gone (or None). The
    master sets the retention rule on the prefix (unless TITUS_LOG_RETENTION_DAYS is 0: the bucket's
    owner keeps it); an unreachable S3 is said, not fatal."""
    if not values.get("TITUS_LOG_S3_BUCKET"):
        return None
    from shared.log_archive import LogArchiveError, from_settings

    try:
        archive = from_settings(values)
    except LogArchiveError as exc:
        raise ConfigError(str(exc)) from exc
    if archive is not None:
        try:
            archive.ensure_retention()
        except LogArchiveError as exc:
            click.echo(f"warning: {exc}", err=True)
    return archive
def _at_least(values: dict[str, str], name: str, default: Any, least: float) -> Any:
    """An int (default int) or float setting, refused below `least`: a burst of 0 would refuse every
    system eviction for ever, a negative rate would drain the bucket."""
    value = get_int(values, name, default) if isinstance(default, int) else get_float(values, name, default)
    if value < least:
        raise ConfigError(f"{name} must be at least {least:g}, not {value:g}")
    return value


def _timeout_ms(values: dict[str, str], name: str, default: str) -> int | None:
    """Seconds, or `never`, as milliseconds or None (the default disconnected timeouts)."""
    raw = values.get(name, default).strip()
    if raw == "never":
        return None
    if not raw.isdigit():
        raise ConfigError(f"{name} must be a whole number of seconds or 'never', not {raw!r}")
    return int(raw) * 1000


def _mesos_options(values: dict[str, str]) -> dict[str, Any]:
    """TITUS_MESOS_* settings as keyword arguments of master.mesos.framework.MesosSettings."""
    options: dict[str, Any] = {
        "master": values.get("TITUS_MESOS_MASTER", "127.0.0.1:5050"),
        "framework_name": values.get("TITUS_MESOS_FRAMEWORK_NAME", "titus"),
        "role": values.get("TITUS_MESOS_ROLE", "*"),
        "user": values.get("TITUS_MESOS_USER", ""),
        "failover_timeout_s": float(get_int(values, "TITUS_MESOS_FAILOVER_TIMEOUT_S", 7 * 86_400)),
        "executor_command": values.get("TITUS_MESOS_EXECUTOR_COMMAND", "titus executor"),
        "offer_hold_s": float(get_int(values, "TITUS_MESOS_OFFER_HOLD_S", 10)),
        "refuse_seconds": float(get_int(values, "TITUS_MESOS_REFUSE_SECONDS", 5)),
        "reconcile_interval_s": float(get_int(values, "TITUS_MESOS_RECONCILE_INTERVAL_S", 60)),
    }
    if values.get("TITUS_MESOS_PRINCIPAL"):
        options["principal"] = values["TITUS_MESOS_PRINCIPAL"]
        options["secret"] = values.get("TITUS_MESOS_SECRET", "")
    return options


@main.command(short_help="Run a master: API, scheduler, store.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), help="KEY=VALUE file.")
@click.option("--port", type=int, help="Overrides TITUS_PORT.")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Overrides TITUS_DATA_DIR.")
@click.option("--zk", "zk_hosts", help="ZooKeeper host:port,... for leader election; overrides TITUS_ZK.")
@click.option("--zk-session-timeout", type=float, help="Seconds; overrides TITUS_ZK_SESSION_TIMEOUT_S (10).")
@click.option("--backend", type=click.Choice(["native", "mesos"]), help="Overrides TITUS_BACKEND (native).")
@click.option("--init-cluster", is_flag=True, default=None,
              help="Initialise a new cluster if the store holds none (TITUS_INIT_CLUSTER=true).")
def master(config_file: str | None, port: int | None, data_dir: Path | None, zk_hosts: str | None,
           zk_session_timeout: float | None, backend: str | None, init_cluster: bool | None) -> None:
    """Run a master (API, scheduler, store) from a config file plus TITUS_* environment variables.

    With ZooKeeper configured (--zk, TITUS_ZK) the master starts as a standby that forwards requests to the
    leader and takes over when elected. A master that loses leadership exits with code 3: run it under a
    supervisor that restarts it (systemd Restart=always), and it comes back as a fresh standby.

    The store must hold a cluster: on an empty or missing store the master exits with code 4 and says
    what to do, unless --init-cluster (TITUS_INIT_CLUSTER=true) asks for a new cluster; TITUS_CLUSTER_ID
    makes it refuse (code 4) a store of another cluster. A damaged store exits with code 5.

    TITUS_BACKEND=mesos (or --backend mesos) takes resources from Mesos offers instead of agent
    registrations: TITUS_MESOS_MASTER (host:port or zk://...), _FRAMEWORK_NAME, _ROLE, _USER,
    _FAILOVER_TIMEOUT_S, _EXECUTOR_COMMAND, _OFFER_HOLD_S, _REFUSE_SECONDS, _RECONCILE_INTERVAL_S,
    _PRINCIPAL, _SECRET.

    TITUS_STORE=cassandra selects Cassandra: TITUS_CASSANDRA_HOSTS (comma-separated), _PORT, _KEYSPACE,
    _REPLICATION_STRATEGY (SimpleStrategy | NetworkTopologyStrategy), _REPLICATION_FACTOR,
    _DATACENTERS (dc1:3,dc2:3), _LOCAL_DC, _ARCHIVE_TTL_S, _SERIAL_CONSISTENCY (LOCAL_SERIAL | SERIAL).
    """
    from master.cluster_identity import EXIT_STORE_CORRUPTED
    from master.leader import LeaderElectionError
    from master.server import MasterServer
    from master.store.base import StoreCorrupted, StoreError

    try:
        values = merged(config_file)
        if backend:
            values["TITUS_BACKEND"] = backend
        if init_cluster:
            values["TITUS_INIT_CLUSTER"] = "true"
        _setup_logging(values.get("TITUS_LOG_LEVEL", "INFO"))
        if zk_hosts is not None:
            values["TITUS_ZK"] = zk_hosts
        if zk_session_timeout is not None:
            values["TITUS_ZK_SESSION_TIMEOUT_S"] = str(zk_session_timeout)
        config = _master_config(values, port, data_dir)
        if not config.api_token:
            raise ConfigError("TITUS_API_TOKEN is required")
        server = MasterServer(config)
    except StoreCorrupted as exc:
        _fail(str(exc), EXIT_STORE_CORRUPTED)
    except (ConfigError, OSError, ValueError, StoreError) as exc:
        _fail(str(exc))

    def _graceful(signum: int, _frame: object) -> None:
        import logging

        logging.getLogger("titus.master").info("signal %d: handing over and stopping", signum)
        threading.Thread(target=server.shutdown, name="shutdown", daemon=True).start()

    signal.signal(signal.SIGTERM, _graceful)
    signal.signal(signal.SIGINT, _graceful)
    from master import gc_policy

    gc_policy.tune()  # a master's state is large and long-lived (master/gc_policy.py)
    try:
        code = server.serve_forever()
    except LeaderElectionError as exc:
        _fail(str(exc))
    if server.refusal:
        _fail(server.refusal, code)
    sys.exit(code)


@main.group()
def db() -> None:
    """Manage the master's store."""


@db.command("migrate")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), help="KEY=VALUE file.")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Overrides TITUS_DATA_DIR (sqlite).")
def db_migrate(config_file: str | None, data_dir: Path | None) -> None:
    """Create or upgrade the store's schema (same TITUS_* settings as `titus master`), then exit.

    Safe to run any number of times. Run it once per upgrade before starting the masters: Cassandra does
    not like several clients creating the same tables at once.
    """
    from master.server import build_store
    from master.store.base import StoreError

    try:
        values = merged(config_file)
        _setup_logging(values.get("TITUS_LOG_LEVEL", "INFO"))
        store = build_store(_master_config(values, data_dir=data_dir))
        try:
            store.migrate()
            version = getattr(store, "schema_version", None)
            suffix = f" at version {version()}" if callable(version) else ""
        finally:
            store.close()
    except (ConfigError, OSError, ValueError, StoreError) as exc:
        _fail(str(exc))
    click.echo(f"schema of the {values.get('TITUS_STORE', 'sqlite')} store is current{suffix}")


_AGENT_COMMANDS = {
    "list": ("titus.cli_fleet:agent_list", "List the agents: lifecycle, tier, group, tasks, free resources."),
    "get": ("titus.cli_fleet:agent_get", "Show one agent: state, lifecycle and why, resources, tasks."),
    "lifecycle": ("titus.cli_fleet:agent_lifecycle", "Set a lifecycle: Active, PhasedOut, Removable."),
}


@main.group(cls=LazyGroup, lazy=_AGENT_COMMANDS, invoke_without_command=True,
            short_help="Run an agent here, or list, get, lifecycle.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), help="KEY=VALUE file.")
@click.option("--runtime", type=click.Choice(["oci", "process", "docker"]), help="Overrides TITUS_RUNTIME.")
@click.option("--master-url", help="Overrides TITUS_MASTER_URL (comma-separated: any master serves).")
@click.pass_context
def agent(ctx: click.Context, config_file: str | None, runtime: str | None, master_url: str | None) -> None:
    """Without a subcommand: run an agent on this host from a config file plus TITUS_* environment variables.

    With one: look at the cluster's agents through the API (list, get, lifecycle).
    """
    if ctx.invoked_subcommand is not None:
        return
    from agent.main import run_agent

    try:
        values = merged(config_file)
        if runtime:
            values["TITUS_RUNTIME"] = runtime
        if master_url:
            values["TITUS_MASTER_URL"] = master_url
        _setup_logging(values.get("TITUS_LOG_LEVEL", "INFO"))
        run_agent(values)
    except (ConfigError, OSError) as exc:
        _fail(str(exc))


@main.command(short_help="titus-executor, run by a Mesos agent.")
@click.option("--runtime", type=click.Choice(["oci", "process", "docker"]), help="Overrides TITUS_RUNTIME.")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Task data (default $MESOS_SANDBOX/titus).")
def executor(runtime: str | None, data_dir: Path | None) -> None:
    """titus-executor: run by a Mesos agent (MESOS_* environment) to start one task of the mesos backend."""
    try:
        from agent.mesos_executor import run_executor
    except ImportError as exc:
        _fail(f"titus executor needs pymesos (scripts/install-pymesos.sh): {exc}")
    values = merged(None)
    _setup_logging(values.get("TITUS_LOG_LEVEL", "INFO"))
    try:
        run_executor(runtime or values.get("TITUS_RUNTIME", "oci"), data_dir,
                     get_int(values, "TITUS_TASK_PIDS_LIMIT", 1024))
    except (ConfigError, OSError, KeyError) as exc:
        _fail(str(exc))


if __name__ == "__main__":
    main()
