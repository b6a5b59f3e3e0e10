"""Self-fencing, opt-in per job: an agent out of touch with the masters stops the tasks of jobs that must
never run twice before the master replaces them.

By default nothing is fenced (DESIGN.md #9): when the masters are unreachable tasks keep running, the
master marks them Disconnected and replaces them only after the job's disconnected timeout, and a replaced
copy is killed when its agent returns. A job opts in with the container attribute
`titusParameter.agent.selfFence=true` (master/core/fault_policy.py; the desired set carries it as
`selfFence`), and `TITUS_SELF_FENCE=true` opts in every task of a host. For those tasks the master
replaces them as soon as it declares the agent lost (after `heartbeatTimeoutMs` without a report), so a
partitioned agent, or one that crashed while its tasks kept running, must stop them first. The agent holds
a *lease*: each report the master accepted
extends it to `sent + fence_after_s(timeout)`, counted from when the report was *sent*, which is no later
than when the master stamped the heartbeat. A lease that runs out means the master may be about to
replace our tasks; they are killed (SIGTERM, SIGKILL after a short grace) inside the margin left before
the master's own timeout. The overlap window is therefore empty as long as the kill finishes within the
margin and both clocks run at the same rate (only durations are compared; CLOCK_MONOTONIC here).

The lease is a file and the enforcer is a small watchdog process of its own (`python -m agent.fence`),
in its own session like the task supervisors, so the rule holds when the agent process itself is dead
(kill -9, crash) or hung, not only when it is partitioned. It kills only the tasks marked as fencing
(a file per task under `selffence/`, written before the task starts, so it survives agent restarts), and
runs only while there are such tasks. The agent also refuses to start a fencing task while its own lease
is out. The price, for those jobs only (as with Nomad's `stop_after_client_disconnect`): a master outage
longer than `fence_after_s` stops them.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.runtime.base import Runtime

log = logging.getLogger("titus.fence")

LEASE_FILE = "lease.json"
LOCK_FILE = "fence.lock"
FENCED_DIR = "fenced"
GUARDED_DIR = "selffence"  # one empty file per task that self-fences


def margin_s(heartbeat_timeout_s: float) -> float:
    """Time kept between our deadline and the master's: covers the kill grace, the watchdog's check
    interval and scheduling delays. A fixed share of the timeout, within sane bounds."""
    return min(max(0.3 * heartbeat_timeout_s, 0.5), 5.0)


def fence_after_s(heartbeat_timeout_s: float) -> float:
    return max(heartbeat_timeout_s - margin_s(heartbeat_timeout_s), 0.1)


def kill_grace_s(heartbeat_timeout_s: float) -> float:
    """SIGTERM-to-SIGKILL grace for fenced tasks: a third of the margin, so SIGKILL lands well inside it."""
    return margin_s(heartbeat_timeout_s) / 3


@dataclass(frozen=True)
class LeaseState:
    deadline: float  # CLOCK_MONOTONIC seconds (system-wide, so comparable across processes)
    grace_s: float
    silence_s: float = 0.0  # how long without contact the deadline stands for (for messages)
    released: bool = False

    def expired(self, now: float) -> bool:
        return not self.released and now > self.deadline


class Lease:
    """The lease file the agent renews and the watchdog reads."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LEASE_FILE

    def renew(self, deadline: float, grace_s: float, silence_s: float) -> None:
        self._write({"deadline": deadline, "grace_s": grace_s, "silence_s": silence_s, "released": False})

    def release(self) -> None:
        """The agent stopped its tasks itself and exits: nothing left to guard."""
        self._write({"deadline": 0.0, "grace_s": 0.0, "released": True})

    def read(self) -> LeaseState | None:
        try:
            raw: dict[str, Any] = json.loads(self.path.read_text())
            return LeaseState(float(raw["deadline"]), float(raw["grace_s"]), float(raw.get("silence_s", 0.0)),
                              bool(raw.get("released")))
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    def _write(self, value: dict[str, Any]) -> None:
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(value))
        os.replace(tmp, self.path)


