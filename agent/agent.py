"""The agent: converges the host to the master's desired set of tasks and reports what it runs.

Three loops, all driven by requests the agent makes: a long poll for the desired set, a reporter that
sends state changes (at once) and a heartbeat with usage (every second), and the convergence step that
starts what is missing and kills what is no longer wanted. A lost message costs one poll, never a task;
after either side restarts, reconciliation is this same code path (DESIGN.md #1).
"""

from __future__ import annotations

import base64
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import fence, task_logs
from agent.master_client import MasterClient, MasterUnavailable, SessionExpired
from agent.runtime.base import ExitStatus, LaunchError, Runtime, TaskSpec
from agent.task_logs import LogChunk

log = logging.getLogger("titus.agent")

MAX_LOG_READS = 64  # log reads answered at once (each a thread; a follow waits in one)
MAX_LOG_CHUNK = 1 << 20  # bytes per answer, as the master's route caps it
CLUSTER_FILE = "cluster-id"  # in the data dir: the cluster this agent joined


@dataclass
class AgentConfig:
    agent_id: str
    cpu: float
    memory_mb: int
    disk_mb: int
    network_mbps: int
    attributes: dict[str, str] = field(default_factory=dict)
    gpu: int = 0  # GPUs this host offers (TITUS_AGENT_GPUS); the master places gpu requests on them
    unknown_task_grace_s: float = 5.0
    poll_wait_ms: int = 20_000
    report_interval_s: float = 1.0
    kill_tasks_on_exit: bool = False
    log_tail_bytes: int = 16_384
    log_max_bytes: int = 64 << 20  # disk bound of one task's stdout + stderr (TITUS_TASK_LOG_MAX_MB); rotated
    pids_limit: int = 1024  # per task; Titus's job spec has no pids field, so the host sets one
    self_fence: bool = False  # every task self-fences, not only those of jobs that ask (agent/fence.py)
    min_available_memory_mb: int = 256  # below this much available host memory, take no new work
    scan_interval_s: float = 2.0  # how often to look for tasks in our layout that we do not know


@dataclass
class LocalTask:
    spec: TaskSpec | None  # None for tasks rediscovered after a restart
    reported: str = ""  # last state the master acknowledged
    finished: ExitStatus | None = None
    killing: bool = False
    starting: bool = False
    self_fence: bool = False  # its job opted in: it may not run past the lease (agent/fence.py)
    # Why the agent itself stopped it (reason code, message), reported instead of the runtime's "killed":
    # only a user's kill is `killed` (docs/ARCHITECTURE.md, reasons table).
    stopped_by_agent: tuple[str, str] | None = None


