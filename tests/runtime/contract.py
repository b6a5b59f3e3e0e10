"""Behavioural contract every Runtime must pass (process runtime now, Docker runtime later).

A test module subclasses RuntimeContract and provides two fixtures: `runtime` (a Runtime) and
`new_runtime` (a callable returning a fresh Runtime on the same host state, as after an agent restart).
Commands use only POSIX sh, head, tr and sleep, so a busybox image can run the same suite.
Every task started through `start` is killed and cleaned up at teardown, even when the test fails.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from agent.runtime.base import ExitStatus, LaunchError, Runtime, TaskSpec, Usage

WAIT_S = 20.0


def wait_for(condition: Callable[[], Any], timeout_s: float = WAIT_S, what: str = "condition") -> Any:
    """Poll until condition() returns something truthy; fail with `what` after a generous timeout."""
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def wait_exit(runtime: Runtime, task_id: str) -> ExitStatus:
    status: ExitStatus = wait_for(lambda: runtime.poll(task_id), what=f"task {task_id} to end")
    return status


class RuntimeContract:
    #: Processes a runtime adds to every task (Docker's tini as PID 1); counted in usage, not the task's own.
    init_processes = 0
    #: The image every contract task names: the process runtime's host image, or the registry's busybox.
    image = "busybox:latest"

    @pytest.fixture
    def start(self, runtime: Runtime) -> Iterator[Callable[..., str]]:
        started: list[str] = []

        def _start(*argv: str, **overrides: Any) -> str:
            task_id = overrides.pop("task_id", f"task-{uuid.uuid4().hex[:12]}")
            spec = TaskSpec(task_id=task_id, job_id="job-contract", image=self.image,
                            entry_point=("sh", "-c"), command=argv, **overrides)
            started.append(task_id)
            runtime.start(spec)
            return task_id

        yield _start
        for task_id in started:
            with contextlib.suppress(KeyError, LaunchError):
                runtime.kill(task_id, 0)
        for task_id in started:
            with contextlib.suppress(KeyError):
                runtime.cleanup(task_id)

    # --- exit codes and reasons ------------------------------------------------------------------------

    def test_exit_zero_is_normal(self, runtime: Runtime, start: Callable[..., str]) -> None:
        status = wait_exit(runtime, start("exit 0"))
        assert (status.exit_code, status.reason, status.oom_killed) == (0, "normal", False)

    @pytest.mark.parametrize("code", [1, 3, 42])
    def test_nonzero_exit_is_failed_with_its_code(
        self, runtime: Runtime, start: Callable[..., str], code: int
    ) -> None:
        status = wait_exit(runtime, start(f"exit {code}"))
        assert (status.exit_code, status.reason) == (code, "failed")
        assert str(code) in status.message

    def test_poll_is_idempotent_after_the_end(self, runtime: Runtime, start: Callable[..., str]) -> None:
        task_id = start("exit 5")
        first = wait_exit(runtime, task_id)
        assert runtime.poll(task_id) == first
        runtime.cleanup(task_id)
        assert runtime.poll(task_id) == first


    def test_unknown_program_fails_naming_it(self, runtime: Runtime) -> None:
        """Either start() refuses it (process runtime: exec fails before start returns) or the task ends
        failed at once (Docker: tini is PID 1 and reports the exec failure); both name the program."""
        task_id = f"task-{uuid.uuid4().hex[:12]}"
        spec = TaskSpec(task_id=task_id, job_id="job-contract", image=self.image,
                        command=("/no/such/program-titus",))
        try:
            runtime.start(spec)
        except LaunchError as exc:
            assert "program-titus" in str(exc)
        status = wait_exit(runtime, task_id)
        assert status.reason == "failed" and "program-titus" in status.message
        runtime.cleanup(task_id)

    def test_concurrent_starts_all_run(self, runtime: Runtime, start: Callable[..., str]) -> None:
        with ThreadPoolExecutor(max_workers=8) as pool:
            ids = list(pool.map(lambda i: start(f"echo {i}; exit {i % 2}"), range(16)))
        for i, task_id in enumerate(ids):
            assert wait_exit(runtime, task_id).exit_code == i % 2
            assert runtime.logs(task_id, "stdout") == f"{i}\n".encode()

    # --- argv, env, logs --------------------------------------------------------------------------------

    def test_argv_and_env_are_honoured(self, runtime: Runtime, start: Callable[..., str]) -> None:
        task_id = start('printf "%s|%s|%s|%s" "$0" "$1" "$GREETING" "$TITUS_TASK_ID"', "first arg",
                        "second", env={"GREETING": "hello world"})
        assert wait_exit(runtime, task_id).reason == "normal"
        assert runtime.logs(task_id, "stdout") == f"first arg|second|hello world|{task_id}".encode()

    def test_stdout_and_stderr_are_captured_separately(
        self, runtime: Runtime, start: Callable[..., str]
    ) -> None:
        task_id = start("echo to-out; echo to-err >&2; head -c 5000 /dev/zero | tr '\\0' x")
        wait_exit(runtime, task_id)
        assert runtime.logs(task_id, "stderr") == b"to-err\n"
        out = runtime.logs(task_id, "stdout")
        assert out.startswith(b"to-out\n") and len(out) == 7 + 5000
        assert runtime.logs(task_id, "stdout", tail_bytes=10) == b"x" * 10

    # --- kill ------------------------------------------------------------------------------------------

    def test_kill_sends_sigterm_first(self, runtime: Runtime, start: Callable[..., str]) -> None:
        task_id = start("trap 'echo got-term; exit 0' TERM; echo ready; while :; do sleep 0.05; done")
        wait_for(lambda: runtime.logs(task_id, "stdout") == b"ready\n", what="the trap to be installed")
        runtime.kill(task_id, grace_s=30)
        status = wait_exit(runtime, task_id)
        assert (status.reason, status.exit_code) == ("killed", 0)
        assert runtime.logs(task_id, "stdout") == b"ready\ngot-term\n"

    def test_kill_escalates_to_sigkill_when_sigterm_is_ignored(
        self, runtime: Runtime, start: Callable[..., str]
    ) -> None:
        task_id = start("trap '' TERM; echo ready; while :; do sleep 0.05; done")
        wait_for(lambda: runtime.logs(task_id, "stdout") == b"ready\n", what="the trap to be installed")
        runtime.kill(task_id, grace_s=1.0)
        # kill() returned without waiting out the grace period: the task still runs, ignoring SIGTERM.
        assert runtime.poll(task_id) is None
        status = wait_exit(runtime, task_id)
        assert (status.reason, status.exit_code) == ("killed", 137)
        assert "SIGKILL" in status.message

    # --- resource limits ----------------------------------------------------------------------------

    def test_memory_over_limit_is_killed_by_the_kernel(
        self, runtime: Runtime, start: Callable[..., str]
    ) -> None:
        # The shell keeps the whole 100 MB string in memory; the limit is 32 MB.
        task_id = start("x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived", memory_mb=32)
        status = wait_exit(runtime, task_id)
        assert status.reason == "failed"
        assert status.oom_killed
        assert "out of memory" in status.message
        assert b"survived" not in runtime.logs(task_id, "stdout")

    def test_memory_under_limit_is_not_an_oom(self, runtime: Runtime, start: Callable[..., str]) -> None:
        task_id = start("x=$(head -c 10000000 /dev/zero | tr '\\0' a); echo survived", memory_mb=128)
        status = wait_exit(runtime, task_id)
        assert (status.reason, status.oom_killed) == ("normal", False)

    def test_cpu_quota_holds_a_busy_loop(self, runtime: Runtime, start: Callable[..., str]) -> None:
        task_id = start("while :; do :; done", cpu=0.5)
        wait_for(lambda: runtime.usage(task_id), what="a first usage sample")
        time.sleep(2.0)  # the measurement window, not a wait for a condition
        usage: Usage | None = runtime.usage(task_id)
        assert usage is not None
        assert usage.cpu_pct <= 60.0
        assert usage.cpu_pct > 5.0  # it did run: the bound above is not met by a stalled task

    def test_fork_bomb_is_held_by_the_pids_limit(self, runtime: Runtime, start: Callable[..., str]) -> None:
        limit = 24
        bomb = start("(while :; do sleep 1000 & done) & exec sleep 1000", pids_limit=limit)
        # The loop forks until the kernel refuses (its shell then says so and stops). Waiting for that,
        # not for a process count: the refusal may come a few pids short of the limit (a fork in flight,
        # the dead loop left a zombie that counts against the limit but is no process any more), and a
        # count-based wait then waited for a limit the bomb had stopped trying to reach.
        # A generous wait: on a loaded 2-core machine the bomb's shell forks slowly (CI rehearsal: > 20 s).
        # busybox ash says "can't fork", dash "Cannot fork".
        wait_for(lambda: b"fork" in runtime.logs(bomb, "stderr").lower(), 60,
                 what="the kernel to refuse a fork")
        seen = runtime.usage(bomb)
        assert seen is not None and limit // 2 <= seen.processes <= limit, seen
        # The host, the agent (this process) and other tasks are unaffected.
        assert subprocess.run(["true"], check=False).returncode == 0
        other = start("echo alive")
        assert wait_exit(runtime, other).reason == "normal"
        assert runtime.logs(other, "stdout") == b"alive\n"
        later = runtime.usage(bomb)
        assert later is not None and later.processes <= limit
        runtime.kill(bomb, grace_s=0)
        assert wait_exit(runtime, bomb).reason == "killed"
        assert bomb not in runtime.list_running()
        assert runtime.usage(bomb) is None

    # --- usage, listing, cleanup, restart ------------------------------------------------------------

    def test_usage_counts_every_process_of_the_task(
        self, runtime: Runtime, start: Callable[..., str]
    ) -> None:
        task_id = start("sleep 300 & sleep 300 & sleep 300 & wait")
        usage = wait_for(lambda: (u := runtime.usage(task_id)) and u.processes >= 4 and u,
                         what="four processes")
        assert usage.processes - self.init_processes == 4
        assert 0 < usage.rss_mb < 64

    def test_list_running_shows_running_tasks_only(
        self, runtime: Runtime, start: Callable[..., str]
    ) -> None:
        running = start("sleep 300")
        ended = start("exit 0")
        wait_exit(runtime, ended)
        listed = runtime.list_running()
        assert running in listed
        assert ended not in listed

    def test_a_new_runtime_rediscovers_and_kills_a_running_task(
        self, runtime: Runtime, new_runtime: Callable[[], Runtime], start: Callable[..., str]
    ) -> None:
        task_id = start("echo up; sleep 300")
        wait_for(lambda: runtime.logs(task_id, "stdout") == b"up\n", what="the task to run")
        fresh = new_runtime()
        assert task_id in fresh.list_running()
        assert fresh.poll(task_id) is None
        fresh.kill(task_id, grace_s=5)
        status = wait_exit(fresh, task_id)
        assert status.reason == "killed"
        assert fresh.logs(task_id, "stdout") == b"up\n"
        fresh.cleanup(task_id)
        assert task_id not in fresh.list_running()