def fenced_message(data_dir: Path, task_id: str) -> str | None:
    """Why the watchdog stopped this task, or None if it did not."""
    try:
        return (data_dir / FENCED_DIR / task_id).read_text()
    except (FileNotFoundError, OSError):
        return None


def forget_fenced(data_dir: Path, task_id: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        (data_dir / FENCED_DIR / task_id).unlink()


def guard(data_dir: Path, task_id: str) -> None:
    """Mark a task as self-fencing, before it starts (the watchdog kills only marked tasks)."""
    guarded = data_dir / GUARDED_DIR
    guarded.mkdir(parents=True, exist_ok=True)
    (guarded / task_id).touch()


def guarded(data_dir: Path) -> set[str]:
    try:
        return {p.name for p in (data_dir / GUARDED_DIR).iterdir()}
    except FileNotFoundError:
        return set()


def unguard(data_dir: Path, task_id: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        (data_dir / GUARDED_DIR / task_id).unlink()


def watchdog_running(data_dir: Path) -> bool:
    """True while some watchdog holds the lock for this data directory."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock we may have taken
    return False


def ensure_watchdog(data_dir: Path, agent_id: str, runtime: str) -> int | None:
    """Start the watchdog unless one runs; returns the new process's pid."""
    if watchdog_running(data_dir):
        return None
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.fence", "--data-dir", str(data_dir), "--agent-id", agent_id,
         "--runtime", runtime, "--agent-pid", str(os.getpid())],
        stdin=subprocess.DEVNULL, start_new_session=True, close_fds=True,
        env={k: v for k, v in os.environ.items() if "TOKEN" not in k})  # it needs no credentials
    return proc.pid


def watch(data_dir: Path, agent_id: str, runtime_name: str, agent_pid: int | None = None,
          interval_s: float = 0.1) -> None:
    """Kill the agent's self-fencing tasks whenever its lease is out. Exits when the lease is released, or
    when no fencing task is left to guard and the agent that started us is gone (a new agent starts a new
    watchdog when it needs one)."""
    from agent.main import build_runtime

    lock = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # another watchdog guards this agent
    lease = Lease(data_dir)
    runtime = build_runtime(runtime_name, data_dir, agent_id)
    fenced_dir = data_dir / FENCED_DIR
    fenced_dir.mkdir(exist_ok=True)
    try:
        while True:
            state = lease.read()
            if state is not None and state.released:
                return
            now = time.monotonic()
            if state is None or state.expired(now):
                marked = guarded(data_dir)
                running = [t for t in runtime.list_running() if t in marked] if marked else []
                if state is not None:
                    _fence(runtime, fenced_dir, state, running)
                if not running and not (agent_pid and Path(f"/proc/{agent_pid}").exists()):
                    return
            time.sleep(interval_s)
    finally:
        close = getattr(runtime, "close", None)
        if close is not None:
            close()
        os.close(lock)


def _fence(runtime: Runtime, fenced_dir: Path, state: LeaseState, running: list[str]) -> None:
    for task_id in running:
        marker = fenced_dir / task_id
        if marker.exists():
            continue
        marker.write_text(f"the agent had no contact with the master for {state.silence_s:.1f} s "
                          f"and stopped the task so that it cannot run twice (self-fencing)")
        log.warning("lease expired: killing %s", task_id)
        try:
            runtime.kill(task_id, state.grace_s)
        except Exception:
            log.exception("could not kill %s", task_id)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Titus agent self-fencing watchdog")
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--agent-id", required=True)
    parser.add_argument("--runtime", default="process")
    parser.add_argument("--agent-pid", type=int, default=None, help="Exit only once this process is gone.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s fence %(levelname)s %(message)s")
    watch(args.data_dir, args.agent_id, args.runtime, args.agent_pid)


if __name__ == "__main__":
    main()
