"""Runs each task as a host process in cgroups of its own; the runtime of `titus dev` and of bare agents.

Design (see also _spawner.py):
- Limits are the kernel's job: a task joins its memory/cpu/pids cgroups in the forked child *before* it
  execs, so no instruction of the user's program runs outside them.
- Every task has a tiny supervisor (a fork of a long-lived, single-threaded spawner process) that waits for
  it and writes its exact exit status to `<data_dir>/tasks/<id>/exit.json`. The supervisor outlives the
  agent, so a restarted agent learns how tasks ended even though they are no longer its children. Cost:
  about 1 ms per start and ~1 MB of unshared memory per running task, against ~30 ms for a fresh
  interpreter per task; we chose the fork server.
- Everything the runtime knows about a task is on disk (task directory + cgroup directory), so a new
  ProcessRuntime on the same data_dir and agent_id picks up where the old one stopped.
- Kill escalation (SIGTERM to the task's process group, SIGKILL to every pid in its cgroup after the grace
  period) runs on one timer thread; the deadline is persisted, so a restarted agent re-arms it.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

from agent import cgroups
from agent.monitor import HostStats, PsutilMonitor
from agent.runtime import mounts
from agent.runtime._spawner import _proc_start
from agent.runtime.base import ExitStatus, LaunchError, Runtime, TaskSpec, Usage, task_identity

log = logging.getLogger(__name__)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Process-runtime tasks run as host uids (and gids) TASK_UID_BASE + 0..TASK_UID_RANGE-1, one per task:
#: not root, owning nothing of the agent's or master's, and apart from the OCI runtime's 100000-165535.
TASK_UID_BASE = 200_000
#: CFS quota (cores) a task's cgroup has while the runtime starts it, if the task's own is smaller. The
#: container's setup (runc's init: namespaces, mounts, seccomp) runs inside the task's cgroup, so at a
#: quota of 0.1 core a start that takes 100 ms took 750 ms, throttled. The task's own quota is set the
#: moment the start returns: what a task can take above it is at most this much for that long.
START_CPU = 1.0
TASK_UID_RANGE = 100_000
#: Image names the process runtime accepts, meaning "run on the host as it is".
HOST_IMAGES = frozenset({"host", "titus/host"})
_SPAWNER = str(Path(__file__).with_name("_spawner.py"))
_STREAMS = ("stdout", "stderr")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            value: dict[str, Any] = json.load(f)
            return value
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_json_atomic(path: Path, value: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(value, f)
    os.replace(tmp, path)


def _alive(pid: int | None, start: int | None) -> bool:
    """Same pid and same start time: the process we started, not a later one that reused its pid."""
    return pid is not None and start is not None and _proc_start(pid) == start


def _zombie(pid: int) -> bool:
    """Whether the pid has exited and only waits to be reaped (state Z in /proc/<pid>/stat)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return True  # gone altogether
    return data[data.rindex(b")") + 2 : data.rindex(b")") + 3] == b"Z"


def supervisor_running(task_dir: Path) -> bool:
    """Whether the supervisor of the task in `task_dir` may still write there (exit.json, supervisor.log).

    An exited supervisor that its parent has not reaped yet has written everything it will: it counts as
    gone. A task directory without pids.json has no supervisor that reported itself.
    """
    pids = _read_json(task_dir / "pids.json") or {}
    pid, start = pids.get("supervisor_pid"), pids.get("supervisor_start")
    return pid is not None and _alive(pid, start) and not _zombie(int(pid))


