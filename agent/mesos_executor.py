"""titus-executor: runs on a Mesos agent and starts our tasks with our agent's own runtimes.

Mesos starts one executor per task (see model.task_info). The task's `data` is the desired-set entry our
agents receive; the TaskSpec is built by the agent's own `_spec`, and the task runs under the agent's
`build_runtime` (ProcessRuntime with cgroup limits, or the Docker runtime): shared code, not a copy.
Updates: TASK_STARTING before the start, TASK_RUNNING once it runs, then TASK_FINISHED, TASK_FAILED
(an OOM kill says "out of memory" and carries REASON_CONTAINER_LIMITATION_MEMORY) or TASK_KILLED. The
terminal update's `data` carries the exit code and log tails, so they outlive the sandbox.

The module lives with the agent because it runs on agent hosts, not on masters; it imports no master code
beyond the Mesos wire model (master.mesos.model), which both halves of the adapter share.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from pymesos import Executor, MesosExecutorDriver

from agent.agent import _spec
from agent.main import build_runtime
from agent.runtime.base import ExitStatus, LaunchError, Runtime
from master.mesos import model

log = logging.getLogger("titus.executor")

_TAIL_BYTES = 16_384


def _terminal_state(status: ExitStatus) -> str:
    if status.reason == "normal":
        return "TASK_FINISHED"
    if status.reason == "killed":
        return "TASK_KILLED"
    return "TASK_FAILED"


class TitusExecutor(Executor):  # type: ignore[misc]
    """pymesos Executor callbacks (camelCase by pymesos's contract) over our Runtime protocol."""

    def __init__(self, runtime_name: str = "process", data_dir: Path | None = None, pids_limit: int = 1024,
                 poll_s: float = 0.2, runtime: Runtime | None = None) -> None:
        self.runtime_name = runtime_name
        self.data_dir = data_dir
        self.pids_limit = pids_limit
        self.poll_s = poll_s
        self.runtime: Runtime | None = runtime
        self.grace_s: dict[str, float] = {}
        self.threads: dict[str, threading.Thread] = {}
        self.done = threading.Event()  # set when the last task ended and its update went out
        self._lock = threading.Lock()

    # --- callbacks ---------------------------------------------------------------------------------------
    def registered(self, driver: Any, executor_info: dict[str, Any], framework_info: dict[str, Any],
                   agent_info: dict[str, Any]) -> None:
        agent_id = str(agent_info.get("id", {}).get("value", "mesos"))
        with self._lock:
            if self.runtime is None:
                sandbox = Path(os.environ.get("MESOS_SANDBOX", "."))
                self.runtime = build_runtime(self.runtime_name, self.data_dir or sandbox / "titus", agent_id)
        log.info("titus-executor registered on agent %s", agent_id)

    def reregistered(self, driver: Any, agent_info: dict[str, Any]) -> None:
        log.info("titus-executor re-registered")

    def disconnected(self, driver: Any) -> None:
        log.warning("titus-executor disconnected from its agent")

    def launchTask(self, driver: Any, task: dict[str, Any]) -> None:
        task_id = task["task_id"]["value"]
        thread = threading.Thread(target=self._run_task, args=(driver, task), name=f"task-{task_id}",
                                  daemon=True)
        with self._lock:
            self.threads[task_id] = thread
        thread.start()

    def killTask(self, driver: Any, task_id: dict[str, Any]) -> None:
        tid = task_id["value"]
        runtime = self.runtime
        if runtime is None:
            return
        try:
            runtime.kill(tid, self.grace_s.get(tid, 10.0))
        except KeyError:  # never started here: say so, or Mesos waits for an update forever
            self._update(driver, tid, "TASK_KILLED", "killed before it started")

    def frameworkMessage(self, driver: Any, message: str) -> None:
        pass

    def shutdown(self, driver: Any) -> None:
        runtime = self.runtime
        if runtime is None:
            return
        for tid in list(self.threads):
            try:
                runtime.kill(tid, min(self.grace_s.get(tid, 10.0), 3.0))
            except KeyError:
                continue
        for thread in list(self.threads.values()):
            thread.join(timeout=10)

    def error(self, driver: Any, message: str) -> None:
        log.error("Mesos agent reported an error: %s", message)

    # --- task life -----------------------------------------------------------------------------------------
    def _update(self, driver: Any, task_id: str, state: str, message: str,
                reason: str | None = None, data: dict[str, Any] | None = None) -> None:
        status: dict[str, Any] = {"task_id": {"value": task_id}, "state": state, "message": message}
        if reason:
            status["reason"] = reason
        if data:
            status["data"] = model.encode(data)
        driver.sendStatusUpdate(status)

    def _run_task(self, driver: Any, task: dict[str, Any]) -> None:
        task_id = task["task_id"]["value"]
        try:
            entry = model.decode(task["data"])
            spec = _spec(entry, self.pids_limit)
            self.grace_s[task_id] = float(entry.get("killGraceMs", 10_000)) / 1000
            runtime = self.runtime
            assert runtime is not None, "launchTask before registered"
            self._update(driver, task_id, "TASK_STARTING", "creating the task's cgroups and process")
            try:
                runtime.start(spec)
            except LaunchError as exc:
                self._update(driver, task_id, "TASK_FAILED", f"launch failed: {exc}")
                return
            self._update(driver, task_id, "TASK_RUNNING", "running")
            limit = entry.get("runtimeLimitSec")
            started = time.monotonic()
            while (status := runtime.poll(task_id)) is None:
                if limit and time.monotonic() - started > float(limit) + 60:
                    runtime.kill(task_id, self.grace_s[task_id])  # the master's limit, should it be cut off
                time.sleep(self.poll_s)
            data = {"exitCode": status.exit_code,
                    "stdoutTail": runtime.logs(task_id, "stdout", _TAIL_BYTES).decode(errors="replace"),
                    "stderrTail": runtime.logs(task_id, "stderr", _TAIL_BYTES).decode(errors="replace")}
            runtime.cleanup(task_id)
            reason = "REASON_CONTAINER_LIMITATION_MEMORY" if status.oom_killed else None
            self._update(driver, task_id, _terminal_state(status), status.message, reason, data)
        except Exception as exc:  # whatever happens, Mesos must hear how the task ended
            log.exception("task %s failed in the executor", task_id)
            self._update(driver, task_id, "TASK_FAILED", f"executor error: {exc}")
        finally:
            with self._lock:
                self.threads.pop(task_id, None)
                if not self.threads:
                    self.done.set()


def run_executor(runtime_name: str, data_dir: Path | None, pids_limit: int) -> None:
    """Run until the task ended (or Mesos shut the executor down).

    Exiting right after the terminal UPDATE is safe: the agent answered it with 202, and from then on the
    agent's status update manager (checkpointed) owns delivering it to the framework.
    """
    executor = TitusExecutor(runtime_name, data_dir, pids_limit)
    driver = MesosExecutorDriver(executor, use_addict=False)
    driver.start()
    executor.done.wait()
    driver.stop()
    driver.join()
