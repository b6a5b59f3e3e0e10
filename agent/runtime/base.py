"""The contract between the agent's convergence loop and whatever actually runs containers.

The agent only ever asks a runtime to start, poll, kill, clean up and list; a process runtime (cgroups)
and a Docker runtime implement the same Protocol and pass the same contract tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class TaskSpec:
    """Everything a runtime needs to launch one task; built by the agent from the master's assignment."""

    task_id: str
    job_id: str
    image: str  # "name:tag" or "name@sha256:..."; the process runtime accepts only its host images
    entry_point: tuple[str, ...] = ()
    command: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    cpu: float = 1.0
    memory_mb: int = 512
    disk_mb: int = 10_000
    network_mbps: int = 128
    pids_limit: int = 1024
    original_id: str = ""  # the first task of a chain of replacements; "" means this task
    index: int = 0  # batch task index
    resubmit_number: int = 0

    @property
    def argv(self) -> list[str]:
        """The job's own argv (entryPoint then command); Titus's [""] ("clear the image's") adds nothing."""
        return [a for part in (self.entry_point, self.command) if part != ("",) for a in part]

    @property
    def image_name(self) -> str:
        name = self.image.split("@", 1)[0]
        last = name.rsplit("/", 1)[-1]
        return name.rsplit(":", 1)[0] if ":" in last else name

    @property
    def image_tag(self) -> str:
        name = self.image.split("@", 1)[0]
        last = name.rsplit("/", 1)[-1]
        return last.rsplit(":", 1)[1] if ":" in last else ("" if "@" in self.image else "latest")

    @property
    def image_digest(self) -> str:
        return self.image.split("@", 1)[1] if "@" in self.image else ""


def task_identity(spec: TaskSpec) -> dict[str, str]:
    """The environment Titus's executor gives every task (README: Task environment)."""
    return {
        "TITUS_TASK_ID": spec.task_id,
        "TITUS_TASK_INSTANCE_ID": spec.task_id,
        "TITUS_TASK_ORIGINAL_ID": spec.original_id or spec.task_id,
        "TITUS_JOB_ID": spec.job_id,
        "TITUS_TASK_INDEX": str(spec.index),
        "TITUS_TASK_RESUBMIT_NUMBER": str(spec.resubmit_number),
        "TITUS_IMAGE_NAME": spec.image_name,
        "TITUS_IMAGE_TAG": spec.image_tag,
        "TITUS_IMAGE_DIGEST": spec.image_digest,
        "TITUS_NUM_CPU": f"{spec.cpu:g}",
        "TITUS_NUM_MEM": str(spec.memory_mb),
        "TITUS_NUM_DISK": str(spec.disk_mb),
        "TITUS_NUM_NETWORK_BANDWIDTH": str(spec.network_mbps),
    }


@dataclass(frozen=True)
class ExitStatus:
    """How a task ended. `reason` uses the task reason codes: normal, failed, killed, crashed, ..."""

    exit_code: int | None
    reason: str
    message: str
    oom_killed: bool = False


@dataclass(frozen=True)
class Usage:
    cpu_pct: float  # percent of one core, averaged since the previous sample
    rss_mb: float
    processes: int


class LaunchError(Exception):
    """The task could not be started at all (bad command, image pull failure, ...); message is user-facing."""


class Runtime(Protocol):
    def start(self, spec: TaskSpec) -> None:
        """Start the task and return once it runs. Raises LaunchError with a user-facing message;
        poll() then reports the same failure (reason failed), so a restarted agent can still report it."""

    def poll(self, task_id: str) -> ExitStatus | None:
        """None while running; the exit status once it has ended (idempotent after that, also after
        cleanup). Raises KeyError for a task this runtime never started."""

    def kill(self, task_id: str, grace_s: float) -> None:
        """Ask the task to stop: SIGTERM now, SIGKILL after grace_s. Returns at once; poll() tells the end."""

    def cleanup(self, task_id: str) -> None:
        """Release everything the ended task held (cgroups, container). Logs are kept. Called on a task
        that still runs, it kills it without grace first."""

    def logs(self, task_id: str, stream: str, tail_bytes: int = 65536) -> bytes:
        """stream is "stdout" or "stderr"; the last tail_bytes of it."""

    def log_path(self, task_id: str, stream: str) -> Path | None:
        """The file the task's stream is written to, for byte-range reads, follow and rotation
        (agent/task_logs.py), also after cleanup; None when the runtime keeps it elsewhere (Docker, while the
        container exists), where the agent falls back to logs(). Raises ValueError for a bad task id."""

    def list_running(self) -> list[str]:
        """Task ids this runtime finds running on the host, including ones started before an agent restart."""

    def list_tasks(self) -> list[str]:
        """Task ids this runtime holds resources for: running, or ended but not yet cleaned up. A restarted
        agent uses it to report ends it missed (poll() gives their status) instead of calling them lost,
        and to find tasks it never started (orphans) so it can kill them."""

    def usage(self, task_id: str) -> Usage | None:
        """Latest resource usage of a running task, or None if unknown."""
