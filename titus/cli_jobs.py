"""`titus job ...` and `titus task ...`: the daily commands; human output says why tasks ended or wait.

`--wait` polls the master (every 0.5 s) and draws one progress line on stderr; the result goes to stdout.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from titus.cli_common import (
    EXIT_BAD_INPUT,
    EXIT_TIMEOUT,
    EXIT_UNSUCCESSFUL,
    CliError,
    Progress,
    api_call,
    api_options,
    cli_error,
    complete_ids,
    emit,
    make_client,
    table,
)

if TYPE_CHECKING:
    from titus.client import TitusClient

ALL_TASK_STATES = "Accepted,Launched,StartInitiated,Started,KillInitiated,Finished"
POLL_S = 0.5


def wait_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--timeout",
        "wait_timeout",
        type=float,
        default=300.0,
        show_default=True,
        help="Seconds --wait waits before giving up (exit code 5).",
    )(f)
    f = click.option("--wait", is_flag=True, help="Wait until done, with a progress line on stderr.")(f)
    return f


# ================================================================================= human formatting
def task_index(t: dict[str, Any]) -> int:
    """A batch task's index (the wire carries it in taskContext, as Titus does); 0 for services."""
    try:
        return int(t.get("index", t.get("taskContext", {}).get("task.index", 0)))
    except (TypeError, ValueError):
        return 0


def task_reason(t: dict[str, Any]) -> str:
    """How a task ended or why it is where it is: reason code, message, exit code, pending reason."""
    status = t["status"]
    parts = []
    code, message = status.get("reasonCode", ""), status.get("reasonMessage", "")
    if code == "normal" and status["state"] != "Finished":
        code = ""  # "normal" on a task still on its way says nothing
    if code and message and message != code:
        parts.append(f"{code}: {message}")
    elif code or message:
        parts.append(code or message)
    ctx = t.get("taskContext", {})
    if ctx.get("task.exitCode") is not None and status["state"] == "Finished":
        parts.append(f"exit {ctx['task.exitCode']}")
    if ctx.get("task.pendingReason"):
        parts.append(f"pending: {ctx['task.pendingReason']}")
    return ", ".join(parts)


def _job_reason(status: dict[str, Any]) -> str:
    code, message = status.get("reasonCode", ""), status.get("reasonMessage", "")
    if code == "normal" and status.get("state") != "Finished":
        code = ""
    if code and message and message != code:
        return f"{code}: {message}"
    return str(code or message)


def _ts(ms: Any) -> str:
    try:
        return datetime.fromtimestamp(int(ms) / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError, OverflowError, OSError):
        return "-"


def _task_rows(tasks: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            t["id"],
            str(task_index(t)),
            t["status"]["state"],
            t["taskContext"].get("agent.id", "-"),
            task_reason(t),
        ]
        for t in tasks
    ]


def _size(d: dict[str, Any]) -> str:
    if "batch" in d:
        return f"{d['batch']['size']} tasks"
    cap = d["service"]["capacity"]
    return f"min {cap.get('min', 0)} desired {cap.get('desired', 0)} max {cap.get('max', 0)}"


