"""Fork server and per-task supervisor for the process runtime. Runs as its own small process.

Why a separate process: each task gets a supervisor that outlives the agent, waits for the task and records
its exact exit status to a file, so a restarted agent still learns how a task ended. Starting that
supervisor as a fresh interpreter costs ~30 ms; forking it from this already-running, single-threaded
process costs a few ms, and the spawner forks the next supervisor right after each start, so a start
only pays for the fork+exec of the task itself. Forking from the agent directly would be unsafe: the agent
is multi-threaded, and a fork of a threaded process may inherit locks held by other threads.

Protocol: one JSON object per line on stdin, one JSON reply per line on stdout.
Request: {"argv", "env", "cwd", "stdout", "stderr", "procs_files", "kill_procs", "task_dir"}.
Reply: {"pid": <task pid>, "supervisor_pid": ...} or {"error": "<user-facing message>"}.

This file imports only the standard library: it runs as `python -I -S <this file>`.
"""

from __future__ import annotations

import contextlib
import ctypes  # here, not in the child: after setuid the interpreter's own files may be unreadable
import json
import os
import signal
import sys
import time
from typing import Any


def _proc_start(pid: int) -> int | None:
    """Start time of a pid in clock ticks since boot; with the pid it identifies a process uniquely."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return int(data[data.rindex(b")") + 2 :].split()[19])


def _write_json_atomic(path: str, value: dict[str, Any]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(value, f)  # no fsync: the files matter across agent restarts, not host reboots
    os.replace(tmp, path)


def _exec_child(req: dict[str, Any], out_fd: int, err_fd: int, errpipe: int) -> None:
    """In the forked child: join the cgroups, leave the supervisor's session, exec. Never returns."""
    try:
        # Joining before exec means no instruction of the user's program ever runs unconstrained.
        for path in req["procs_files"]:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, b"0")  # "0" moves the writing process itself
            finally:
                os.close(fd)
        os.setsid()  # own session and process group: kill() signals the group, never the supervisor
        if "gid" in req:  # drop root last: joining the cgroups above needed it
            os.setgroups([])
            os.setgid(req["gid"])
            os.setuid(req["uid"])
            _no_new_privs()  # a setuid binary cannot give the task back what it just gave up
        for sig in signal.valid_signals():
            with contextlib.suppress(OSError, ValueError):
                signal.signal(sig, signal.SIG_DFL)  # Python ignores SIGPIPE/SIGXFSZ; the task must not
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.chdir(req["cwd"])
        argv = req["argv"]
        os.execvpe(argv[0], argv, req["env"])
    except BaseException as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        msg = f"cannot execute {req['argv'][0]!r}: {reason}"
        try:
            os.write(errpipe, msg.encode(errors="replace"))
        finally:
            os._exit(127)


def _kill_leftovers(procs_file: str) -> None:
    """The task ends with its main process, as a container does: stragglers in its cgroup are killed."""
    for _ in range(1000):
        try:
            with open(procs_file) as f:
                pids = [int(x) for x in f.read().split()]
        except OSError:
            return
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.005)


def _detach(keep: tuple[int, ...]) -> None:
    """Make a fresh fork a supervisor: own session, no stray signals, none of the spawner's fds."""
    os.setsid()  # detached from the spawner and the agent: survives both
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the spawner ignores it; we must wait for our child
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 65536)


