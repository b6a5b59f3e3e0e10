"""Pure translation between Titus tasks and Docker containers: no I/O, no docker import.

Everything the Docker runtime decides (limits, privileges, labels, names, how an ended container reads as
a task status, how stats become usage) lives here as functions of plain data, so it is checked by fast
unit tests and the adapter in docker.py only carries the decisions out.
"""

from __future__ import annotations

import hashlib
import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from agent.runtime import isolation
from agent.runtime.base import ExitStatus, TaskSpec, Usage, task_identity

LABEL_TASK_ID: Final = "titus.task_id"
LABEL_JOB_ID: Final = "titus.job_id"
LABEL_AGENT_ID: Final = "titus.agent_id"

# The one table of what tasks are denied (shared with the OCI runtime): isolation.py.
DOCKER_DEFAULT_CAPS: Final = isolation.DOCKER_DEFAULT_CAPS
TASK_CAPS: Final = isolation.TASK_CAPS

_ALLOWED_NETWORK_MODES: Final = ("bridge", "none")
_NAME_OK = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


@dataclass(frozen=True)
class ContainerPolicy:
    """Host-wide rules for every task container; validated so a config cannot widen a task's privileges."""

    cap_add: tuple[str, ...] = TASK_CAPS
    read_only_rootfs: bool = False
    tmpfs_tmp_mb: int = 64  # a writable /tmp when the root filesystem is read-only
    network_mode: str = "bridge"
    use_init: bool = True  # tini as PID 1: forwards SIGTERM to the task and reaps its zombies
    log_max_size: str = "10m"
    log_max_files: int = 3

    def __post_init__(self) -> None:
        extra = set(self.cap_add) - DOCKER_DEFAULT_CAPS
        if extra:
            raise ValueError(
                f"cap_add: {sorted(extra)} are not in Docker's default set; tasks never get more than that"
            )
        if self.network_mode not in _ALLOWED_NETWORK_MODES:
            raise ValueError(
                f"network_mode: {self.network_mode!r} not allowed; use one of {_ALLOWED_NETWORK_MODES} "
                "(host networking would give tasks the agent's network namespace)"
            )


def container_name(task_id: str) -> str:
    """A readable, unique Docker name for the task; a hash keeps ids with odd characters distinct."""
    if _NAME_OK.match(task_id) and len(task_id) <= 200:
        return f"titus-{task_id}"
    safe = re.sub(r"[^a-zA-Z0-9_.-]", "_", task_id)[:180]
    digest = hashlib.sha256(task_id.encode()).hexdigest()[:12]
    return f"titus-{safe}-{digest}"


def container_labels(spec: TaskSpec, agent_id: str) -> dict[str, str]:
    return {LABEL_TASK_ID: spec.task_id, LABEL_JOB_ID: spec.job_id, LABEL_AGENT_ID: agent_id}


def create_kwargs(spec: TaskSpec, agent_id: str, policy: ContainerPolicy) -> dict[str, Any]:
    """Keyword arguments for the Docker SDK's `containers.create`, expressing the task's limits."""
    memory = spec.memory_mb * 1024 * 1024
    kwargs: dict[str, Any] = {
        "image": spec.image,
        "name": container_name(spec.task_id),
        "labels": container_labels(spec, agent_id),
        # The same task identity the process runtime gives its tasks; the job's own env wins on a clash.
        "environment": {**task_identity(spec), **spec.env},
        # Empty means "the image's own": Docker keeps the image's ENTRYPOINT/CMD when these are None.
        "entrypoint": list(spec.entry_point) or None,
        "command": list(spec.command) or None,
        "detach": True,
        # Memory: a hard limit and the same memory+swap limit, so the task cannot swap past it.
        "mem_limit": memory,
        "memswap_limit": memory,
        # CPU: a CFS quota of `cpu` cores per 100 ms period caps it; shares weight it under contention.
        "nano_cpus": round(spec.cpu * 1e9),
        "cpu_shares": max(2, round(spec.cpu * 1024)),
        "pids_limit": spec.pids_limit,
        # Privileges: nothing beyond Docker's defaults, and fewer than them.
        "privileged": False,
        "cap_drop": ["ALL"],
        "cap_add": list(policy.cap_add),
        "security_opt": ["no-new-privileges:true"],
        # Namespaces of its own, explicitly (a daemon may default IPC to "shareable" or cgroupns to "host");
        # PID, mount and UTS are always private unless asked otherwise, which we never do. Docker's default
        # seccomp profile and its masked / read-only /proc paths apply since we never ask to drop them.
        "ipc_mode": "private",
        "cgroupns": "private",
        "read_only": policy.read_only_rootfs,
        "network_mode": policy.network_mode,
        "init": policy.use_init,
        "log_config": {
            "type": "json-file",
            "config": {"max-size": policy.log_max_size, "max-file": str(policy.log_max_files)},
        },
    }
    if policy.read_only_rootfs:
        kwargs["tmpfs"] = {"/tmp": f"rw,nosuid,nodev,size={policy.tmpfs_tmp_mb}m"}
    return kwargs


