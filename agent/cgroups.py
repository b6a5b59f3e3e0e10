"""Kernel resource limits for one task, on cgroup v1 or cgroup v2, behind one small interface.

The process runtime relies on the kernel, not on polling, to enforce memory, CPU and process-count limits:
the kernel OOM-kills a task at its memory limit, throttles it at its CFS quota and refuses its forks at
pids.max. This module only creates, fills, reads and removes cgroup directories; it keeps no state beyond
paths, so a restarted agent finds its groups again simply by listing directories.

Layout: v1 uses one directory per controller, `<root>/<controller>/titus/<agent_id>/<task_id>`; v2 uses one
unified directory, `<root>/titus/<agent_id>/<task_id>`, with the controllers enabled on every ancestor.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

#: All groups created by any Titus agent live below this directory of the hierarchy.
TITUS_DIR = "titus"
#: CFS period; 100 ms is the kernel's default and what Docker uses.
CFS_PERIOD_US = 100_000
#: Identifiers used as directory names: letters, digits, `_` and `-`, starting with a letter or digit.
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids")
_V2_CONTROLLERS = ("cpu", "memory", "pids")


class CgroupError(Exception):
    """The cgroup hierarchy is missing, lacks a controller, or refused an operation."""


def validate_id(value: str, what: str = "id") -> str:
    """Refuse anything that could escape its directory ('..', '/', NUL) before it reaches a path."""
    if not _SAFE_ID.match(value):
        raise ValueError(f"{what} {value!r} is not a safe identifier (letters, digits, '_' and '-', max 128)")
    return value


@dataclass(frozen=True)
class Limits:
    cpu: float  # cores; becomes CFS quota = cpu x period, and proportional shares/weight
    memory_mb: int  # hard limit, swap included
    pids: int


@dataclass(frozen=True)
class CgroupStats:
    cpu_ns: int  # CPU time consumed by every process that ever ran in the group
    memory_bytes: int
    oom_kills: int  # processes the kernel OOM killer killed in this group
    pids: int


class TaskCgroup(Protocol):
    """The groups of one task, whatever the cgroup version."""

    @property
    def procs_files(self) -> list[Path]:
        """Files a process writes "0" to (or its pid) to join every group of the task."""

    def exists(self) -> bool: ...

    def create(self, limits: Limits) -> None: ...

    def add_pid(self, pid: int) -> None: ...

    def set_cpu_quota(self, cpu: float) -> None:
        """The CFS quota alone (shares/weight stay as created): the runtime lifts it while it starts a
        task and sets the task's own afterwards (agent/runtime/process.py START_CPU)."""
        ...

    def pids(self) -> list[int]: ...

    def stats(self) -> CgroupStats: ...

    def cpu_ns(self) -> int:
        """CPU time of the group alone: the cheap read for frequent usage sampling."""

    def kill_all(self, timeout_s: float = 5.0) -> bool:
        """SIGKILL every process in the group until it is empty; True once it is."""

    def remove(self, timeout_s: float = 5.0) -> None: ...


class CgroupHierarchy(Protocol):
    version: int

    def task_group(self, agent_id: str, task_id: str) -> TaskCgroup: ...

    def list_tasks(self, agent_id: str) -> list[str]: ...

    def remove_agent(self, agent_id: str) -> None:
        """Remove the agent's (empty) parent directories; tests and decommissioning use it."""


def detect(root: str | os.PathLike[str] = "/sys/fs/cgroup") -> CgroupHierarchy:
    """Pick v2 when `root` is a unified hierarchy (it has cgroup.controllers), v1 otherwise."""
    path = Path(root)
    if (path / "cgroup.controllers").is_file():
        return CgroupV2(path)
    if (path / "memory").is_dir():
        return CgroupV1(path)
    raise CgroupError(f"no cgroup hierarchy at {path}: neither cgroup.controllers nor a memory controller")


# --- small file helpers -------------------------------------------------------------------------------