def _by_state(tasks: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for t in tasks:
        counts[t["status"]["state"]] = counts.get(t["status"]["state"], 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no tasks"


# ========================================================================================== jobs
@click.group()
def job() -> None:
    """Submit and manage jobs."""


@job.command("submit")
@click.argument("file", type=click.File("r"))
@click.option("--idempotency-key", help="Retrying with the same key returns the same job.")
@wait_options
@api_options
def job_submit(
    file: Any,
    idempotency_key: str | None,
    wait: bool,
    wait_timeout: float,
    url: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """Submit the job descriptor in FILE (- for stdin).

    A service job whose FILE leaves out service.enabled is submitted enabled, as Titus's own clients
    send it (the API reads an absent enabled as proto3's false).

    With --wait: a service job until its desired tasks are Started, a batch job until it is Finished
    (exit code 6 if any task did not end normally).
    """
    try:
        descriptor = json.load(file)
    except json.JSONDecodeError as exc:
        raise CliError(f"{getattr(file, 'name', 'input')} is not valid JSON: {exc}", EXIT_BAD_INPUT) from exc
    service = descriptor.get("service") if isinstance(descriptor, dict) else None
    if isinstance(service, dict):
        service.setdefault("enabled", True)
    client = make_client(url, token)
    job_id = api_call(lambda: client.submit(descriptor, idempotency_key))
    if not wait:
        emit({"id": job_id}, as_json, f"job {job_id} accepted")
        return
    if not as_json:
        click.echo(f"job {job_id} accepted")
    if "batch" in descriptor:
        _wait_job_finished(client, job_id, wait_timeout, as_json, batch=True)
    else:
        _wait_service_size(client, job_id, wait_timeout, as_json)


class Duration(click.ParamType):  # type: ignore[type-arg]  # generic in new click; [..] breaks old
    """A duration such as 90s, 30m, 2h or 7d, as milliseconds."""

    name = "duration"
    UNITS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        text = str(value).strip()
        if len(text) >= 2 and text[:-1].isdigit() and text[-1] in self.UNITS:
            return int(text[:-1]) * self.UNITS[text[-1]]
        self.fail(f"{value!r} is not a duration such as 90s, 30m, 2h or 7d", param, ctx)


SINCE = click.option(
    "--since", "since_ms", type=Duration(),
    help="Only what entered its current state within this long (e.g. 2h: finished in the last two hours).",
)


def _since(since_ms: int | None) -> int | None:
    return None if since_ms is None else int(time.time() * 1000) - since_ms


@job.command("list")
@click.option("--state", "job_state", help="Accepted, KillInitiated or Finished.")
@click.option("--app", "application_name", help="Application name.")
@SINCE
@api_options
def job_list(
    job_state: str | None,
    application_name: str | None,
    since_ms: int | None,
    url: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """List jobs (active ones unless --state Finished)."""
    client = make_client(url, token)
    since = _since(since_ms)
    filters = {
        k: v
        for k, v in {
            "jobState": job_state,
            "applicationName": application_name,
            "stateSince": None if since is None else str(since),
        }.items()
        if v
    }
    jobs = api_call(lambda: client.jobs(**filters))
    rows = []
    for j in jobs:
        d = j["jobDescriptor"]
        status = j["status"]
        reason = _job_reason(status)
        rows.append(
            [
                j["id"],
                "batch" if "batch" in d else "service",
                status["state"],
                d["applicationName"],
                _size(d),
                reason,
            ]
        )
    emit(
        jobs,
        as_json,
        table(rows, ["ID", "TYPE", "STATE", "APPLICATION", "SIZE", "REASON"]) if rows else "no jobs",
    )


@job.command("get")
@click.argument("job_id", shell_complete=complete_ids("job"))
@api_options
def job_get(job_id: str, url: str | None, token: str | None, as_json: bool) -> None:
    """Show one job and all its tasks, finished ones too, with how each ended or why it waits."""
    client = make_client(url, token)
    j = api_call(lambda: client.job(job_id))
    tasks = api_call(lambda: client.tasks(job_id, ALL_TASK_STATES))
    active = [t for t in tasks if t["status"]["state"] != "Finished"]
    finished = [t for t in tasks if t["status"]["state"] == "Finished"]
    d = j["jobDescriptor"]
    status = j["status"]
    reason = _job_reason(status)
    lines = [
        f"job {j['id']}",
        f"  type:         {'batch' if 'batch' in d else 'service'} ({_size(d)})",
        f"  application:  {d['applicationName']}   owner: {d.get('owner', {}).get('teamEmail', '-')}",
        f"  capacity:     {d.get('capacityGroup', 'DEFAULT')}",
        f"  state:        {status['state']}" + (f" ({reason})" if reason else ""),
        f"  image:        {d['container']['image']['name']}:"
        f"{d['container']['image'].get('tag') or d['container']['image'].get('digest', '')}",
        f"  active tasks: {len(active)}",
    ]
    if active:
        lines += [
            "    " + r
            for r in table(_task_rows(active), ["ID", "INDEX", "STATE", "AGENT", "REASON"]).splitlines()
        ]
    lines.append(f"  finished tasks: {len(finished)}")
    if finished:
        lines += [
            "    " + r
            for r in table(_task_rows(finished), ["ID", "INDEX", "STATE", "AGENT", "REASON"]).splitlines()
        ]
    emit({"job": j, "tasks": active, "finishedTasks": finished}, as_json, "\n".join(lines))


@job.command("kill")
@click.argument("job_id", shell_complete=complete_ids("job"))
@wait_options
@api_options
def job_kill(
    job_id: str, wait: bool, wait_timeout: float, url: str | None, token: str | None, as_json: bool
) -> None:
    """Kill a job and all its tasks (--wait: until the job is Finished)."""
    client = make_client(url, token)
    api_call(lambda: client.kill_job(job_id))
    if not wait:
        emit({"id": job_id, "killed": True}, as_json, f"job {job_id}: kill initiated")
        return
    if not as_json:
        click.echo(f"job {job_id}: kill initiated")
    _wait_job_finished(client, job_id, wait_timeout, as_json, batch=False)


@job.command("scale")
@click.argument("job_id", shell_complete=complete_ids("job"))
@click.option("--min", "min_", type=int)
@click.option("--desired", type=int)
@click.option("--max", "max_", type=int)
@wait_options
@api_options
def job_scale(
    job_id: str,
    min_: int | None,
    desired: int | None,
    max_: int | None,
    wait: bool,
    wait_timeout: float,
    url: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """Change a service job's capacity (--wait: until exactly `desired` tasks run)."""
    capacity = {k: v for k, v in {"min": min_, "desired": desired, "max": max_}.items() if v is not None}
    if not capacity:
        raise CliError("give at least one of --min, --desired, --max", EXIT_BAD_INPUT)
    client = make_client(url, token)
    j = api_call(lambda: client.scale(job_id, **capacity))
    cap = j["jobDescriptor"]["service"]["capacity"]
    human = f"job {job_id}: min {cap.get('min', 0)} desired {cap['desired']} max {cap['max']}"
    if not wait:
        emit(j, as_json, human)
        return
    if not as_json:
        click.echo(human)
    _wait_service_size(client, job_id, wait_timeout, as_json)


# ========================================================================================= waiting
#: Reconnects in a row, with no event between them, before `titus job watch` gives up.
WATCH_RECONNECTS = 5


@job.command("watch")
@click.argument("job_id", required=False, shell_complete=complete_ids("job"))
@click.option("--app", "application_name", help="Only jobs of this application name.")
@click.option("--type", "job_type", type=click.Choice(["batch", "service"]), help="Only this type of job.")
@api_options
def job_watch(
    job_id: str | None,
    application_name: str | None,
    job_type: str | None,
    url: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """Print job and task changes as they happen (ObserveJobs): every active job and task first, then
    each change. With JOB_ID: that job until it is Finished. A dropped connection is resumed after the
    last change printed (or from a fresh snapshot when the master no longer has it). --json: one
    JobChangeNotification per line (keep-alives left out). Ctrl-C stops it, exit 0."""
    from titus.client import ApiError

    client = make_client(url, token)
    filters = {k: v for k, v in {"applicationName": application_name, "jobType": (job_type or "").upper()}
               .items() if v}
    since: int | None = None
    lost = 0
    try:
        while True:
            try:
                for event in client.observe(job_id, since, filters=filters):
                    lost = 0
                    since = event.seq if event.seq is not None else since
                    _print_change(event.message, as_json)
                    if job_id and _job_finished(event.message):
                        return  # ObserveJob ends with the job's final update
                why = "the master ended the stream"  # a master stopping ends it too: resume elsewhere
            except ApiError as exc:
                if exc.status:  # refused (404: no such job), not lost
                    raise cli_error(exc) from exc
                why = str(exc)
            lost += 1
            if lost > WATCH_RECONNECTS:
                raise CliError(f"{why}; gave up after {WATCH_RECONNECTS} reconnects")
            click.echo(f"watch: {why}; reconnecting", err=True)
            time.sleep(min(0.2 * 2**lost, 5.0))
    except KeyboardInterrupt:
        return


def _job_finished(message: dict[str, Any]) -> bool:
    update: dict[str, Any] = message.get("jobUpdate") or {}
    return bool(update) and update["job"]["status"]["state"] == "Finished"


def _print_change(message: dict[str, Any], as_json: bool) -> None:
    """One JobChangeNotification: a line per job or task update (time, kind, id, state, why); the
    snapshot's end goes to stderr, so stdout stays one line per change."""
    if "keepAliveResponse" in message:
        return
    if as_json:
        click.echo(json.dumps(message, separators=(",", ":")))
        return
    when = _ts(message.get("timestamp"))
    if "snapshotEnd" in message:
        click.echo(f"{when}  (the jobs and tasks above are the current state; changes follow)", err=True)
    elif "jobUpdate" in message:
        j = message["jobUpdate"]["job"]
        d, status = j["jobDescriptor"], j["status"]
        kind = "batch" if "batch" in d else "service"
        line = f"{when}  job   {j['id']}  {status['state']}  {kind} {d['applicationName']} {_size(d)}"
        reason = _job_reason(status)
        click.echo(f"{line}  {reason}" if reason else line)
    elif "taskUpdate" in message:
        t = message["taskUpdate"]["task"]
        agent = t.get("taskContext", {}).get("agent.id", "-")
        line = f"{when}  task  {t['id']}  {t['status']['state']}  job {t['jobId']} agent {agent}"
        reason = task_reason(t)
        click.echo(f"{line}  {reason}" if reason else line)


def _poll(what: str, timeout: float, step: Callable[[], tuple[bool, str]]) -> None:
    """Call step() every POLL_S until it says done; its text is the progress line."""
    progress = Progress()
    start = time.monotonic()
    try:
        while True:
            done, line = step()
            elapsed = time.monotonic() - start
            progress.show(f"{line} [{elapsed:.0f}s]")
            if done:
                return
            if elapsed > timeout:
                raise CliError(f"gave up waiting after {timeout:g}s for {what}: {line}", EXIT_TIMEOUT)
            time.sleep(POLL_S)
    finally:
        progress.done()


def _first_pending(tasks: list[dict[str, Any]]) -> str:
    reason = next((p for t in tasks if (p := t.get("taskContext", {}).get("task.pendingReason"))), "")
    return f" (pending: {reason})" if reason else ""


def _wait_job_finished(client: TitusClient, job_id: str, timeout: float, as_json: bool, batch: bool) -> None:
    state: dict[str, Any] = {}

    def step() -> tuple[bool, str]:
        j = api_call(lambda: client.job(job_id))
        tasks = api_call(lambda: client.tasks(job_id, ALL_TASK_STATES))
        state["job"], state["tasks"] = j, tasks
        active = [t for t in tasks if t["status"]["state"] != "Finished"]
        line = f"job {job_id}: {j['status']['state']}; tasks: {_by_state(tasks)}{_first_pending(active)}"
        return j["status"]["state"] == "Finished", line

    _poll(f"job {job_id} to finish", timeout, step)
    tasks: list[dict[str, Any]] = state["tasks"]
    # The last attempt of each index decides (a retry that succeeded makes up for the failures before it).
    latest: dict[int, dict[str, Any]] = {}
    for t in sorted(tasks, key=lambda t: t["status"].get("timestamp", 0)):
        latest[task_index(t)] = t
    failed = [t for t in latest.values() if t["status"].get("reasonCode") != "normal"] if batch else []
    result = {"job": state["job"], "tasks": tasks, "failedTasks": failed}
    human = [f"job {job_id}: Finished"]
    human += [f"  task {t['id']} (index {task_index(t)}): {task_reason(t)}" for t in failed]
    emit(result, as_json, "\n".join(human))
    if failed:
        raise SystemExit(EXIT_UNSUCCESSFUL)


def _wait_service_size(client: TitusClient, job_id: str, timeout: float, as_json: bool) -> None:
    state: dict[str, Any] = {}

    def step() -> tuple[bool, str]:
        j = api_call(lambda: client.job(job_id))
        active = api_call(lambda: client.tasks(job_id))
        state["job"], state["tasks"] = j, active
        desired = int(j["jobDescriptor"]["service"]["capacity"].get("desired", 0))
        started = sum(1 for t in active if t["status"]["state"] == "Started")
        line = (
            f"job {job_id}: {started}/{desired} Started; tasks: {_by_state(active)}{_first_pending(active)}"
        )
        return started == desired and len(active) == desired, line

    _poll(f"job {job_id} to reach its desired size", timeout, step)
    emit(
        {"job": state["job"], "tasks": state["tasks"]},
        as_json,
        f"job {job_id}: {len(state['tasks'])} tasks Started",
    )


# ========================================================================================= tasks
@click.group()
def task() -> None:
    """Inspect and kill tasks, read their logs."""


@task.command("list")
@click.option("--job", "job_id", help="Only this job's tasks.")
@click.option("--states", help="Comma-separated task states (e.g. Finished); default: the active ones.")
@SINCE
@api_options
def task_list(
    job_id: str | None,
    states: str | None,
    since_ms: int | None,
    url: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """List tasks: the active ones (not yet Finished) unless --states says otherwise."""
    client = make_client(url, token)
    tasks = api_call(lambda: client.tasks(job_id, states, _since(since_ms)))
    rows = [
        [t["id"], t["jobId"], t["status"]["state"], t["taskContext"].get("agent.id", "-"), task_reason(t)]
        for t in tasks
    ]
    emit(
        tasks,
        as_json,
        table(rows, ["ID", "JOB", "STATE", "AGENT", "REASON"])
        if rows
        else "no tasks"
        if states
        else "no active tasks (finished ones: --states Finished)",
    )


@task.command("get")
@click.argument("task_id", shell_complete=complete_ids("task"))
@api_options
def task_get(task_id: str, url: str | None, token: str | None, as_json: bool) -> None:
    """Show one task: state and why, agent, resources, usage and its status history."""
    client = make_client(url, token)
    t = api_call(lambda: client.task(task_id))
    ctx = t.get("taskContext", {})
    lines = [
        f"task {t['id']}",
        f"  job:        {t['jobId']} (index {task_index(t)})",
        f"  state:      {t['status']['state']}",
    ]
    reason = task_reason(t)
    if reason:
        lines.append(f"  reason:     {reason}")
    lines.append(f"  agent:      {ctx.get('agent.id', '-')}")
    if ctx.get("task.resubmitOf"):
        lines.append(
            f"  replaces:   {ctx['task.resubmitOf']} (resubmit {ctx.get('task.resubmitNumber', '')})"
        )
    # Titus's Task carries no resources: they are the job's (its container's).
    job = api_call(lambda: client.job(t["jobId"]))
    res = job.get("jobDescriptor", {}).get("container", {}).get("resources")
    if res:
        lines.append(
            f"  resources:  cpu {res.get('cpu')} memory {res.get('memoryMB')} MB disk "
            f"{res.get('diskMB')} MB network {res.get('networkMbps')} Mbps"
        )
    usage = {k.removeprefix("task.usage."): float(v) for k, v in ctx.items() if k.startswith("task.usage.")}
    if usage:
        lines.append(
            f"  usage:      cpu {usage.get('cpuPct', 0):.1f}% rss {usage.get('rssMB', 0):.1f} MB "
            f"processes {usage.get('processes', 0)}"
        )
    lines.append("  history:")
    for s in [*t.get("statusHistory", []), t["status"]]:
        why = " ".join(x for x in (s.get("reasonCode", ""), s.get("reasonMessage", "")) if x)
        lines.append(f"    {_ts(s.get('timestamp'))}  {s['state']}" + (f"  {why}" if why else ""))
    emit(t, as_json, "\n".join(lines))


@task.command("kill")
@click.argument("task_id", shell_complete=complete_ids("task"))
@click.option("--shrink", is_flag=True, help="Also lower the service job's desired count.")
@wait_options
@api_options
def task_kill(
    task_id: str,
    shrink: bool,
    wait: bool,
    wait_timeout: float,
    url: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """Kill a task (a service job replaces it unless --shrink; --wait: until it is Finished)."""
    client = make_client(url, token)
    api_call(lambda: client.kill_task(task_id, shrink))
    if not wait:
        emit({"id": task_id, "killed": True}, as_json, f"task {task_id}: kill initiated")
        return
    state: dict[str, Any] = {}

    def step() -> tuple[bool, str]:
        t = api_call(lambda: client.task(task_id))
        state["task"] = t
        return t["status"]["state"] == "Finished", f"task {task_id}: {t['status']['state']}"

    _poll(f"task {task_id} to finish", wait_timeout, step)
    emit(state["task"], as_json, f"task {task_id}: Finished ({task_reason(state['task'])})")


@task.command("logs")
@click.argument("task_id", shell_complete=complete_ids("task"))
@click.option("--stderr", is_flag=True, help="Show stderr instead of stdout.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing what the task writes until it ends.")
@click.option("--tail", "tail_bytes", type=click.IntRange(min=1), help="Start this many bytes from the end.")
@click.option("--offset", type=click.IntRange(min=0), help="Start at this byte of the stream.")
@click.option("--limit", type=click.IntRange(min=1), help="Print at most this many bytes.")
@api_options
def task_logs(task_id: str, stderr: bool, follow: bool, tail_bytes: int | None, offset: int | None,
              limit: int | None, url: str | None, token: str | None, as_json: bool) -> None:
    """Print a task's stdout (or stderr): all of it, a byte range (--offset, --limit, --tail), or --follow.

    Logs come from the task's agent (running tasks, and finished ones while their agent keeps the files);
    bytes rotated away on the agent are skipped with a note on stderr. Without an agent, the tail stored
    with the finished task is all there is, and a note says so.
    """
    if tail_bytes is not None and offset is not None:
        raise CliError("give --tail or --offset, not both", EXIT_BAD_INPUT)
    client = make_client(url, token)
    stream = "stderr" if stderr else "stdout"
    out = sys.stdout.buffer
    position = -tail_bytes if tail_bytes is not None else (offset or 0)
    remaining = limit if limit is not None else -1
    pieces: list[bytes] = []
    first: Any = None
    last: Any = None
    try:
        while remaining != 0:
            ask = min(remaining, 1 << 20) if remaining > 0 else 1 << 20
            wait_ms = 20_000 if follow and last is not None else 0
            chunk = api_call(lambda: client.log_range(task_id, stream, position, ask, wait_ms))  # noqa: B023
            first = first or chunk
            if chunk.offset > position >= 0 and chunk.source == "agent":
                click.echo(f"[{chunk.offset - position} bytes rotated away on the agent]", err=True)
            data = chunk.data
            if as_json:
                pieces.append(data)
            else:
                out.write(data)
                out.flush()
            last = chunk
            position = chunk.offset + len(data)
            remaining = remaining - len(data) if remaining > 0 else remaining
            at_end = position >= chunk.size
            if chunk.source == "tail" and follow and not chunk.final:
                # Active but no agent answers (not placed yet, or its agent is unreachable): look again.
                time.sleep(1.0)
                position = max(position, 0) if tail_bytes is None else -tail_bytes
                continue
            if chunk.source == "tail" or (at_end and (chunk.final or not follow)):
                break
            if follow and not data:
                time.sleep(0.2)  # the master answered without waiting (busy): do not hammer it
    except KeyboardInterrupt:
        pass  # the way to stop --follow
    if last is not None and last.source == "tail" and not as_json:
        why = "its agent is gone; this is the tail stored with the task" if last.final else \
            "no agent has it (not placed yet, or its agent does not answer)"
        click.echo(f"[task {task_id}: {why}]", err=True)
    if as_json:
        data = b"".join(pieces)
        click.echo(json.dumps({
            "id": task_id, "stream": stream, "offset": first.offset if first else 0,
            "size": last.size if last else 0, "start": last.start if last else 0,
            "source": last.source if last else "", "final": bool(last and last.final),
            "text": data.decode("utf-8", "replace")}))