def wait_for_supervisor(task_dir: Path, timeout_s: float = 5.0) -> bool:
    """Wait until nothing of the task's supervisor writes into `task_dir` any more; False on timeout.

    Why: the supervisor outlives its task by the moment it takes to record exit.json (and it outlives the
    agent), so whoever deletes a task directory, or the data directory holding it, waits for this first;
    otherwise that last write races the delete ("Directory not empty").
    """
    deadline = time.monotonic() + timeout_s
    while supervisor_running(task_dir):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class _Spawner:
    """The fork-server process; restarted transparently if it dies."""

    def __init__(self, python: str) -> None:
        self._python = python
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def _ensure(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [self._python, "-I", "-S", _SPAWNER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                close_fds=True,
                start_new_session=True,  # a Ctrl-C meant for the agent must not reach the spawner
            )
        return self._proc

    def request(self, req: dict[str, Any], started: Path) -> dict[str, Any]:
        with self._lock:
            for attempt in (1, 2):
                proc = self._ensure()
                assert proc.stdin is not None and proc.stdout is not None
                try:
                    proc.stdin.write(json.dumps(req).encode() + b"\n")
                    proc.stdin.flush()
                    line = proc.stdout.readline()
                except BrokenPipeError:
                    line = b""
                if line:
                    reply: dict[str, Any] = json.loads(line)
                    return reply
                log.warning("task spawner died (attempt %d); restarting it", attempt)
                self._stop_locked()
                if started.exists():  # the task did start before the spawner went away
                    pids = _read_json(started) or {}
                    return {"pid": pids.get("pid"), "supervisor_pid": pids.get("supervisor_pid")}
            return {"error": "the agent's task spawner keeps failing"}

    def _stop_locked(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.close()
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def stop(self) -> None:
        with self._lock:
            self._stop_locked()


class ProcessRuntime:
    """Runtime for host processes with kernel-enforced cgroup limits (v1 or v2, detected)."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        agent_id: str,
        cgroup_root: str | os.PathLike[str] = "/sys/fs/cgroup",
        monitor: PsutilMonitor | None = None,
        python: str = sys.executable,
        task_uid_base: int = TASK_UID_BASE,
        host_images: frozenset[str] = HOST_IMAGES,
    ) -> None:
        self.task_uid_base = task_uid_base
        self.host_images = host_images
        self.agent_id = cgroups.validate_id(agent_id, "agent id")
        self.data_dir = Path(data_dir)
        self.tasks_dir = self.data_dir / "tasks"
        self.tasks_dir.mkdir(parents=True, exist_ok=True)
        self.cgroups = cgroups.detect(cgroup_root)
        self.monitor = monitor or PsutilMonitor()
        self._spawner = _Spawner(python)
        self._results: dict[str, ExitStatus] = {}
        self._cpu_samples: dict[str, tuple[float, int]] = {}  # task id -> (wall time, cpu ns)
        self._pids_of: dict[str, list[int]] = {}  # pids seen at the last usage sample
        self._groups: dict[str, cgroups.TaskCgroup] = {}  # built once: path building dominated sampling
        self._kill_heap: list[tuple[float, str]] = []
        self._armed: set[str] = set()
        self._cond = threading.Condition()
        self._closed = False
        self._killer = threading.Thread(target=self._killer_loop, name="titus-runtime-killer", daemon=True)
        self._killer.start()

    # --- paths -------------------------------------------------------------------------------------------

    def _task_dir(self, task_id: str) -> Path:
        return self.tasks_dir / cgroups.validate_id(task_id, "task id")

    def _group(self, task_id: str) -> cgroups.TaskCgroup:
        group = self._groups.get(task_id)
        if group is None:
            group = self._groups[task_id] = self.cgroups.task_group(self.agent_id, task_id)
        return group

    # --- Runtime -----------------------------------------------------------------------------------------

    def start(self, spec: TaskSpec) -> None:
        task_dir = self._task_dir(spec.task_id)
        self._check_spec(spec)
        if (task_dir / "pids.json").exists():
            raise LaunchError(f"task {spec.task_id} was already started on this agent")
        task_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(task_dir, self.task_dir_mode)
        _write_json_atomic(
            task_dir / "spec.json",
            {"task_id": spec.task_id, "job_id": spec.job_id, "argv": spec.argv, "cpu": spec.cpu,
             "memory_mb": spec.memory_mb, "pids_limit": spec.pids_limit, "disk_mb": spec.disk_mb},
        )
        group = self._group(spec.task_id)
        start_cpu = max(spec.cpu, START_CPU)
        try:
            group.create(cgroups.Limits(cpu=spec.cpu, memory_mb=spec.memory_mb, pids=spec.pids_limit))
            if start_cpu != spec.cpu:
                group.set_cpu_quota(start_cpu)
        except (cgroups.CgroupError, OSError) as e:
            self._launch_failed(spec.task_id, group, f"cannot set up resource limits: {e}")
        try:
            launch = self._prepare(spec, task_dir)
        except LaunchError as e:
            self._release(spec.task_id)
            self._launch_failed(spec.task_id, group, str(e))
        req = {
            **launch,
            "stdout": str(task_dir / "stdout"),
            "stderr": str(task_dir / "stderr"),
            "procs_files": [str(p) for p in group.procs_files],
            "kill_procs": str(group.procs_files[0]),
            "task_dir": str(task_dir),
        }
        reply = self._spawner.request(req, task_dir / "pids.json")
        if "error" in reply:
            self._release(spec.task_id)
            self._launch_failed(spec.task_id, group, str(reply["error"]))
        if start_cpu != spec.cpu:
            try:
                group.set_cpu_quota(spec.cpu)  # the task's own quota, from now on
            except (cgroups.CgroupError, OSError) as e:
                self.kill(spec.task_id, 0)  # never left running above its quota
                raise LaunchError(f"cannot set the task's CPU quota: {e}") from e

    # --- hooks for runtimes built on this one (the OCI runtime) --------------------------------------

    #: The task's uid reaches its own work dir inside; nothing else in the task directory is its.
    task_dir_mode = 0o711

    def _check_spec(self, spec: TaskSpec) -> None:
        """Refuse what this runtime cannot honour, before anything is created. The process runtime runs
        the task on the host: it cannot run an image, so it accepts only the images named host images."""
        if not spec.argv:
            raise LaunchError(
                "nothing to run: the process runtime has no image whose ENTRYPOINT/CMD could stand in for "
                "an empty entryPoint and command; give one, or use the oci runtime")
        name = spec.image.split("@", 1)[0].rsplit(":", 1)[0] if spec.image else ""
        if spec.image and spec.image not in self.host_images and name not in self.host_images:
            raise LaunchError(
                f"the process runtime runs tasks on the host and cannot run image {spec.image!r}; "
                f"use the oci runtime, or name one of the host images {sorted(self.host_images)}")

    def _prepare(self, spec: TaskSpec, task_dir: Path) -> dict[str, Any]:
        """What the spawner runs: argv, env, cwd and the uid/gid to run it as."""
        work = self._disk_dir(spec.task_id)
        work.mkdir(exist_ok=True)
        uid = self.task_uid(spec.task_id)
        try:
            mounts.mount_tmpfs(work, spec.disk_mb, mode=0o700)
            os.chown(work, uid, uid)
        except OSError as e:
            raise LaunchError(f"cannot set up the task's disk: {e}") from e
        # The agent's own environment (tokens!) is never inherited; tasks get a clean one.
        env = {"PATH": DEFAULT_PATH, "HOME": str(work), **task_identity(spec), **spec.env}
        return {"argv": spec.argv, "env": env, "cwd": str(work), "uid": uid, "gid": uid}

    def task_uid(self, task_id: str) -> int:
        """A host uid of the task's own, so tasks cannot signal or ptrace one another (a hash of the
        id in a range of 100,000: a collision needs two tasks with clashing hashes on one host at once)."""
        digest = hashlib.sha256(task_id.encode()).digest()
        return self.task_uid_base + int.from_bytes(digest[:4], "big") % TASK_UID_RANGE

    def _release(self, task_id: str) -> None:
        """Undo _prepare's host resources (mounts, container state); logs stay."""
        mounts.release(self._disk_dir(task_id), task_id)

    def _signal(self, pid: int, sig: int) -> None:
        os.killpg(pid, sig)  # the task leads its own process group

    def _launch_failed(self, task_id: str, group: cgroups.TaskCgroup, message: str) -> NoReturn:
        """Record the failure so poll() reports it too (a restarted agent sees it), then raise."""
        self._remove_group(group)
        self._store(task_id, ExitStatus(exit_code=None, reason="failed", message=message))
        raise LaunchError(message)

    def poll(self, task_id: str) -> ExitStatus | None:
        """None while running. Raises KeyError for a task this agent never started."""
        cached = self._results.get(task_id)
        if cached is not None:
            return cached
        task_dir = self._task_dir(task_id)
        stored = _read_json(task_dir / "result.json")
        if stored is not None:
            status = ExitStatus(**stored)
            self._results[task_id] = status
            return status
        pids = _read_json(task_dir / "pids.json")
        if pids is None:
            group = self._group(task_id)
            if (task_dir / "spec.json").exists() or (task_dir.exists() and not group.exists()):
                return None  # start() is between creating the task directory and the supervisor's report
            if not group.exists():
                raise KeyError(task_id)
            # Processes in this agent's cgroup layout that this runtime never started (an orphan).
            if group.pids():
                return None
            task_dir.mkdir(parents=True, exist_ok=True)
            killed = (task_dir / "kill.json").exists()
            return self._store(task_id, ExitStatus(
                exit_code=None, reason="killed" if killed else "crashed",
                message="a task this agent did not start (found in its cgroups) " + (
                    "was killed" if killed else "ended")))
        exit_info = _read_json(task_dir / "exit.json")
        if exit_info is None:
            if _alive(pids.get("supervisor_pid"), pids.get("supervisor_start")):
                return None
            exit_info = _read_json(task_dir / "exit.json")  # it may have written it as it went away
            if exit_info is None:
                group = self._group(task_id)
                if group.pids():
                    return None  # orphaned but running; kill() still works through the cgroup
                return self._store(task_id, ExitStatus(
                    exit_code=None, reason="crashed",
                    message="the task's supervisor ended without recording an exit status"))
        return self._store(task_id, self._classify(task_id, exit_info))

    def _classify_exit(self, task_id: str, exit_info: dict[str, Any]) -> ExitStatus:
        task_dir = self._task_dir(task_id)
        code: int = exit_info["exit_code"]
        signum: int | None = exit_info.get("signal")
        group = self._group(task_id)
        oom_kills = group.stats().oom_kills if group.exists() else 0
        how = f"killed by {_signal_name(signum)}" if signum else f"exited with code {code}"
        if oom_kills and code != 0:
            spec = _read_json(task_dir / "spec.json") or {}
            return ExitStatus(
                exit_code=code, reason="failed", oom_killed=True,
                message=f"out of memory: the kernel killed {oom_kills} process(es) of the task at its "
                        f"memory limit of {spec.get('memory_mb', '?')} MB ({how})")
        kill = _read_json(task_dir / "kill.json")
        if kill is not None:
            return ExitStatus(exit_code=code, reason="killed", message=f"killed on request; {how}")
        if code == 0:
            return ExitStatus(exit_code=0, reason="normal", message="exited with code 0")
        return ExitStatus(exit_code=code, reason="failed", message=how)

    def _store(self, task_id: str, status: ExitStatus) -> ExitStatus:
        _write_json_atomic(self._task_dir(task_id) / "result.json", {
            "exit_code": status.exit_code, "reason": status.reason, "message": status.message,
            "oom_killed": status.oom_killed})
        self._results[task_id] = status
        return status

    def kill(self, task_id: str, grace_s: float) -> None:
        task_dir = self._task_dir(task_id)
        if self.poll(task_id) is not None:
            return
        task_dir.mkdir(parents=True, exist_ok=True)  # an orphan has no task directory of ours
        kill_file = task_dir / "kill.json"
        kill = _read_json(kill_file)
        if kill is None:
            kill = {"requested_at": time.time(), "grace_s": max(0.0, grace_s)}
            _write_json_atomic(kill_file, kill)
        pids = _read_json(task_dir / "pids.json") or {}
        pid = pids.get("pid")
        if pid is not None and _alive(pid, pids.get("pid_start")):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                self._signal(pid, signal.SIGTERM)
        self._arm(task_id, kill["requested_at"] + kill["grace_s"])

    def cleanup(self, task_id: str) -> None:
        task_dir = self._task_dir(task_id)  # validates
        self._release(task_id)
        self._remove_group(self._group(task_id))
        # The task's processes are gone; its supervisor may still be recording how it ended. Return only once
        # it is done, so that a caller may delete the task's directory (or the data directory) right after.
        if not wait_for_supervisor(task_dir):
            log.warning("the supervisor of task %s still runs 5 s after its task was killed", task_id)
        self._cpu_samples.pop(task_id, None)
        self._groups.pop(task_id, None)
        self.monitor.forget(self._pids_of.pop(task_id, ()))

    def logs(self, task_id: str, stream: str, tail_bytes: int = 65536) -> bytes:
        if stream not in _STREAMS:
            raise ValueError(f"stream must be one of {_STREAMS}, not {stream!r}")
        path = self._task_dir(task_id) / stream
        try:
            with open(path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - max(0, tail_bytes)))
                return f.read()
        except FileNotFoundError:
            return b""

    def log_path(self, task_id: str, stream: str) -> Path | None:
        if stream not in _STREAMS:
            raise ValueError(f"stream must be one of {_STREAMS}, not {stream!r}")
        return self._task_dir(task_id) / stream

    def list_tasks(self) -> list[str]:
        """Every task holding a cgroup of this agent: running, or ended and not yet cleaned up (its end
        not yet acknowledged by the master), including processes put into the layout by someone else."""
        return self.cgroups.list_tasks(self.agent_id)

    def list_running(self) -> list[str]:
        running = []
        for task_id in self.cgroups.list_tasks(self.agent_id):
            task_dir = self._task_dir(task_id)
            if (task_dir / "exit.json").exists() or (task_dir / "result.json").exists():
                continue
            pids = _read_json(task_dir / "pids.json") or {}
            supervised = _alive(pids.get("supervisor_pid"), pids.get("supervisor_start"))
            if supervised or self._group(task_id).pids():
                running.append(task_id)
                kill = _read_json(task_dir / "kill.json")
                if kill is not None:  # a kill requested before a restart still escalates on time
                    self._arm(task_id, kill["requested_at"] + kill["grace_s"])
        return running

    # --- the disk limit (a tmpfs of diskMB holds the task's writable files) ---

    def _disk_dir(self, task_id: str) -> Path:
        return self._task_dir(task_id) / "work"

    def _disk_full(self, task_id: str) -> bool:
        disk = self._disk_dir(task_id)
        try:
            st = os.statvfs(disk)
        except OSError:
            return False
        return os.path.ismount(disk) and st.f_bavail == 0

    def usage(self, task_id: str) -> Usage | None:
        """Also the disk check: a full writable layer ends the task (the agent samples every second)."""
        sample = self._cgroup_usage(task_id)
        if sample is not None and self._disk_full(task_id):
            task_dir = self._task_dir(task_id)
            spec = _read_json(task_dir / "spec.json") or {}
            if not (task_dir / "disk_full.json").exists():
                log.warning("task %s filled its disk limit of %s MB: killing it", task_id,
                            spec.get("disk_mb"))
                _write_json_atomic(task_dir / "disk_full.json", {"disk_mb": spec.get("disk_mb")})
                self._group(task_id).kill_all()
        return sample

    def _classify(self, task_id: str, exit_info: dict[str, Any]) -> ExitStatus:
        full = _read_json(self._task_dir(task_id) / "disk_full.json")
        if full is not None:
            return ExitStatus(exit_code=exit_info.get("exit_code"), reason="failed",
                              message=f"disk limit exceeded: the task filled its {full.get('disk_mb')} MB "
                                      "writable layer and was killed")
        return self._classify_exit(task_id, exit_info)

    def _cgroup_usage(self, task_id: str) -> Usage | None:
        group = self._group(task_id)
        pids = group.pids()
        if not pids:
            return None
        now = time.time()
        cpu_ns = group.cpu_ns()
        previous = self._cpu_samples.get(task_id)
        if previous is None:
            started = (_read_json(self._task_dir(task_id) / "pids.json") or {}).get("started_at", now)
            previous = (float(started), 0)
        self._cpu_samples[task_id] = (now, cpu_ns)
        elapsed = now - previous[0]
        cpu_pct = 100.0 * (cpu_ns - previous[1]) / 1e9 / elapsed if elapsed > 0 else 0.0
        self.monitor.forget(set(self._pids_of.get(task_id, ())) - set(pids))
        self._pids_of[task_id] = pids
        procs = self.monitor.processes(pids)
        return Usage(cpu_pct=max(0.0, cpu_pct), rss_mb=procs.rss_bytes / 2**20, processes=procs.processes)

    # --- extras for the agent ----------------------------------------------------------------------------

    def host_usage(self) -> HostStats:
        return self.monitor.host()

    def spawner_pid(self) -> int | None:
        """The fork server's pid (None until the first start); operators and tests use it."""
        return self._spawner.pid

    def supervisor_pid(self, task_id: str) -> int | None:
        pids = _read_json(self._task_dir(task_id) / "pids.json") or {}
        value = pids.get("supervisor_pid")
        return int(value) if value is not None else None

    def close(self) -> None:
        """Stop the spawner and the timer thread. Running tasks keep running (a new runtime adopts them)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._killer.join(timeout=5)
        self._spawner.stop()

    # --- internals ---------------------------------------------------------------------------------------

    def _remove_group(self, group: cgroups.TaskCgroup) -> None:
        if not group.exists():
            return
        if not group.kill_all():
            raise cgroups.CgroupError(f"processes of {group.procs_files[0].parent} would not die")
        group.remove()

    def _arm(self, task_id: str, deadline: float) -> None:
        with self._cond:
            if task_id in self._armed:
                return
            self._armed.add(task_id)
            heapq.heappush(self._kill_heap, (deadline, task_id))
            self._cond.notify_all()

    def _killer_loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._kill_heap or self._kill_heap[0][0] > time.time()):
                    timeout = self._kill_heap[0][0] - time.time() if self._kill_heap else None
                    self._cond.wait(timeout)
                if self._closed:
                    return
                _, task_id = heapq.heappop(self._kill_heap)
                self._armed.discard(task_id)
            try:
                if not (self._task_dir(task_id) / "exit.json").exists():
                    self._group(task_id).kill_all()
            except Exception:  # one bad task must not stop the escalation of the others
                log.exception("SIGKILL escalation failed for task %s", task_id)


_IMPLEMENTS_RUNTIME: type[Runtime] = ProcessRuntime  # mypy checks the Protocol here, not at the call sites
