"""The `titus` command: run the components (dev, master, agent) and drive the API (job, task)."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

import click

from shared.config import ConfigError, get_float, get_int, merged
from shared.logs import configure as configure_logging
from titus.client import ApiError, TitusClient

DEFAULT_URL = "http://127.0.0.1:7001"


def _setup_logging(level: str = "INFO") -> None:
    """JSON lines by default (TITUS_LOG_FORMAT=text for the old plain format)."""
    fmt = os.environ.get("TITUS_LOG_FORMAT", "json").lower()
    configure_logging(getattr(logging, level.upper(), logging.INFO), "text" if fmt == "text" else "json")


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.group()
@click.version_option("0.1.0", prog_name="titus")
def main() -> None:
    """Titus in Python: run containers on a fleet of hosts."""


# ==================================================================================== components
@main.command()
@click.option("--port", default=7001, show_default=True, help="API port on 127.0.0.1.")
@click.option("--data-dir", default=".titus", show_default=True, type=click.Path(path_type=Path))
@click.option("--agent-memory-mb", default=None, type=int, help="Memory the local agent offers.")
@click.option("--agent-cpu", default=None, type=float, help="CPUs the local agent offers.")
def dev(port: int, data_dir: Path, agent_memory_mb: int | None, agent_cpu: float | None) -> None:
    """Run an all-in-one cluster in the foreground: one master and one local agent. Ctrl-C stops both."""
    from titus.dev import run_dev

    _setup_logging(os.environ.get("TITUS_LOG_LEVEL", "INFO"))
    try:
        run_dev(port, data_dir, agent_memory_mb, agent_cpu)
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
        cassandra=_cassandra_options(values) if store == "cassandra" else {},
        zk_hosts=values.get("TITUS_ZK", ""),
        zk_session_timeout_s=get_float(values, "TITUS_ZK_SESSION_TIMEOUT_S", 10.0),
        zk_root=values.get("TITUS_ZK_ROOT", "/titus/master"),
        advertise_url=values.get("TITUS_ADVERTISE_URL", ""),
        backend=backend,
        mesos=_mesos_options(values) if backend == "mesos" else {},
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


@main.command()
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), help="KEY=VALUE file.")
@click.option("--port", type=int, help="Overrides TITUS_PORT.")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Overrides TITUS_DATA_DIR.")
@click.option("--zk", "zk_hosts", help="ZooKeeper host:port,... for leader election; overrides TITUS_ZK.")
@click.option("--zk-session-timeout", type=float, help="Seconds; overrides TITUS_ZK_SESSION_TIMEOUT_S (10).")
@click.option("--backend", type=click.Choice(["native", "mesos"]), help="Overrides TITUS_BACKEND (native).")
def master(config_file: str | None, port: int | None, data_dir: Path | None, zk_hosts: str | None,
           zk_session_timeout: float | None, backend: str | None) -> None:
    """Run a master (API, scheduler, store) from a config file plus TITUS_* environment variables.

    With ZooKeeper configured (--zk, TITUS_ZK) the master starts as a standby that forwards requests to the
    leader and takes over when elected. A master that loses leadership exits with code 3: run it under a
    supervisor that restarts it (systemd Restart=always), and it comes back as a fresh standby.

    TITUS_BACKEND=mesos (or --backend mesos) takes resources from Mesos offers instead of agent
    registrations: TITUS_MESOS_MASTER (host:port or zk://...), _FRAMEWORK_NAME, _ROLE, _USER,
    _FAILOVER_TIMEOUT_S, _EXECUTOR_COMMAND, _OFFER_HOLD_S, _REFUSE_SECONDS, _RECONCILE_INTERVAL_S,
    _PRINCIPAL, _SECRET.

    TITUS_STORE=cassandra selects Cassandra: TITUS_CASSANDRA_HOSTS (comma-separated), _PORT, _KEYSPACE,
    _REPLICATION_STRATEGY (SimpleStrategy | NetworkTopologyStrategy), _REPLICATION_FACTOR,
    _DATACENTERS (dc1:3,dc2:3), _LOCAL_DC, _ARCHIVE_TTL_S, _SERIAL_CONSISTENCY (LOCAL_SERIAL | SERIAL).
    """
    from master.leader import LeaderElectionError
    from master.server import MasterServer
    from master.store.base import StoreError

    try:
        values = merged(config_file)
        if backend:
            values["TITUS_BACKEND"] = backend
        _setup_logging(values.get("TITUS_LOG_LEVEL", "INFO"))
        if zk_hosts is not None:
            values["TITUS_ZK"] = zk_hosts
        if zk_session_timeout is not None:
            values["TITUS_ZK_SESSION_TIMEOUT_S"] = str(zk_session_timeout)
        config = _master_config(values, port, data_dir)
        if not config.api_token:
            raise ConfigError("TITUS_API_TOKEN is required")
        server = MasterServer(config)
    except (ConfigError, OSError, ValueError, StoreError) as exc:
        _fail(str(exc))

    def _graceful(signum: int, _frame: object) -> None:
        logging.getLogger("titus.master").info("signal %d: handing over and stopping", signum)
        threading.Thread(target=server.shutdown, name="shutdown", daemon=True).start()

    signal.signal(signal.SIGTERM, _graceful)
    signal.signal(signal.SIGINT, _graceful)
    try:
        code = server.serve_forever()
    except LeaderElectionError as exc:
        _fail(str(exc))
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


@main.command()
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), help="KEY=VALUE file.")
@click.option("--runtime", type=click.Choice(["oci", "process", "docker"]), help="Overrides TITUS_RUNTIME.")
@click.option("--master-url", help="Overrides TITUS_MASTER_URL (comma-separated: any master serves).")
def agent(config_file: str | None, runtime: str | None, master_url: str | None) -> None:
    """Run an agent on this host from a config file plus TITUS_* environment variables."""
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


@main.command()
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


# ============================================================================== API: shared bits
def _client(url: str | None, token: str | None) -> TitusClient:
    url = url or os.environ.get("TITUS_URL") or DEFAULT_URL
    token = token or os.environ.get("TITUS_API_TOKEN")
    if not token:
        token_file = Path(os.environ.get("TITUS_DATA_DIR", ".titus")) / "api-token"
        if token_file.exists():
            token = token_file.read_text().strip()
    if not token:
        _fail("no API token: set TITUS_API_TOKEN or pass --token (titus dev writes one to .titus/api-token)")
    client = TitusClient(url, token)
    if os.environ.get("TITUS_CA_FILE"):  # a master serving HTTPS with a private CA (titus master TLS)
        client.verify = os.environ["TITUS_CA_FILE"]
    return client


def _api_options(f: Any) -> Any:
    f = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(f)
    f = click.option("--token", help="API token (default: $TITUS_API_TOKEN or .titus/api-token).")(f)
    f = click.option("--url", help=f"Master URL (default: $TITUS_URL or {DEFAULT_URL}).")(f)
    return f


def _run(action: Any) -> Any:
    try:
        return action()
    except ApiError as exc:
        _fail(str(exc), 2 if 400 <= exc.status < 500 else 1)


def _emit(data: Any, as_json: bool, human: str) -> None:
    click.echo(json.dumps(data, indent=2) if as_json else human)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


# ========================================================================================== jobs
@main.group()
def job() -> None:
    """Submit and manage jobs."""


@job.command("submit")
@click.argument("file", type=click.File("r"))
@click.option("--idempotency-key", help="Retrying with the same key returns the same job.")
@_api_options
def job_submit(
    file: Any, idempotency_key: str | None, url: str | None, token: str | None, as_json: bool
) -> None:
    """Submit the job descriptor in FILE (- for stdin)."""
    try:
        descriptor = json.load(file)
    except json.JSONDecodeError as exc:
        _fail(f"{getattr(file, 'name', 'input')} is not valid JSON: {exc}")
    client = _client(url, token)
    job_id = _run(lambda: client.submit(descriptor, idempotency_key))
    _emit({"id": job_id}, as_json, f"job {job_id} accepted")


@job.command("list")
@click.option("--state", "job_state", help="Accepted, KillInitiated or Finished.")
@click.option("--app", "application_name", help="Application name.")
@_api_options
def job_list(
    job_state: str | None, application_name: str | None, url: str | None, token: str | None, as_json: bool
) -> None:
    """List jobs (active ones unless --state Finished)."""
    client = _client(url, token)
    filters = {k: v for k, v in {"jobState": job_state, "applicationName": application_name}.items() if v}
    jobs = _run(lambda: client.jobs(**filters))
    rows = []
    for j in jobs:
        d = j["jobDescriptor"]
        size = (
            f"{d['batch']['size']} tasks"
            if "batch" in d
            else "{min}/{desired}/{max}".format(**d["service"]["capacity"])
        )
        rows.append(
            [
                j["id"],
                "batch" if "batch" in d else "service",
                j["status"]["state"],
                d["applicationName"],
                size,
            ]
        )
    _emit(jobs, as_json, _table(rows, ["ID", "TYPE", "STATE", "APPLICATION", "SIZE"]) if rows else "no jobs")


@job.command("get")
@click.argument("job_id")
@_api_options
def job_get(job_id: str, url: str | None, token: str | None, as_json: bool) -> None:
    """Show one job and its tasks: the active ones, then the finished ones (how each ended)."""
    client = _client(url, token)
    j = _run(lambda: client.job(job_id))
    tasks = _run(lambda: client.tasks(job_id))
    # The task list serves active tasks unless asked for Finished ones; a finished batch has only those,
    # and their ids are what `titus task logs` needs.
    finished = _run(lambda: client.tasks(job_id, "Finished"))
    d = j["jobDescriptor"]
    lines = [
        f"job {j['id']}",
        f"  application: {d['applicationName']}",
        f"  state:       {j['status']['state']} ({j['status'].get('reasonCode', '')})",
        f"  image:       {d['container']['image']['name']}",
        f"  active tasks: {len(tasks)}",
    ]
    for t in tasks:
        extra = f"  pending: {t['pendingReason']}" if t.get("pendingReason") else ""
        lines.append(f"    {t['id']}  {t['status']['state']}{extra}")
    lines.append(f"  finished tasks: {len(finished)}")
    for t in finished:
        why = f"{t['status'].get('reasonCode', '')}  {t['status'].get('reasonMessage', '')}".rstrip()
        lines.append(f"    {t['id']}  {why}")
    _emit({"job": j, "tasks": tasks, "finishedTasks": finished}, as_json, "\n".join(lines))


@job.command("kill")
@click.argument("job_id")
@_api_options
def job_kill(job_id: str, url: str | None, token: str | None, as_json: bool) -> None:
    """Kill a job and all its tasks."""
    client = _client(url, token)
    _run(lambda: client.kill_job(job_id))
    _emit({"id": job_id, "killed": True}, as_json, f"job {job_id}: kill initiated")


@job.command("scale")
@click.argument("job_id")
@click.option("--min", "min_", type=int)
@click.option("--desired", type=int)
@click.option("--max", "max_", type=int)
@_api_options
def job_scale(
    job_id: str,
    min_: int | None,
    desired: int | None,
    max_: int | None,
    url: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """Change a service job's capacity."""
    capacity = {k: v for k, v in {"min": min_, "desired": desired, "max": max_}.items() if v is not None}
    if not capacity:
        _fail("give at least one of --min, --desired, --max", 2)
    client = _client(url, token)
    j = _run(lambda: client.scale(job_id, **capacity))
    cap = j["jobDescriptor"]["service"]["capacity"]
    _emit(j, as_json, f"job {job_id}: min {cap.get('min', 0)} desired {cap['desired']} max {cap['max']}")


# ========================================================================================= tasks
@main.group()
def task() -> None:
    """Inspect and kill tasks."""


@task.command("list")
@click.option("--job", "job_id", help="Only this job's tasks.")
@click.option("--states", help="Comma-separated task states (e.g. Finished); default: the active ones.")
@_api_options
def task_list(
    job_id: str | None, states: str | None, url: str | None, token: str | None, as_json: bool
) -> None:
    """List tasks: the active ones (not yet Finished) unless --states says otherwise."""
    client = _client(url, token)
    tasks = _run(lambda: client.tasks(job_id, states))
    rows = [
        [
            t["id"],
            t["jobId"],
            t["status"]["state"],
            t["status"].get("reasonCode", ""),
            t["taskContext"].get("agent.id", "-"),
            t.get("pendingReason", ""),
        ]
        for t in tasks
    ]
    _emit(
        tasks,
        as_json,
        _table(rows, ["ID", "JOB", "STATE", "REASON", "AGENT", "PENDING"])
        if rows
        else "no tasks" if states else "no active tasks (finished ones: --states Finished)",
    )


@task.command("kill")
@click.argument("task_id")
@click.option("--shrink", is_flag=True, help="Also lower the service job's desired count.")
@_api_options
def task_kill(task_id: str, shrink: bool, url: str | None, token: str | None, as_json: bool) -> None:
    """Kill a task (a service job replaces it unless --shrink)."""
    client = _client(url, token)
    _run(lambda: client.kill_task(task_id, shrink))
    _emit({"id": task_id, "killed": True}, as_json, f"task {task_id}: kill initiated")


@task.command("logs")
@click.argument("task_id")
@click.option("--stderr", is_flag=True, help="Show stderr instead of stdout.")
@_api_options
def task_logs(task_id: str, stderr: bool, url: str | None, token: str | None, as_json: bool) -> None:
    """Print a task's stdout (or stderr)."""
    client = _client(url, token)
    text = _run(lambda: client.logs(task_id, "stderr" if stderr else "stdout"))
    if as_json:
        click.echo(json.dumps({"id": task_id, "stream": "stderr" if stderr else "stdout", "text": text}))
    else:
        click.echo(text, nl=False)


# ------------------------------------------------------------------------ agent identity (issue 17)
# `titus agent-tokens` (bootstrap tokens for enrolling agents) and `titus agent-credentials` (list, revoke).
def _when(ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) if ms else "-"


@main.group("agent-tokens")
def agent_tokens() -> None:
    """Bootstrap tokens: an agent presents one once (TITUS_BOOTSTRAP_TOKEN) to get its own credential."""


@agent_tokens.command("create")
@click.option("--ttl", "ttl_s", type=click.IntRange(1, 7 * 86_400), default=3600, show_default=True,
              help="Seconds the token stays valid.")
@click.option("--uses", type=click.IntRange(1, 10_000), default=1, show_default=True,
              help="How many agents may enrol with it.")
@click.option("--description", default="", help="Free text shown in the list (who or what it is for).")
@_api_options
def tokens_create(ttl_s: int, uses: int, description: str, url: str | None, token: str | None,
                  as_json: bool) -> None:
    """Create a bootstrap token; its secret is printed once (the master keeps only a hash)."""
    client = _client(url, token)
    body = {"ttlSeconds": ttl_s, "uses": uses, "description": description}
    made = _run(lambda: client.call("POST", "/api/v3/agent/bootstrapTokens", json=body))
    _emit(made, as_json, made["token"])


@agent_tokens.command("list")
@_api_options
def tokens_list(url: str | None, token: str | None, as_json: bool) -> None:
    """Bootstrap tokens with uses left (secrets are never shown again)."""
    client = _client(url, token)
    items = _run(lambda: client.call("GET", "/api/v3/agent/bootstrapTokens"))["items"]
    rows = [[t["id"], str(t["usesLeft"]), _when(t["expiresAt"]), "yes" if t["expired"] else "no",
             t["description"]] for t in items]
    _emit(items, as_json, _table(rows, ["ID", "USES LEFT", "EXPIRES (UTC)", "EXPIRED", "DESCRIPTION"]))


@agent_tokens.command("delete")
@click.argument("token_id")
@_api_options
def tokens_delete(token_id: str, url: str | None, token: str | None, as_json: bool) -> None:
    """Withdraw a bootstrap token before it expires (agents already enrolled keep their credentials)."""
    client = _client(url, token)
    _run(lambda: client.call("DELETE", f"/api/v3/agent/bootstrapTokens/{token_id}"))
    _emit({"id": token_id, "deleted": True}, as_json, f"deleted bootstrap token {token_id}")


@main.group("agent-credentials")
def agent_credentials() -> None:
    """Enrolled agents' credentials, each bound to one agent id."""


@agent_credentials.command("list")
@_api_options
def credentials_list(url: str | None, token: str | None, as_json: bool) -> None:
    """Active agent credentials."""
    client = _client(url, token)
    items = _run(lambda: client.call("GET", "/api/v3/agent/credentials"))["items"]
    rows = [[c["agentId"], c["credentialId"], _when(c["createdAt"]), c["bootstrapTokenId"]] for c in items]
    _emit(items, as_json, _table(rows, ["AGENT", "CREDENTIAL", "ENROLLED (UTC)", "BOOTSTRAP TOKEN"]))


@agent_credentials.command("revoke")
@click.argument("agent_id")
@_api_options
def credentials_revoke(agent_id: str, url: str | None, token: str | None, as_json: bool) -> None:
    """Revoke an agent's credential: it is refused at once and the agent is treated as lost."""
    client = _client(url, token)
    revoked = _run(lambda: client.call("DELETE", f"/api/v3/agent/credentials/{agent_id}"))
    _emit(revoked, as_json, f"revoked credential {revoked['credentialId']} of agent {agent_id}")


def _optional_commands() -> None:
    """Commands whose modules need optional extras; absent extras leave the rest of the CLI working."""
    try:
        from titus.cluster import cluster

        main.add_command(cluster)
    except ImportError:
        pass
    try:
        from capacity.cli import capacity_controller

        main.add_command(capacity_controller, "capacity-controller")
    except ImportError:
        pass


_optional_commands()

if __name__ == "__main__":
    main()
