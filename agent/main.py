"""Builds and runs an agent from configuration (TITUS_* values)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from agent.agent import Agent, AgentConfig
from agent.imds import DEFAULT_URL, ImdsError, InstanceIdentity, read_identity
from agent.master_client import MasterClient
from agent.runtime.base import Runtime
from shared.config import ConfigError, get_float, get_int

log = logging.getLogger("titus.agent")


def host_memory_mb() -> int:
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024))


RUNTIMES = ("oci", "process", "docker")


def build_runtime(name: str, data_dir: Path, agent_id: str, image_cache_mb: int = 20_480,
                  image_cache_dir: Path | None = None) -> Runtime:
    """oci (the default): containers from images under runc. process: the task runs on the host as an
    unprivileged user, for trusted single-user setups only. docker: containers on the host's dockerd."""
    if name == "oci":
        from agent.runtime.images import ImageCache
        from agent.runtime.oci import OciRuntime

        cache = ImageCache(image_cache_dir or data_dir / "images", max_bytes=image_cache_mb * 2**20)
        return OciRuntime(data_dir, agent_id, images=cache)
    if name == "process":
        from agent.runtime.process import ProcessRuntime

        return ProcessRuntime(data_dir, agent_id)
    if name == "docker":
        from agent.runtime.docker import DockerRuntime

        return DockerRuntime(agent_id=agent_id, log_dir=data_dir / "docker-logs")
    raise ConfigError(f"TITUS_RUNTIME must be one of {', '.join(RUNTIMES)}, got {name!r}")


def config_from(values: Mapping[str, str]) -> tuple[AgentConfig, str, str, Path, str]:
    url = values.get("TITUS_MASTER_URL", "http://127.0.0.1:7001")
    # The shared agent token is the dev/compat mode; otherwise run_agent enrols (or finds its credential).
    token = values.get("TITUS_AGENT_TOKEN", "")
    agent_id = values.get("TITUS_AGENT_ID") or socket.gethostname()
    identity = _instance_identity(values)
    zone, instance_type = (identity.zone, identity.instance_type) if identity else ("local", "local")
    attributes = {
        "zone": values.get("TITUS_ZONE") or zone,
        "instanceType": values.get("TITUS_INSTANCE_TYPE") or instance_type,
        "tier": values.get("TITUS_TIER", "flex"),
        "instanceGroup": values.get("TITUS_INSTANCE_GROUP", "default"),
        "id": agent_id,
    }
    if identity is not None:
        # The capacity controller terminates this instance id once it has drained this agent.
        attributes["instanceId"] = identity.instance_id
    config = AgentConfig(
        agent_id=agent_id,
        cpu=get_float(values, "TITUS_AGENT_CPU", float(os.cpu_count() or 1)),
        memory_mb=get_int(values, "TITUS_AGENT_MEMORY_MB", host_memory_mb()),
        disk_mb=get_int(values, "TITUS_AGENT_DISK_MB", 100_000),
        network_mbps=get_int(values, "TITUS_AGENT_NETWORK_MBPS", 10_000),
        gpu=get_int(values, "TITUS_AGENT_GPUS", 0),
        attributes=attributes,
        unknown_task_grace_s=get_float(values, "TITUS_UNKNOWN_TASK_GRACE_S", 5.0),
        pids_limit=get_int(values, "TITUS_TASK_PIDS_LIMIT", 1024),
        kill_tasks_on_exit=values.get("TITUS_KILL_TASKS_ON_EXIT", "false").lower() == "true",
        self_fence=values.get("TITUS_SELF_FENCE", "false").lower() == "true",
        min_available_memory_mb=get_int(values, "TITUS_MIN_AVAILABLE_MEMORY_MB", 256),
        log_max_bytes=get_int(values, "TITUS_TASK_LOG_MAX_MB", 64) << 20,
    )
    data_dir = Path(values.get("TITUS_DATA_DIR", "/var/lib/titus-agent"))
    return config, url, token, data_dir, values.get("TITUS_RUNTIME", "oci")


