"""psutil adapter: per-process memory and process counts for tasks, and the host's memory and CPU.

The only module of the agent that imports psutil. Numbers come back as plain dataclasses so the agent's
decisions (for example "stop accepting work when the host is short of memory") stay pure functions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class ProcessStats:
    rss_bytes: int
    processes: int


@dataclass(frozen=True)
class HostStats:
    cpu_count: int
    cpu_pct: float  # whole host, percent of all cores, since the previous call
    memory_total_mb: float
    memory_available_mb: float  # what new work can use without swapping (MemAvailable)
    memory_used_mb: float


class PsutilMonitor:
    def __init__(self) -> None:
        # The first cpu_percent(None) call only sets the baseline; prime it so the next one means something.
        psutil.cpu_percent(interval=None)
        self._procs: dict[int, psutil.Process] = {}

    def processes(self, pids: Iterable[int]) -> ProcessStats:
        """Sum RSS over pids; pids that exit while we look are skipped, not errors.

        psutil.Process objects are cached: creating one reads /proc/<pid>/stat to pin the process
        identity, which doubled the cost of sampling 100 tasks every second.
        """
        rss = 0
        count = 0
        for pid in pids:
            try:
                proc = self._procs.get(pid)
                if proc is None:  # pids come from the task's cgroup, so a reused pid is still the task's
                    proc = self._procs[pid] = psutil.Process(pid)
                rss += proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                self._procs.pop(pid, None)
                continue
            count += 1
        return ProcessStats(rss_bytes=rss, processes=count)

    def forget(self, pids: Iterable[int]) -> None:
        """Drop cached process handles of pids that left a task."""
        for pid in pids:
            self._procs.pop(pid, None)

    def uss_bytes(self, pid: int) -> int | None:
        """Memory unique to one process (what killing it would free); for overhead measurements."""
        try:
            return int(psutil.Process(pid).memory_full_info().uss)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None

    def self_stats(self) -> tuple[float, float]:
        """CPU seconds (user+system) and RSS in MB of the calling process."""
        me = psutil.Process()
        times = me.cpu_times()
        return times.user + times.system, me.memory_info().rss / 2**20

    def host(self) -> HostStats:
        vm = psutil.virtual_memory()
        return HostStats(
            cpu_count=psutil.cpu_count() or 1,
            cpu_pct=psutil.cpu_percent(interval=None),
            memory_total_mb=vm.total / 2**20,
            memory_available_mb=vm.available / 2**20,
            memory_used_mb=vm.used / 2**20,
        )