class Agent:
    def __init__(self, config: AgentConfig, runtime: Runtime, client: MasterClient,
                 host_stats: Any = None, data_dir: Path | None = None, runtime_name: str = "process") -> None:
        self.config = config
        self.runtime = runtime
        self.client = client
        self.host_stats = host_stats  # callable returning a dict of host figures, or None
        self.data_dir = data_dir  # holds the lease and the fencing markers; None: no self-fencing
        self.runtime_name = runtime_name
        # The lease is kept whenever there is a data dir; only self-fencing tasks are bound by it.
        self.lease = fence.Lease(data_dir) if data_dir is not None else None
        # Monotonic time until which we may start self-fencing tasks. Infinite without a lease.
        self.lease_deadline = 0.0 if self.lease is not None else math.inf
        self.heartbeat_timeout_s = 15.0
        self.register_lock = threading.Lock()
        self.done: OrderedDict[str, None] = OrderedDict()  # ids whose end the master acknowledged
        self.last_wanted: set[str] | None = None
        self.last_scan = 0.0
        self.lock = threading.Lock()
        self.log_reads: set[str] = set()  # log reads of the master being answered (their request ids)
        self.log_archive: task_logs.LogArchiveWriter | None = None  # S3 for finished tasks' logs, if any
        self.tasks: dict[str, LocalTask] = {}
        self.updates: list[dict[str, Any]] = []
        self.wake_reporter = threading.Event()
        self.stopping = threading.Event()
        self.session = 0
        self.version = -1
        self.unknown_since: dict[str, float] = {}
        self.launcher = ThreadPoolExecutor(max_workers=16, thread_name_prefix="launch")
        self.threads: list[threading.Thread] = []
        self.cluster_refusal = ""  # set while the only master that answers is of another cluster
        self.reports_sent = 0  # reports the master accepted (agent/metrics.py)
        self.last_report_at = 0.0  # time.monotonic() of the last one

    # ================================================================================== lifecycle
    def start(self) -> None:
        # Everything the runtime still holds: running tasks are adopted, ended ones are reported with
        # their real exit status (their supervisor recorded it while we were away).
        for task_id in self.runtime.list_tasks():
            try:
                status = self.runtime.poll(task_id)
            except KeyError:
                continue
            self.tasks[task_id] = LocalTask(spec=None, reported="Started", finished=status)
        self._ensure_watchdog()
        self.register()
        self.threads = [threading.Thread(target=self._poll_loop, name="poll", daemon=True),
                        threading.Thread(target=self._report_loop, name="report", daemon=True)]
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.stopping.set()
        self.wake_reporter.set()
        if self.config.kill_tasks_on_exit:
            with self.lock:
                ids = [tid for tid, t in self.tasks.items() if t.finished is None]
                for task_id in ids:
                    self.tasks[task_id].stopped_by_agent = (
                        "transientSystemError", "the agent shut down and stopped its tasks")
            for task_id in ids:
                self.runtime.kill(task_id, 2.0)
            deadline = time.monotonic() + 5
            while ids and time.monotonic() < deadline:
                ids = [tid for tid in ids if self.runtime.poll(tid) is None]
                time.sleep(0.05)
            try:
                self._report_once()  # best effort: tell the master how they ended
            except Exception as exc:
                log.warning("final report failed: %s", exc)
            with self.lock:
                for task_id in list(self.tasks):
                    self.runtime.cleanup(task_id)
            if self.lease is not None:
                self.lease.release()  # nothing left for the watchdog to guard
        self.launcher.shutdown(wait=False, cancel_futures=True)
        close = getattr(self.runtime, "close", None)
        if close is not None:
            close()

    def register(self, expired_session: int | None = None) -> None:
        """Register (again). Both loops call this when the master rejects their session; only the first
        of them registers, the other finds the session already replaced."""
        with self.register_lock:
            if expired_session is not None and self.session != expired_session:
                return
            while not self.stopping.is_set():
                try:
                    with self.lock:
                        running = [tid for tid, t in self.tasks.items() if t.finished is None]
                        exited = [tid for tid, t in self.tasks.items()
                                  if t.finished is not None and t.reported != "Finished"]
                    sent = time.monotonic()
                    reply = self.client.register(self.config, running, exited)
                    refusal = self._cluster_refusal(str(reply.get("clusterId", "")))
                    if refusal:
                        # Not our cluster's master: take no orders (no kills, no work) and keep trying,
                        # the right master (or another URL of the list) may answer next time.
                        log.error("%s", refusal)
                        self.cluster_refusal = refusal
                        self.client.next_master()
                        self.stopping.wait(5.0)
                        continue
                    self.cluster_refusal = ""
                    self.heartbeat_timeout_s = int(reply.get("heartbeatTimeoutMs", 15_000)) / 1000
                    self.client.timeout_s = max(1.0, min(10.0, self.heartbeat_timeout_s / 2))
                    self._renew_lease(sent)
                    self.session = int(reply["sessionEpoch"])
                    self.version = -1
                    log.info("registered as %s, session %d", self.config.agent_id, self.session)
                    return
                except MasterUnavailable as exc:
                    log.warning("cannot register yet: %s", exc)
                    self.stopping.wait(0.5)

    def _cluster_refusal(self, cluster_id: str) -> str:
        """Why the agent must not obey a master of `cluster_id`, or "" if it may (DESIGN.md #10).

        The first cluster the agent joins is remembered in its data dir (`cluster-id`); any other is
        refused, so a master started on an empty or foreign store can never order this host's tasks
        killed."""
        if self.data_dir is None:
            return ""
        path = self.data_dir / CLUSTER_FILE
        try:
            joined = path.read_text().strip()
        except FileNotFoundError:
            joined = ""
        if not joined:
            if cluster_id:
                tmp = path.with_name(f"{CLUSTER_FILE}.tmp")
                tmp.write_text(cluster_id + "\n")
                os.replace(tmp, path)
                log.info("joined cluster %s (remembered in %s)", cluster_id, path)
            return ""
        if cluster_id == joined:
            return ""
        return (f"the master at {self.client.base} belongs to cluster {cluster_id or '(none)'}, but this "
                f"agent joined cluster {joined} (remembered in {path}): refusing its orders; the tasks here "
                f"keep running. If the cluster was rebuilt on purpose, stop this agent, remove {path} "
                f"(and the tasks it still runs), and start it again")

    def _renew_lease(self, sent: float) -> None:
        """The master heard from us no earlier than `sent`: it will not call us lost before
        sent + heartbeat timeout, so our tasks may run until a margin before that."""
        if self.lease is None:
            return
        silence = fence.fence_after_s(self.heartbeat_timeout_s)
        deadline = sent + silence
        if deadline > self.lease_deadline:
            self.lease_deadline = deadline
            self.lease.renew(deadline, fence.kill_grace_s(self.heartbeat_timeout_s), silence)

    def _ensure_watchdog(self) -> None:
        """A watchdog runs while some task here self-fences (its marker outlives agent restarts)."""
        if self.lease is not None and self.data_dir is not None and fence.guarded(self.data_dir):
            try:
                fence.ensure_watchdog(self.data_dir, self.config.agent_id, self.runtime_name)
            except OSError as exc:
                log.error("cannot start the self-fencing watchdog: %s", exc)

    # ================================================================================ desired set
    def _poll_loop(self) -> None:
        while not self.stopping.is_set():
            session = self.session
            try:
                desired = self.client.desired_set(self.config.agent_id, session, self.version,
                                                  self.config.poll_wait_ms)
                if session != self.session:
                    continue  # answered for a session we have since replaced
                self.version = int(desired["version"])
                self.converge(desired["tasks"], time.monotonic())
                for read in desired.get("logReads", []):
                    self._start_log_read(read)
            except SessionExpired:
                self.register(session)
            except MasterUnavailable as exc:
                log.warning("desired-set poll failed: %s", exc)
                self.stopping.wait(0.5)
            except Exception:
                log.exception("convergence failed; retrying")
                self.stopping.wait(0.5)

    def converge(self, desired: list[dict[str, Any]], now: float) -> None:
        wanted = {d["taskId"]: d for d in desired}
        with self.lock:
            for task_id, d in wanted.items():
                local = self.tasks.get(task_id)
                if d["kill"]:
                    if local is not None and local.finished is None and not local.killing:
                        if d.get("stale"):
                            log.warning("killing %s: the master replaced it while we were away", task_id)
                        local.killing = True
                        self._kill_locked(task_id, local, d.get("killGraceMs", 10_000) / 1000)
                    elif local is None and not d.get("stale"):
                        # Asked to kill what we never ran (e.g. we lost it): say it has ended.
                        self._queue(task_id, "Finished", "killed", "not running on this agent", None)
                    continue
                if local is None:
                    if self.stopping.is_set() or task_id in self.done:
                        continue  # a task id runs at most once on this agent
                    fencing = bool(d.get("selfFence")) or self.config.self_fence
                    if fencing and (now > self.lease_deadline or self.data_dir is None):
                        continue  # fenced: the master may be replacing our work right now
                    spec = _spec(d, self.config.pids_limit)
                    if fencing and self.data_dir is not None:
                        fence.guard(self.data_dir, task_id)  # before it starts: the watchdog must know
                        self._ensure_watchdog()
                    self.tasks[task_id] = LocalTask(spec=spec, starting=True, self_fence=fencing)
                    self._queue(task_id, "StartInitiated", "normal", "", None)
                    self.launcher.submit(self._launch, spec)
            self.last_wanted = set(wanted)
            self._kill_unwanted_locked(self.last_wanted, now)

    def _kill_unwanted_locked(self, wanted: set[str], now: float) -> None:
        """Tasks the master does not list die after a grace period (covers races with the desired set)."""
        for task_id, local in self.tasks.items():
            if task_id in wanted:
                self.unknown_since.pop(task_id, None)
                continue
            if local.finished is not None or local.killing:
                continue
            first_seen = self.unknown_since.setdefault(task_id, now)
            if now - first_seen >= self.config.unknown_task_grace_s:
                log.warning("killing %s: the master does not want it", task_id)
                local.killing = True
                self._kill_locked(task_id, local, 2.0)

    def _kill_locked(self, task_id: str, local: LocalTask, grace_s: float) -> None:
        try:
            self.runtime.kill(task_id, grace_s)
        except KeyError:  # it vanished meanwhile (someone removed an orphan): nothing left to kill
            local.finished = ExitStatus(None, "crashed", "the task disappeared from the agent's runtime")

    def _launch(self, spec: TaskSpec) -> None:
        try:
            with self.lock:
                fencing = self.tasks[spec.task_id].self_fence
            if fencing and time.monotonic() > self.lease_deadline:
                raise LaunchError("the agent lost contact with the master before the task could start")
            self.runtime.start(spec)
        except LaunchError as exc:
            with self.lock:
                local = self.tasks[spec.task_id]
                local.starting = False
                local.finished = ExitStatus(None, "failed", f"launch failed: {exc}")
            self.wake_reporter.set()
            return
        except Exception as exc:
            log.exception("runtime failed to start %s", spec.task_id)
            with self.lock:
                local = self.tasks[spec.task_id]
                local.starting = False
                local.finished = ExitStatus(None, "localSystemError",  # the agent's fault, not the task's
                                            f"agent could not start the task: {exc}")
            self.wake_reporter.set()
            return
        with self.lock:
            self.tasks[spec.task_id].starting = False
            self._queue(spec.task_id, "Started", "normal", "", None)

    def _queue(self, task_id: str, state: str, reason: str, message: str, exit_code: int | None,
               **extra: Any) -> None:
        self.updates.append({"taskId": task_id, "state": state, "reasonCode": reason,
                             "reasonMessage": message, "exitCode": exit_code,
                             "timestamp": int(time.time() * 1000), **extra})
        self.wake_reporter.set()

    # ==================================================================================== reports
    def _report_loop(self) -> None:
        while not self.stopping.is_set():
            self.wake_reporter.wait(self.config.report_interval_s)
            self.wake_reporter.clear()
            if self.stopping.is_set():
                return
            session = self.session
            try:
                self._ensure_watchdog()
                try:
                    self._scan(time.monotonic())
                except Exception:  # never at the cost of the heartbeat
                    log.exception("scan for unknown tasks failed")
                try:
                    self._rotate_logs()
                except Exception:
                    log.exception("log rotation failed")
                self._report_once()
            except SessionExpired:
                self.register(session)
            except MasterUnavailable as exc:
                log.warning("status report failed: %s", exc)
                self.stopping.wait(0.5)
            except Exception:
                log.exception("status report failed")
                self.stopping.wait(0.5)

    def _scan(self, now: float) -> None:
        """Adopt tasks in our runtime's layout that we do not know (started by hand, or left by a crash),
        so that the unknown-task rule kills them unless the master wants them."""
        if now - self.last_scan < self.config.scan_interval_s:
            return
        self.last_scan = now
        with self.lock:
            for task_id in self.runtime.list_tasks():
                if task_id not in self.tasks and task_id not in self.done:
                    log.warning("found task %s that this agent does not know of", task_id)
                    self.tasks[task_id] = LocalTask(spec=None, reported="Started")
            if self.last_wanted is not None:
                self._kill_unwanted_locked(self.last_wanted, now)

    def _collect_exits(self) -> None:
        with self.lock:
            candidates = [tid for tid, t in self.tasks.items()
                          if t.finished is None and not t.starting]
        for task_id in candidates:
            try:
                status = self.runtime.poll(task_id)
            except KeyError:  # vanished (an orphan someone removed): nothing of it is left to report
                status = ExitStatus(None, "crashed", "the task disappeared from the agent's runtime")
            if status is None:
                continue
            with self.lock:
                self.tasks[task_id].finished = status

    def _report_once(self) -> None:
        self._collect_exits()
        with self.lock:
            for task_id, local in self.tasks.items():
                if local.finished is not None and local.reported != "Finished" and not any(
                        u["taskId"] == task_id and u["state"] == "Finished" for u in self.updates):
                    st = local.finished
                    reason, message = st.reason, st.message
                    fenced = fence.fenced_message(self.data_dir, task_id) if self.data_dir else None
                    if fenced is not None:
                        reason, message = "lost", f"{fenced}; {st.message}"
                    elif local.stopped_by_agent is not None:
                        reason, why = local.stopped_by_agent
                        message = f"{why}; {st.message}"
                    self._queue(task_id, "Finished", reason, message, st.exit_code,
                                stdoutTail=self._tail(task_id, "stdout"),
                                stderrTail=self._tail(task_id, "stderr"))
            updates = list(self.updates)
            running = [tid for tid, t in self.tasks.items() if t.finished is None]
        usage: dict[str, Any] = {}
        for task_id in running:
            sample = self.runtime.usage(task_id)
            if sample is not None:
                usage[task_id] = {"cpuPct": round(sample.cpu_pct, 2), "rssMB": round(sample.rss_mb, 2),
                                  "processes": sample.processes}
        host = self.host_stats() if self.host_stats else {}
        unavailable = unavailable_reason(host, self.config.min_available_memory_mb)
        sent = time.monotonic()
        self.client.report(self.config.agent_id, {"sessionEpoch": self.session, "updates": updates,
                                                  "runningTaskIds": running, "usage": usage, "host": host,
                                                  "unavailableReason": unavailable})
        self._renew_lease(sent)
        self.reports_sent += 1
        self.last_report_at = sent
        with self.lock:
            del self.updates[: len(updates)]
            for u in updates:
                acked = self.tasks.get(u["taskId"])
                if acked is None:
                    continue
                acked.reported = u["state"]
                if u["state"] == "Finished":
                    # The master has durably recorded the end: the task's resources can go.
                    self.runtime.cleanup(u["taskId"])
                    if self.log_archive is not None:
                        self.launcher.submit(self._archive_logs, u["taskId"])
                    del self.tasks[u["taskId"]]
                    self.unknown_since.pop(u["taskId"], None)
                    self.done[u["taskId"]] = None
                    while len(self.done) > 100_000:
                        self.done.popitem(last=False)
                    if self.data_dir is not None:
                        fence.forget_fenced(self.data_dir, u["taskId"])
                        fence.unguard(self.data_dir, u["taskId"])

    def _tail(self, task_id: str, stream: str) -> str:
        try:
            return self.runtime.logs(task_id, stream, self.config.log_tail_bytes).decode("utf-8", "replace")
        except Exception:
            return ""

    # ============================================================================== byte-range log reads
    def _start_log_read(self, read: dict[str, Any]) -> None:
        """Answer one log read of the master's in a thread of its own: a follow may wait up to waitMs for
        the log to grow, and must hold neither the launcher pool nor the poll loop. The master lists a read
        until it is answered, so one already in flight is not started twice."""
        request_id = str(read.get("id", ""))
        with self.lock:
            if not request_id or request_id in self.log_reads or len(self.log_reads) >= MAX_LOG_READS:
                return
            self.log_reads.add(request_id)
        threading.Thread(target=self._answer_log_read, args=(read,), name="log-read", daemon=True).start()

    def _task_ended(self, task_id: str) -> bool:
        with self.lock:
            local = self.tasks.get(task_id)
        if local is None:
            return True  # its end was acknowledged and its resources released; the files stay
        if local.finished is not None:
            return True
        try:
            return self.runtime.poll(task_id) is not None
        except Exception:
            return True

    def _answer_log_read(self, read: dict[str, Any]) -> None:
        request_id, task_id = str(read["id"]), str(read["taskId"])
        stream = "stderr" if read.get("stream") == "stderr" else "stdout"
        try:
            offset, limit = int(read.get("offset", 0)), max(0, min(int(read.get("limit", 0)), MAX_LOG_CHUNK))
            wait_s = min(max(0, int(read.get("waitMs", 0))), 60_000) / 1000
            chunk = self._read_log(task_id, stream, offset, limit, wait_s)
            body: dict[str, Any] = {"requestId": request_id, "stream": stream, "found": chunk is not None}
            if chunk is not None:
                final = self._task_ended(task_id) and chunk.offset + len(chunk.data) >= chunk.size
                body.update({"offset": chunk.offset, "size": chunk.size, "start": chunk.start, "final": final,
                             "dataB64": base64.b64encode(chunk.data).decode()})
            self.client.upload_log_chunk(self.config.agent_id, task_id, self.session, body)
        except Exception as exc:
            log.warning("log read %s for %s failed: %s", request_id, task_id, exc)
        finally:
            with self.lock:
                self.log_reads.discard(request_id)

    def _read_log(self, task_id: str, stream: str, offset: int, limit: int, wait_s: float) -> LogChunk | None:
        try:
            path = self.runtime.log_path(task_id, stream)
        except (KeyError, ValueError):
            return None
        if path is None:
            # A runtime without a plain file (Docker while the container exists): its whole log, sliced.
            data = self.runtime.logs(task_id, stream, 1 << 62)
            begin = min(max(len(data) + offset if offset < 0 else offset, 0), len(data))
            return LogChunk(data[begin:begin + limit], begin, len(data), 0)
        if wait_s > 0:
            task_logs.wait_for_growth(path, offset, wait_s, lambda: self._task_ended(task_id) or
                                      self.stopping.is_set())
        return task_logs.read_range(path, offset, limit)

    def _archive_logs(self, task_id: str) -> None:
        """Upload a finished task's logs (what rotation kept) once the master recorded its end, so they
        outlive this agent; the files stay here too. A failed upload is logged: the tail is in the master."""
        for stream in ("stdout", "stderr"):
            try:
                path = self.runtime.log_path(task_id, stream)
                chunk = task_logs.read_range(path, 0, 1 << 62) if path is not None else None
                if chunk is None:
                    data = self.runtime.logs(task_id, stream, 1 << 62)
                    chunk = LogChunk(data, 0, len(data), 0)
                if self.log_archive is not None:
                    self.log_archive.put(task_id, stream, chunk.data, chunk.offset)
            except Exception as exc:
                log.warning("archiving the %s of %s failed: %s", stream, task_id, exc)

    def _rotate_logs(self) -> None:
        """Keep every running task's stdout + stderr within log_max_bytes on disk (agent/task_logs.py)."""
        with self.lock:
            task_ids = list(self.tasks)
        for task_id in task_ids:
            for stream in ("stdout", "stderr"):
                try:
                    path = self.runtime.log_path(task_id, stream)
                except (KeyError, ValueError):
                    continue
                if path is not None:
                    task_logs.rotate(path, self.config.log_max_bytes // 2)


def unavailable_reason(host: Mapping[str, float], min_available_mb: int) -> str:
    """Why the host should take no new work, or "" if it may. Available (not free) memory is what new
    work can use without swapping; below the threshold a new task would push the host into reclaim."""
    available = host.get("memoryAvailableMB")
    if available is not None and available < min_available_mb:
        return (f"host memory is short: {available:.0f} MB available, below the threshold of "
                f"{min_available_mb} MB")
    return ""


def _spec(d: dict[str, Any], pids_limit: int) -> TaskSpec:
    r = d["resources"]
    return TaskSpec(task_id=d["taskId"], job_id=d["jobId"], image=d["image"],
                    entry_point=tuple(d["entryPoint"]), command=tuple(d["command"]), env=dict(d["env"]),
                    cpu=float(r["cpu"]), memory_mb=int(r["memoryMB"]), disk_mb=int(r.get("diskMB", 0)),
                    network_mbps=int(r.get("networkMbps", 0)), pids_limit=pids_limit,
                    original_id=str(d.get("originalId", "")), index=int(d.get("index", 0)),
                    resubmit_number=int(d.get("resubmitNumber", 0)))