def _instance_identity(values: Mapping[str, str]) -> InstanceIdentity | None:
    """The EC2 identity from IMDSv2 when TITUS_IMDS is true (the Ansible role sets it on AWS)."""
    if values.get("TITUS_IMDS", "false").lower() != "true":
        return None
    try:
        return read_identity(values.get("TITUS_IMDS_URL") or DEFAULT_URL)
    except ImdsError as exc:
        raise ConfigError(f"TITUS_IMDS is true but {exc}") from exc


def _host_stats_reader() -> Callable[[], dict[str, float]]:
    from agent.monitor import PsutilMonitor

    monitor = PsutilMonitor()

    def read() -> dict[str, float]:
        h = monitor.host()
        return {
            "cpuCount": h.cpu_count,
            "cpuPct": round(h.cpu_pct, 2),
            "memoryTotalMB": round(h.memory_total_mb),
            "memoryAvailableMB": round(h.memory_available_mb),
            "memoryUsedMB": round(h.memory_used_mb),
        }

    return read


def client_certificate(values: Mapping[str, str]) -> tuple[str, str] | None:
    """(certificate, key) for masters that require mutual TLS (TITUS_TLS_CLIENT_CERT/_KEY), if set."""
    cert, key = values.get("TITUS_TLS_CLIENT_CERT", ""), values.get("TITUS_TLS_CLIENT_KEY", "")
    if bool(cert) != bool(key):
        raise ConfigError("TITUS_TLS_CLIENT_CERT and TITUS_TLS_CLIENT_KEY go together")
    return (cert, key) if cert else None


def agent_token(values: Mapping[str, str], url: str, agent_id: str, data_dir: Path, shared: str,
                instance_id: str = "") -> str:
    """This agent's credential (stored, or enrolled for with TITUS_BOOTSTRAP_TOKEN), else the shared
    agent token of the dev/compat mode (TITUS_AGENT_TOKEN)."""
    from agent.enrol import EnrolmentError, enrol, stored_credential

    bootstrap = values.get("TITUS_BOOTSTRAP_TOKEN", "")
    try:
        if stored_credential(data_dir, agent_id) is None and not bootstrap:
            if shared:
                return shared
            raise ConfigError("TITUS_BOOTSTRAP_TOKEN is required to enrol (titus agent-tokens create), or "
                              "TITUS_AGENT_TOKEN for the shared-token dev/compat mode")
        return enrol(data_dir, [u.strip() for u in url.split(",") if u.strip()], agent_id, bootstrap,
                     instance_id=instance_id or None, ca_file=values.get("TITUS_CA_FILE", ""),
                     client_cert=client_certificate(values))
    except EnrolmentError as exc:
        raise ConfigError(str(exc)) from exc


def run_agent(values: Mapping[str, str]) -> None:
    config, url, shared_token, data_dir, runtime_name = config_from(values)
    data_dir.mkdir(parents=True, exist_ok=True)
    token = agent_token(values, url, config.agent_id, data_dir, shared_token,
                        config.attributes.get("instanceId", ""))
    # Agent state: the process runtime's tasks (an unprivileged uid) pass through to their work dirs.
    os.chmod(data_dir, 0o711 if runtime_name == "process" else 0o700)
    cache_dir = values.get("TITUS_IMAGE_CACHE_DIR")
    runtime = build_runtime(runtime_name, data_dir, config.agent_id,
                            get_int(values, "TITUS_IMAGE_CACHE_MB", 20_480),
                            Path(cache_dir) if cache_dir else None)
    client = MasterClient(url, token, values.get("TITUS_CA_FILE", ""), client_certificate(values))
    agent = Agent(config, runtime, client, _host_stats_reader(), data_dir, runtime_name)
    if values.get("TITUS_LOG_S3_BUCKET"):
        from shared.log_archive import from_settings

        agent.log_archive = from_settings(values)  # finished tasks' logs go there (agent/task_logs.py)
    done = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping agent", signum)
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    agent.start()
    metrics_port = get_int(values, "TITUS_AGENT_METRICS_PORT", 0)
    if metrics_port:
        from agent.metrics import serve

        serve(agent, metrics_port, values.get("TITUS_AGENT_METRICS_ADDR", "127.0.0.1"))
    done.wait()
    agent.stop()