#: Exit codes with which the container's init (tini) reports that it could not exec the task's command.
EXEC_FAILURE_CODES: Final = (126, 127)
_TINI_EXEC_FAILED = re.compile(r"\[FATAL tini \(\d+\)\] (exec .* failed: .*)")


def exit_status_from_state(
    state: Mapping[str, Any], *, killed: bool, memory_mb: int | None = None, stderr_tail: str = ""
) -> ExitStatus | None:
    """Read Docker's `State` of a container as a task's end, or None while it has not ended.

    `stderr_tail` matters only for EXEC_FAILURE_CODES: the init's complaint there is the user's answer to
    "why did my task not run" (a command missing from the image), so it becomes the message.
    """
    status = state.get("Status")
    if status not in ("exited", "dead"):
        return None
    code = state.get("ExitCode")
    exit_code = int(code) if code is not None else None
    error = str(state.get("Error") or "").strip()
    if state.get("OOMKilled"):
        limit = f" of {memory_mb} MB" if memory_mb is not None else ""
        return ExitStatus(
            exit_code=exit_code,
            reason="failed",
            message=f"out of memory: the task exceeded its memory limit{limit} and was killed by the kernel",
            oom_killed=True,
        )
    if killed:
        how = _describe_code(exit_code)
        return ExitStatus(exit_code=exit_code, reason="killed", message=f"killed on request ({how})")
    if exit_code == 0:
        return ExitStatus(exit_code=0, reason="normal", message="exited with code 0")
    if exit_code in EXEC_FAILURE_CODES:
        found = _TINI_EXEC_FAILED.findall(stderr_tail)
        if found:
            return ExitStatus(
                exit_code, "failed", f"the task's command could not be run: {found[-1].strip()}"
            )
    message = _describe_code(exit_code)
    if error:
        message = f"{message}: {error}"
    return ExitStatus(exit_code=exit_code, reason="failed", message=message)


def _describe_code(exit_code: int | None) -> str:
    if exit_code is None:
        return "no exit code"
    if exit_code > 128:
        try:
            return f"exited with code {exit_code} (signal {signal.Signals(exit_code - 128).name})"
        except ValueError:
            pass
    return f"exited with code {exit_code}"


@dataclass(frozen=True)
class CpuSample:
    usage_ns: int  # cumulative CPU time of the container's cgroup
    at_s: float  # monotonic seconds when read


def cpu_percent(previous: CpuSample, current: CpuSample) -> float:
    """Percent of one core used between two samples (200.0 = two full cores)."""
    elapsed = current.at_s - previous.at_s
    if elapsed <= 0:
        return 0.0
    return max(0.0, (current.usage_ns - previous.usage_ns) / 1e9 / elapsed * 100.0)


def usage_from_stats(stats: Mapping[str, Any], cpu_pct: float) -> Usage:
    """Docker stats (cgroup v1 or v2 shape) as Usage; RSS excludes page cache, as psutil's does."""
    memory = stats.get("memory_stats") or {}
    detail = memory.get("stats") or {}
    rss_bytes = detail.get("total_rss", detail.get("rss", detail.get("anon")))
    if rss_bytes is None:
        cache = int(detail.get("total_cache", detail.get("file", 0)))
        rss_bytes = max(0, int(memory.get("usage", 0)) - cache)
    processes = int((stats.get("pids_stats") or {}).get("current", 0))
    return Usage(cpu_pct=cpu_pct, rss_mb=int(rss_bytes) / (1024 * 1024), processes=processes)


def cpu_usage_ns(stats: Mapping[str, Any]) -> int:
    return int(((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage", 0))