def _supervise(req: dict[str, Any], report: int) -> None:
    """In the forked supervisor: start the task, report, wait, record the exit status. Never returns."""
    log = os.open(os.path.join(req["task_dir"], "supervisor.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log, 2)
    os.close(log)

    if req.get("pid_file"):
        _set_subreaper()
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    out_fd = os.open(req["stdout"], flags, 0o640)
    err_fd = os.open(req["stderr"], flags, 0o640)
    err_r, err_w = os.pipe()  # close-on-exec: EOF without data means the exec succeeded
    pid = os.fork()
    if pid == 0:
        os.close(err_r)
        os.close(report)
        _exec_child(req, out_fd, err_fd, err_w)
    os.close(err_w)
    os.close(out_fd)
    os.close(err_fd)
    chunks = []
    while chunk := os.read(err_r, 4096):
        chunks.append(chunk)
    os.close(err_r)
    if chunks:
        os.waitpid(pid, 0)
        os.write(report, json.dumps({"error": b"".join(chunks).decode(errors="replace")}).encode())
        os._exit(0)

    waited = pid
    if req.get("pid_file"):
        # An OCI runtime (`runc run --detach`) creates the container and exits; the container's init
        # is reparented to us (the subreaper), so we wait for it as for a child of our own.
        _, status = os.waitpid(pid, 0)
        if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
            os.write(report, json.dumps({"error": _runtime_error(req)}).encode())
            os._exit(0)
        with open(req["pid_file"]) as f:
            waited = int(f.read().strip())

    me = os.getpid()
    _write_json_atomic(
        os.path.join(req["task_dir"], "pids.json"),
        {
            "pid": waited,
            "pid_start": _proc_start(waited),
            "supervisor_pid": me,
            "supervisor_start": _proc_start(me),
            "started_at": time.time(),
        },
    )
    os.write(report, json.dumps({"pid": waited, "supervisor_pid": me}).encode())
    os.close(report)

    while True:  # reap orphans the container leaves us until its init ends
        ended, status = os.waitpid(-1, 0)
        if ended == waited:
            break
    _kill_leftovers(req["kill_procs"])
    result: dict[str, Any] = {"ended_at": time.time()}
    if os.WIFSIGNALED(status):
        result["signal"] = os.WTERMSIG(status)
        result["exit_code"] = 128 + os.WTERMSIG(status)
    else:
        result["signal"] = None
        result["exit_code"] = os.WEXITSTATUS(status)
    _write_json_atomic(os.path.join(req["task_dir"], "exit.json"), result)
    os._exit(0)


def _runtime_error(req: dict[str, Any]) -> str:
    """The OCI runtime's own last error (its JSON log), as the user-facing reason the task did not start."""
    message = "the container runtime failed to start the task"
    try:
        with open(req["runtime_log"]) as f:
            lines = f.readlines()[-50:]
    except (KeyError, OSError):
        return message
    for line in lines:
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("level") in ("error", "fatal") and entry.get("msg"):
                message = str(entry["msg"])
    return message


def _no_new_privs() -> None:
    if ctypes.CDLL(None, use_errno=True).prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS failed")


def _set_subreaper() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


class _Spare:
    """A supervisor forked ahead of time, waiting for its request: keeps a fork off the start path."""

    def __init__(self) -> None:
        req_r, self.req_w = os.pipe()
        self.report_r, report_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(self.req_w)
                os.close(self.report_r)
                _detach(keep=(req_r, report_w))
                data = _read_all(req_r)
                if data:  # empty: the spawner went away without using us
                    _supervise(json.loads(data), report_w)
            finally:
                os._exit(0)
        os.close(req_r)
        os.close(report_w)

    def run(self, req: dict[str, Any]) -> dict[str, Any]:
        view = memoryview(json.dumps(req).encode())
        try:
            while view:
                view = view[os.write(self.req_w, view) :]
        finally:
            os.close(self.req_w)
        data = _read_all(self.report_r)
        if not data:
            return {"error": "task supervisor died before starting the task"}
        reply: dict[str, Any] = json.loads(data)
        return reply


def main() -> None:
    # Supervisors are reaped by the kernel; nothing here waits for them.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the agent's to handle
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    spare = _Spare()
    while line := stdin.readline():
        try:
            reply = spare.run(json.loads(line))
        except Exception as e:
            reply = {"error": f"spawner: {e}"}
        stdout.write(json.dumps(reply).encode() + b"\n")
        stdout.flush()
        spare = _Spare()  # after the reply: the next start finds it ready

if __name__ == "__main__":
    main()