def _write(path: Path, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as e:
        raise CgroupError(f"cannot write {value!r} to {path}: {e.strerror}") from e


def _read(path: Path) -> str:
    with open(path) as f:
        return f.read()


def _read_int(path: Path, default: int = 0) -> int:
    try:
        return int(_read(path).split()[0])
    except (OSError, ValueError, IndexError):
        return default


def _read_keyed(path: Path) -> dict[str, int]:
    """Parse `key value` lines (memory.oom_control, memory.events, cpu.stat)."""
    result: dict[str, int] = {}
    try:
        text = _read(path)
    except OSError:
        return result
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            result[parts[0]] = int(parts[1])
    return result


def _read_pids(path: Path) -> list[int]:
    try:
        return [int(x) for x in _read(path).split()]
    except FileNotFoundError:
        return []
    except OSError as e:
        if e.errno == errno.ENODEV:  # group being removed
            return []
        raise


def _kill_loop(procs: Path, pids_max: Path | None, timeout_s: float) -> bool:
    """SIGKILL until empty. Lowering pids.max to 0 first stops a fork bomb from outrunning the loop."""
    if pids_max is not None and pids_max.exists():
        with contextlib.suppress(CgroupError):
            _write(pids_max, "0")
    deadline = time.monotonic() + timeout_s
    delay = 0.001
    while True:
        pids = _read_pids(procs)
        if not pids:
            return True
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() >= deadline:
            return not _read_pids(procs)
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _rmdir_retry(path: Path, timeout_s: float) -> None:
    """rmdir of a cgroup fails with EBUSY for a moment after its last process died; retry briefly."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno not in (errno.EBUSY, errno.ENOTEMPTY) or time.monotonic() >= deadline:
                raise CgroupError(f"cannot remove {path}: {e.strerror}") from e
            time.sleep(0.01)


def _cpu_shares(cpu: float) -> int:
    return max(2, round(1024 * cpu))


def _cpu_weight(cpu: float) -> int:
    return min(10_000, max(1, round(100 * cpu)))


def _cpu_quota(cpu: float) -> int:
    return max(1000, round(cpu * CFS_PERIOD_US))


# --- cgroup v1 ----------------------------------------------------------------------------------------


class CgroupV1:
    """One hierarchy per controller. cpu and cpuacct are often the same mount; paths are deduplicated."""

    version = 1

    def __init__(self, root: Path) -> None:
        self.root = root
        missing = [c for c in _V1_CONTROLLERS if not (root / c).is_dir()]
        if missing:
            raise CgroupError(f"cgroup v1 at {root} lacks controllers: {', '.join(missing)}")
        # Co-mounted controllers (cpu,cpuacct) share one directory; join and remove it only once.
        seen: dict[str, str] = {}
        for c in _V1_CONTROLLERS:
            seen.setdefault(os.path.realpath(root / c), c)
        self._distinct = tuple(seen.values())

    def task_group(self, agent_id: str, task_id: str) -> CgroupV1Task:
        validate_id(agent_id, "agent id")
        validate_id(task_id, "task id")
        dirs = {c: self.root / c / TITUS_DIR / agent_id / task_id for c in _V1_CONTROLLERS}
        return CgroupV1Task(dirs, [dirs[c] for c in self._distinct])

    def list_tasks(self, agent_id: str) -> list[str]:
        validate_id(agent_id, "agent id")
        names: set[str] = set()
        for c in _V1_CONTROLLERS:
            parent = self.root / c / TITUS_DIR / agent_id
            if parent.is_dir():
                names.update(p.name for p in parent.iterdir() if p.is_dir() and _SAFE_ID.match(p.name))
        return sorted(names)

    def remove_agent(self, agent_id: str) -> None:
        validate_id(agent_id, "agent id")
        for c in _V1_CONTROLLERS:
            with contextlib.suppress(FileNotFoundError):
                (self.root / c / TITUS_DIR / agent_id).rmdir()


class CgroupV1Task:
    def __init__(self, dirs: dict[str, Path], distinct: list[Path]) -> None:
        self.dirs = dirs
        self._unique = distinct

    @property
    def procs_files(self) -> list[Path]:
        return [d / "cgroup.procs" for d in self._unique]

    def exists(self) -> bool:
        return any(d.is_dir() for d in self._unique)

    def create(self, limits: Limits) -> None:
        for d in self._unique:
            d.mkdir(parents=True, exist_ok=True)
        mem, cpu, pids = self.dirs["memory"], self.dirs["cpu"], self.dirs["pids"]
        limit = str(limits.memory_mb * 1024 * 1024)
        _write(mem / "memory.limit_in_bytes", limit)
        # memory+swap equal to memory means no swap at all; without swap accounting, discourage swapping.
        if (mem / "memory.memsw.limit_in_bytes").exists():
            _write(mem / "memory.memsw.limit_in_bytes", limit)
        else:
            with contextlib.suppress(CgroupError):
                _write(mem / "memory.swappiness", "0")
        _write(cpu / "cpu.cfs_period_us", str(CFS_PERIOD_US))
        _write(cpu / "cpu.cfs_quota_us", str(_cpu_quota(limits.cpu)))
        _write(cpu / "cpu.shares", str(_cpu_shares(limits.cpu)))
        _write(pids / "pids.max", str(limits.pids))

    def set_cpu_quota(self, cpu: float) -> None:
        _write(self.dirs["cpu"] / "cpu.cfs_quota_us", str(_cpu_quota(cpu)))

    def add_pid(self, pid: int) -> None:
        for f in self.procs_files:
            _write(f, str(pid))

    def pids(self) -> list[int]:
        return _read_pids(self.dirs["pids"] / "cgroup.procs")

    def stats(self) -> CgroupStats:
        mem = self.dirs["memory"]
        oom = _read_keyed(mem / "memory.oom_control")
        # Kernels before 4.13 lack the oom_kill counter; being under_oom is the best evidence there.
        oom_kills = oom["oom_kill"] if "oom_kill" in oom else int(oom.get("under_oom", 0) > 0)
        return CgroupStats(
            cpu_ns=_read_int(self.dirs["cpuacct"] / "cpuacct.usage"),
            memory_bytes=_read_int(mem / "memory.usage_in_bytes"),
            oom_kills=oom_kills,
            pids=len(self.pids()),
        )

    def cpu_ns(self) -> int:
        return _read_int(self.dirs["cpuacct"] / "cpuacct.usage")

    def kill_all(self, timeout_s: float = 5.0) -> bool:
        if not self.dirs["pids"].is_dir():
            return True
        return _kill_loop(self.dirs["pids"] / "cgroup.procs", self.dirs["pids"] / "pids.max", timeout_s)

    def remove(self, timeout_s: float = 5.0) -> None:
        for d in self._unique:
            _rmdir_retry(d, timeout_s)


# --- cgroup v2 ----------------------------------------------------------------------------------------


class CgroupV2:
    """Unified hierarchy: controllers must be enabled in cgroup.subtree_control of every ancestor."""

    version = 2

    def __init__(self, root: Path) -> None:
        self.root = root
        available = set(_read(root / "cgroup.controllers").split())
        missing = [c for c in _V2_CONTROLLERS if c not in available]
        if missing:
            raise CgroupError(f"cgroup v2 at {root} lacks controllers: {', '.join(missing)}")

    def task_group(self, agent_id: str, task_id: str) -> CgroupV2Task:
        validate_id(agent_id, "agent id")
        validate_id(task_id, "task id")
        return CgroupV2Task(self.root, self.root / TITUS_DIR / agent_id / task_id)

    def list_tasks(self, agent_id: str) -> list[str]:
        validate_id(agent_id, "agent id")
        parent = self.root / TITUS_DIR / agent_id
        if not parent.is_dir():
            return []
        return sorted(p.name for p in parent.iterdir() if p.is_dir() and _SAFE_ID.match(p.name))

    def remove_agent(self, agent_id: str) -> None:
        validate_id(agent_id, "agent id")
        with contextlib.suppress(FileNotFoundError):
            (self.root / TITUS_DIR / agent_id).rmdir()


class CgroupV2Task:
    def __init__(self, root: Path, path: Path) -> None:
        self.root = root
        self.path = path

    @property
    def procs_files(self) -> list[Path]:
        return [self.path / "cgroup.procs"]

    def exists(self) -> bool:
        return self.path.is_dir()

    def create(self, limits: Limits) -> None:
        # Enable the controllers from the root down to the agent's directory ("no internal processes":
        # only leaves hold processes, so the parents may delegate).
        enable = " ".join(f"+{c}" for c in _V2_CONTROLLERS)
        parent = self.root
        for part in self.path.relative_to(self.root).parts[:-1]:
            _write(parent / "cgroup.subtree_control", enable)
            parent = parent / part
            parent.mkdir(exist_ok=True)
        _write(parent / "cgroup.subtree_control", enable)
        self.path.mkdir(exist_ok=True)
        _write(self.path / "memory.max", str(limits.memory_mb * 1024 * 1024))
        try:
            _write(self.path / "memory.swap.max", "0")
        except CgroupError as e:
            log.warning("no swap limit for %s (swap accounting unavailable): %s", self.path, e)
        _write(self.path / "cpu.max", f"{_cpu_quota(limits.cpu)} {CFS_PERIOD_US}")
        _write(self.path / "cpu.weight", str(_cpu_weight(limits.cpu)))
        _write(self.path / "pids.max", str(limits.pids))

    def set_cpu_quota(self, cpu: float) -> None:
        _write(self.path / "cpu.max", f"{_cpu_quota(cpu)} {CFS_PERIOD_US}")

    def add_pid(self, pid: int) -> None:
        _write(self.path / "cgroup.procs", str(pid))

    def pids(self) -> list[int]:
        return _read_pids(self.path / "cgroup.procs")

    def stats(self) -> CgroupStats:
        events = _read_keyed(self.path / "memory.events")
        cpu = _read_keyed(self.path / "cpu.stat")
        return CgroupStats(
            cpu_ns=cpu.get("usage_usec", 0) * 1000,
            memory_bytes=_read_int(self.path / "memory.current"),
            oom_kills=events.get("oom_kill", 0),
            pids=len(self.pids()),
        )

    def cpu_ns(self) -> int:
        return _read_keyed(self.path / "cpu.stat").get("usage_usec", 0) * 1000

    def kill_all(self, timeout_s: float = 5.0) -> bool:
        if not self.path.is_dir():
            return True
        kill_file = self.path / "cgroup.kill"  # Linux 5.14+: the kernel kills the whole group atomically
        if kill_file.exists():
            with contextlib.suppress(CgroupError):
                _write(kill_file, "1")
        return _kill_loop(self.path / "cgroup.procs", self.path / "pids.max", timeout_s)

    def remove(self, timeout_s: float = 5.0) -> None:
        _rmdir_retry(self.path, timeout_s)
