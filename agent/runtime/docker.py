"""The Docker runtime: tasks as containers on the host's dockerd, through the Docker SDK for Python.

This is the adapter: it talks to dockerd and nothing else. What a container looks like for a task (limits,
privileges, labels) and how its end reads as a task status are decided in docker_mapping.py.

Containers carry the task id, job id and agent id as labels and a name derived from the task id, so an
agent that restarts finds its running tasks again by label (list_running) and reattaches by name; there is
no state file to lose.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors

from agent.runtime.base import ExitStatus, LaunchError, TaskSpec, Usage
from agent.runtime.docker_mapping import (
    EXEC_FAILURE_CODES,
    LABEL_AGENT_ID,
    LABEL_TASK_ID,
    ContainerPolicy,
    CpuSample,
    container_name,
    cpu_percent,
    cpu_usage_ns,
    create_kwargs,
    exit_status_from_state,
    usage_from_stats,
)
from agent.runtime.registry_auth import (
    AnonymousCredentials,
    ImageRef,
    RegistryAuthError,
    RegistryCredentials,
    parse_image_ref,
)
from agent.runtime.single_flight import SingleFlight

log = logging.getLogger(__name__)

_MIB = 1024 * 1024
_FINAL_STATUSES_KEPT = 10_000  # poll() stays idempotent after cleanup for this many recent tasks


class DockerRuntime:
    """Runtime over dockerd. Thread-safe: the agent may start, poll and kill tasks from several threads."""

    def __init__(
        self,
        agent_id: str,
        *,
        client: docker.DockerClient | None = None,
        credentials: RegistryCredentials | None = None,
        policy: ContainerPolicy | None = None,
        log_dir: Path | str | None = None,
        kill_workers: int = 8,
    ) -> None:
        self.agent_id = agent_id
        self._client = client if client is not None else docker.from_env()
        self._api = self._client.api
        self._credentials = credentials if credentials is not None else AnonymousCredentials()
        self._policy = policy if policy is not None else ContainerPolicy()
        default_logs = Path(tempfile.gettempdir()) / "titus-docker-logs" / container_name(agent_id)
        self._log_dir = Path(log_dir) if log_dir is not None else default_logs
        self._pulls: SingleFlight[str, None] = SingleFlight()
        self._lock = threading.Lock()
        self._present: set[str] = set()  # image references known to be on the host
        self._killed: set[str] = set()
        self._final: OrderedDict[str, ExitStatus] = OrderedDict()
        self._cpu_samples: dict[str, CpuSample] = {}
        self._stopper = ThreadPoolExecutor(max_workers=kill_workers, thread_name_prefix="docker-stop")
        self.pull_count = 0  # pulls actually sent to dockerd; shared and skipped pulls do not count

    # ---- Runtime protocol -------------------------------------------------------------------------------

    def start(self, spec: TaskSpec) -> None:
        try:
            ref = parse_image_ref(spec.image)
        except ValueError as e:
            raise LaunchError(f"invalid image: {e}") from e
        self._ensure_image(ref)
        kwargs = create_kwargs(spec, self.agent_id, self._policy)
        name = kwargs["name"]
        with self._lock:
            self._killed.discard(spec.task_id)
            self._final.pop(spec.task_id, None)
            self._cpu_samples.pop(spec.task_id, None)
        try:
            container = self._create(kwargs, ref)
        except _AlreadyRunning:
            return
        try:
            container.start()
        except docker.errors.APIError as e:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
            raise LaunchError(f"container for task {spec.task_id} failed to start: {_explain(e)}") from e
        log.info("started task %s as container %s (%s)", spec.task_id, name, container.short_id)

    def poll(self, task_id: str) -> ExitStatus | None:
        with self._lock:
            final = self._final.get(task_id)
        if final is not None:
            return final
        try:
            attrs = self._api.inspect_container(container_name(task_id))
        except docker.errors.NotFound:
            return ExitStatus(None, "lost", f"no container for task {task_id} on this host")
        memory = (attrs.get("HostConfig") or {}).get("Memory") or 0
        with self._lock:
            killed = task_id in self._killed
        stderr_tail = ""
        if attrs["State"].get("ExitCode") in EXEC_FAILURE_CODES and not attrs["State"].get("Running"):
            stderr_tail = self.logs(task_id, "stderr", 4096).decode(errors="replace")
        status = exit_status_from_state(
            attrs["State"],
            killed=killed,
            memory_mb=memory // _MIB if memory else None,
            stderr_tail=stderr_tail,
        )
        if status is not None:
            self._remember_final(task_id, status)
        return status

    def kill(self, task_id: str, grace_s: float) -> None:
        with self._lock:
            self._killed.add(task_id)
        # `docker stop` sends the image's stop signal (SIGTERM), waits, then SIGKILLs; it blocks for up to
        # the grace period, so it runs on a worker and kill() returns at once.
        self._stopper.submit(self._stop, task_id, max(0, math.ceil(grace_s)))

    def cleanup(self, task_id: str) -> None:
        name = container_name(task_id)
        try:
            attrs = self._api.inspect_container(name)
        except docker.errors.NotFound:
            return
        if attrs["State"].get("Running"):
            log.warning("cleanup of task %s while its container still runs: removing it by force", task_id)
        status = self.poll(task_id)
        if status is None:
            self._remember_final(task_id, ExitStatus(None, "killed", "removed while running"))
        self._save_logs(task_id)
        with contextlib.suppress(docker.errors.NotFound):
            self._api.remove_container(name, force=True, v=True)
        with self._lock:
            self._cpu_samples.pop(task_id, None)

    def logs(self, task_id: str, stream: str, tail_bytes: int = 65536) -> bytes:
        if stream not in ("stdout", "stderr"):
            raise ValueError(f"stream must be 'stdout' or 'stderr', not {stream!r}")
        try:
            data: bytes = self._api.logs(
                container_name(task_id), stdout=stream == "stdout", stderr=stream == "stderr"
            )
        except docker.errors.NotFound:
            saved = self._log_path(task_id, stream)
            if not saved.exists():
                return b""
            with saved.open("rb") as f:
                size = f.seek(0, 2)
                f.seek(max(0, size - tail_bytes))
                return f.read()
        return data[-tail_bytes:] if tail_bytes > 0 else b""

    def log_path(self, task_id: str, stream: str) -> Path | None:
        """Docker keeps a live container's output itself (its log driver); after cleanup the saved copy."""
        if stream not in ("stdout", "stderr"):
            raise ValueError(f"stream must be 'stdout' or 'stderr', not {stream!r}")
        saved = self._log_path(task_id, stream)
        return saved if saved.exists() else None  # written by cleanup, before the container is removed

    def list_running(self) -> list[str]:
        mine = f"{LABEL_AGENT_ID}={self.agent_id}"
        live = ["running", "paused", "restarting"]
        containers = self._api.containers(filters={"label": mine, "status": live})
        return sorted(c["Labels"][LABEL_TASK_ID] for c in containers if LABEL_TASK_ID in c.get("Labels", {}))

    def list_tasks(self) -> list[str]:
        """Every container of this agent, running or exited but not yet removed (its end not yet
        acknowledged by the master); poll() reads an exited one's status from dockerd."""
        mine = f"{LABEL_AGENT_ID}={self.agent_id}"
        containers = self._api.containers(all=True, filters={"label": mine})
        return sorted(c["Labels"][LABEL_TASK_ID] for c in containers if LABEL_TASK_ID in c.get("Labels", {}))

    def usage(self, task_id: str) -> Usage | None:
        name = container_name(task_id)
        try:
            stats = self._api.stats(name, stream=False, one_shot=True)
        except docker.errors.NotFound:
            return None
        if not stats.get("pids_stats") or str(stats.get("read", "")).startswith("0001-"):
            return None  # not running: dockerd answers with an empty sample
        current = CpuSample(usage_ns=cpu_usage_ns(stats), at_s=time.monotonic())
        with self._lock:
            previous = self._cpu_samples.get(task_id)
            self._cpu_samples[task_id] = current
        if previous is None:
            previous = self._started_sample(name, current)
        return usage_from_stats(stats, cpu_percent(previous, current) if previous else 0.0)

    # ---- extras -----------------------------------------------------------------------------------------

    def close(self) -> None:
        """Wait for pending stops and drop the connection pool."""
        self._stopper.shutdown(wait=True)
        self._client.close()

    def container_id(self, task_id: str) -> str | None:
        """The container's full id, for tools that look at its cgroups (tests, debugging)."""
        try:
            return str(self._api.inspect_container(container_name(task_id))["Id"])
        except docker.errors.NotFound:
            return None

    # ---- internals --------------------------------------------------------------------------------------

    def _ensure_image(self, ref: ImageRef) -> None:
        key = str(ref)
        with self._lock:
            if key in self._present:
                return
        self._pulls.do(key, lambda: self._pull_if_missing(ref))
        with self._lock:
            self._present.add(key)

    def _pull_if_missing(self, ref: ImageRef) -> None:
        key = str(ref)
        try:
            self._api.inspect_image(key)
            return
        except docker.errors.NotFound:
            pass
        try:
            credential = self._credentials.credentials_for(ref.registry)
        except RegistryAuthError as e:
            raise LaunchError(f"image pull of {key} failed: {e}") from e
        auth = credential.as_auth_config() if credential is not None else None
        with self._lock:
            self.pull_count += 1
        log.info("pulling %s", key)
        try:
            # Streamed so that errors reported mid-pull (a layer that fails) are seen, not only HTTP errors.
            for event in self._api.pull(
                ref.repository, tag=ref.reference, stream=True, decode=True, auth_config=auth
            ):
                if "error" in event:
                    detail = (event.get("errorDetail") or {}).get("message") or event["error"]
                    raise LaunchError(f"image pull of {key} failed: {detail}")
        except docker.errors.APIError as e:
            raise LaunchError(f"image pull of {key} failed: {_explain(e)}") from e
        try:
            self._api.inspect_image(key)
        except docker.errors.NotFound as e:
            raise LaunchError(f"image pull of {key} finished but dockerd does not have the image") from e

    def _create(self, kwargs: dict[str, Any], ref: ImageRef) -> Any:
        name = kwargs["name"]
        for attempt in range(3):
            try:
                return self._client.containers.create(**kwargs)
            except docker.errors.ImageNotFound:
                # Removed since we pulled it (image GC, an operator): forget it and pull again.
                with self._lock:
                    self._present.discard(str(ref))
                if attempt == 2:
                    raise LaunchError(f"image {ref} vanished from the host while starting") from None
                self._ensure_image(ref)
            except docker.errors.APIError as e:
                if e.status_code != 409:
                    raise LaunchError(f"container for image {ref} could not be created: {_explain(e)}") from e
                self._resolve_name_conflict(name, kwargs["labels"])
        raise LaunchError(f"container name {name} stays taken by another container")

    def _resolve_name_conflict(self, name: str, labels: dict[str, str]) -> None:
        """A container of the same task exists: reuse it if it runs (start is idempotent), else replace it."""
        try:
            attrs = self._api.inspect_container(name)
        except docker.errors.NotFound:
            return  # gone in between: just create again
        theirs = attrs["Config"].get("Labels") or {}
        if theirs.get(LABEL_AGENT_ID) != self.agent_id or theirs.get(LABEL_TASK_ID) != labels[LABEL_TASK_ID]:
            raise LaunchError(f"container name {name} is taken by a container this agent does not own")
        if attrs["State"].get("Running"):
            raise _AlreadyRunning()
        self._api.remove_container(name, force=True, v=True)

    def _stop(self, task_id: str, grace_s: int) -> None:
        try:
            self._api.stop(container_name(task_id), timeout=grace_s)
        except docker.errors.NotFound:
            pass
        except Exception:
            log.exception("stopping task %s failed", task_id)

    def _remember_final(self, task_id: str, status: ExitStatus) -> None:
        with self._lock:
            self._final[task_id] = status
            self._final.move_to_end(task_id)
            while len(self._final) > _FINAL_STATUSES_KEPT:
                self._final.popitem(last=False)

    def _log_path(self, task_id: str, stream: str) -> Path:
        return self._log_dir / container_name(task_id) / stream

    def _save_logs(self, task_id: str) -> None:
        """Docker deletes a container's logs with it; keep a copy so logs outlive cleanup."""
        name = container_name(task_id)
        for stream in ("stdout", "stderr"):
            path = self._log_path(task_id, stream)
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                data = self._api.logs(name, stdout=stream == "stdout", stderr=stream == "stderr")
            except docker.errors.NotFound:
                return
            path.write_bytes(data)

    def _started_sample(self, name: str, current: CpuSample) -> CpuSample | None:
        """With no earlier sample, average since the container started."""
        try:
            started = self._api.inspect_container(name)["State"]["StartedAt"]
        except (docker.errors.NotFound, KeyError):
            return None
        started_s = _parse_docker_time(started)
        if started_s is None:
            return None
        return CpuSample(usage_ns=0, at_s=current.at_s - max(0.0, time.time() - started_s))


class _AlreadyRunning(Exception):
    pass


def _explain(e: docker.errors.APIError) -> str:
    return str(e.explanation or e).strip()


def _parse_docker_time(value: str) -> float | None:
    """Docker prints RFC 3339 with nanoseconds, which datetime cannot parse: trim to microseconds."""
    if not value or value.startswith("0001-"):
        return None
    head, _, frac = value.rstrip("Z").partition(".")
    text = f"{head}.{(frac + '000000')[:6]}+00:00"
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None
