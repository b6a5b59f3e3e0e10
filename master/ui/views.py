"""/ui: the web console, server-rendered pages over the same JobManager operations as the API.

Views read through the manager's public queries (the ones the v3 routes use) and change state through the
same calls (`kill_job`, `update_capacity`, `set_enabled`), so the console can do nothing the API cannot.
Every page works without JavaScript; htmx (served from /ui/static/vendor, fetched from npm at setup by
scripts/install-htmx.sh) only refreshes fragments: the jobs table, a job's tasks and a running task's logs.
They refresh when something changed, not on a timer: static/live.js listens to a server-sent event stream
of this console (`/ui/events`: the job event stream reduced to "this job changed"; `/ui/tasks/<id>/logs/
events`: "this task's stdout grew") and asks htmx to re-fetch the fragment, at most once per 300 ms.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from functools import partial, wraps
from typing import Any, TypeVar, cast
from urllib.parse import urlencode

from flask import (
    Blueprint,
    Response,
    current_app,
    redirect,
    render_template,
    request,
    url_for,
)
from flask import g as request_state
from pydantic import ValidationError

from master.api import mapper
from master.api.models import CapacityUpdate
from master.api.observe import JobStream
from master.api.standby import Routing
from master.core import states
from master.core.entities import Job
from master.job_manager import Conflict, JobManager, NotFound, NotLeader
from master.principals import Principal, load_principals, lookup, refusal
from master.ui.auth import COOKIE, CSRF_FIELD, csrf_token, csrf_valid
from master.ui.charts import usage_charts

audit = logging.getLogger("titus.audit")

bp = Blueprint("ui", __name__, url_prefix="/ui", template_folder="templates", static_folder="static")

#: Jobs shown per page: the console lists, the API paginates; a page stays small at 10,000 jobs.
PAGE_SIZE = 100

#: What a redirect after a successful action says, by code (no free text in URLs to reflect).
_DONE = {
    "killed": "Kill requested: the job's tasks are being stopped.",
    "scaled": "Capacity updated.",
    "enabled": "Job enabled.",
    "disabled": "Job disabled.",
    "task_killed": "Kill requested: the task is being stopped.",
    "task_killed_shrunk": "Kill requested, and the job's desired size lowered by one.",
    "lifecycle": "Lifecycle updated.",
}

#: The lifecycle states an operator may set on an agent or an instance group (Titus's).
LIFECYCLE_STATES = ("Active", "PhasedOut", "Removable")

F = TypeVar("F", bound=Callable[..., Any])


@bp.app_template_filter("ui_time")
def ui_time(ms: int | str) -> str:
    """Epoch milliseconds as UTC, to the second: what an operator compares with logs. Titus's timestamps
    are uint64, so proto3 JSON (what the pages are given) carries them as strings."""
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _manager() -> JobManager:
    m: JobManager = current_app.config["MANAGER"]
    return m


def _api_token() -> str:
    token: str = current_app.config["API"].api_token
    return token


def _principals() -> Mapping[str, Principal]:
    """The API's principals (master/principals.py): the console takes the same tokens, with the same roles."""
    principals: Mapping[str, Principal] | None = current_app.config.get("PRINCIPALS")
    return principals if principals is not None else load_principals(_api_token(), None)


def _caller() -> Principal:
    principal: Principal = request_state.ui_principal
    return principal


def _operator() -> str:
    """Who acts through the console: the logged-in principal's e-mail, as the API would record it."""
    return _caller().email


def acts_as(method: str, api_path: str) -> Callable[[F], F]:
    """The console action stands for this API call (`api_path` filled from the view's URL arguments, e.g.
    "/api/v3/jobs/{job_id}"): the logged-in role must be allowed it by the API's own role table
    (master/principals.py `refusal`), else the answer is a 403 page naming the caller and the rule. Goes
    under login_required, which sets the caller."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            why = refusal(_caller().role, method, api_path.format(**kwargs))
            if why is not None:
                return _page("error.html", status=403, message=f"{_caller().email}: {why}")
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorate


def login_required(view: F) -> F:
    """Unauthenticated requests go to the login page (fragments answer 401: htmx must not swap a form in).
    Every POST is CSRF-checked and written to the audit log, as the API's changes are."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        token = (request.cookies.get(COOKIE) or "").strip()
        principal = lookup(_principals(), token) if token else None
        if principal is None:
            if request.headers.get("HX-Request"):
                return Response("not logged in", status=401)
            return redirect(url_for("ui.login", next=request.full_path.rstrip("?")))
        request_state.ui_token, request_state.ui_principal = token, principal
        if request.method != "POST":
            return view(*args, **kwargs)
        if not csrf_valid(request, token):
            return _page(
                "error.html", status=403, message="CSRF check failed: reload the page and try again."
            )
        resp = view(*args, **kwargs)
        audit.info("console %s %s by %s: %d", request.method, request.path, principal.email,
                   getattr(resp, "status_code", 200))
        return resp

    return cast(F, wrapper)


def _page(template: str, status: int = 200, **context: Any) -> Response:
    principal: Principal | None = request_state.get("ui_principal")
    role = principal.role if principal is not None else "read-only"
    html = render_template(
        template,
        csrf_field=CSRF_FIELD,
        csrf=csrf_token(request_state.ui_token) if principal is not None else "",
        # Which forms to show: the role's own API rights (a refused POST is still refused on its own).
        may_change_jobs=refusal(role, "POST", "/api/v3/jobs") is None,
        may_change_fleet=refusal(role, "PUT", "/api/v3/agent/instances/x/lifecycle") is None,
        # What a redirect after a successful action says (?done=code; no free text in URLs to reflect).
        done=_DONE.get(request.args.get("done", ""), ""),
        **context,
    )
    resp = Response(html, status=status, mimetype="text/html")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
    )
    return resp


@bp.before_request
def to_the_leader() -> Response | None:
    """A standby's manager is not the cluster's state: browsers go to the leader's console (and log in there,
    as the cookie belongs to each master's origin); a POST is not replayed across origins but refused."""
    routing: Routing | None = current_app.config.get("ROUTING")
    if routing is None or routing.role() == "leader":
        return None
    leader = routing.leader_url()
    if request.method == "GET" and leader and leader.rstrip("/") != routing.own_url.rstrip("/"):
        return cast(Response, redirect(leader.rstrip("/") + request.full_path.rstrip("?"), 302))
    why = f"use the leader's console at {leader}/ui" if leader else "no leader is known yet"
    resp = _page("error.html", status=503, message=f"This master is not the leader: {why}.")
    resp.headers["Retry-After"] = "1"
    return resp


@bp.get("/login")
def login() -> Response:
    return _page("login.html", next=_safe_next(request.args.get("next")))


@bp.post("/login")
def do_login() -> Response:
    token = request.form.get("token", "").strip()
    nxt = _safe_next(request.form.get("next"))
    if not token or lookup(_principals(), token) is None:
        return _page("login.html", status=401, next=nxt, error="That token is not valid for this master.")
    resp = redirect(nxt)
    resp.set_cookie(
        COOKIE, token.strip(), httponly=True, samesite="Strict", secure=request.is_secure, path="/ui"
    )
    return cast(Response, resp)


@bp.post("/logout")
@login_required
def logout() -> Response:
    resp = redirect(url_for("ui.login"))
    resp.delete_cookie(COOKIE, path="/ui")
    return cast(Response, resp)


def _safe_next(raw: str | None) -> str:
    """Only a path inside the console: an open redirect would turn the login page into a phishing hop."""
    if raw and raw.startswith("/ui/") and not raw.startswith("//") and "\\" not in raw:
        return raw
    return "/ui/jobs"


@bp.get("/")
@login_required
def index() -> Response:
    return cast(Response, redirect(url_for("ui.jobs")))


def _job_filters() -> dict[str, str]:
    return {k: (request.args.get(k) or "").strip() for k in ("state", "app", "owner", "group")}


def _selected_jobs(f: dict[str, str]) -> list[Job]:
    """Filters the jobs themselves: only the page shown becomes wire dicts (10,000 jobs stay cheap)."""
    jobs = _manager().list_jobs(include_finished=f["state"] in ("", states.JOB_FINISHED))
    return [
        j
        for j in jobs
        if (not f["state"] or j.state == f["state"])
        and (not f["app"] or j.descriptor.applicationName == f["app"])
        and (not f["owner"] or j.descriptor.owner.teamEmail == f["owner"])
        and (not f["group"] or j.descriptor.capacityGroup == f["group"])
    ]


def _jobs_url(query: dict[str, str], **extra: int) -> str:
    return url_for("ui.jobs") + "?" + urlencode({**query, **extra})


@bp.get("/jobs")
@login_required
def jobs() -> Response:
    since = _manager().events.last_seq  # before the state is read: the live stream resumes from here
    f = _job_filters()
    page = max(0, _int_arg("page", 0))
    selected = _selected_jobs(f)
    selected.reverse()  # newest first
    chunk = [mapper.job_to_wire(j) for j in selected[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]]
    has_more = (page + 1) * PAGE_SIZE < len(selected)
    query = {k: v for k, v in f.items() if v}
    fragment = bool(request.headers.get("HX-Request")) and request.args.get("fragment") == "1"
    return _page(
        "jobs_table.html" if fragment else "jobs.html",
        jobs=chunk,
        total=len(selected),
        page=page,
        has_more=has_more,
        filters=f,
        job_states=states.JOB_STATES,
        refresh_url=_jobs_url(query, page=page, fragment=1),
        next_url=_jobs_url(query, page=page + 1),
        prev_url=_jobs_url(query, page=page - 1),
        groups=[g["appName"] for g in _manager().list_capacity_groups()],
        since=since,
    )


def _int_arg(name: str, default: int) -> int:
    try:
        return int(request.args.get(name, default))
    except ValueError:
        return default


@bp.get("/jobs/<job_id>")
@login_required
def job(job_id: str, status: int = 200, error: str = "") -> Response:
    since = _manager().events.last_seq  # before the state is read: the live stream resumes from here
    try:
        wire = _manager().get_job(job_id)
    except NotFound:
        return _page("error.html", status=404, message=f"job {job_id} not found")
    tasks = _manager().list_tasks({job_id}, None)
    finished = _manager().list_tasks({job_id}, {states.FINISHED})
    descriptor = wire["jobDescriptor"]
    return _page(
        "job.html",
        status=status,
        job=wire,
        d=descriptor,
        tasks=tasks,
        finished=finished,
        service=descriptor.get("service"),
        active=wire["status"]["state"] == states.JOB_ACCEPTED,
        live=wire["status"]["state"] != states.JOB_FINISHED,
        error=error,
        since=since,
    )


def _act(action: Callable[[], object], page: Callable[..., Response], endpoint: str, done: str,
         **url_values: Any) -> Response:
    """Runs one of the API's operations. Its refusal is shown on `page` (called with the API's status and
    the reason), a missing target on the error page; success redirects to `endpoint` saying `done`."""
    try:
        action()
    except NotFound as exc:
        return _page("error.html", status=404, message=str(exc))
    except Conflict as exc:
        return page(status=409, error=str(exc))
    except ValueError as exc:
        return page(status=400, error=str(exc))
    except NotLeader as exc:
        return page(status=503, error=f"this master cannot accept writes: {exc}")
    target = url_for(endpoint, **url_values) + "?" + urlencode({"done": done})
    return cast(Response, redirect(target, 303))


def _job_act(job_id: str, action: Callable[[], object], done: str) -> Response:
    return _act(action, partial(job, job_id), "ui.job", done, job_id=job_id)


@bp.post("/jobs/<job_id>/kill")
@login_required
@acts_as("DELETE", "/api/v3/jobs/{job_id}")
def kill(job_id: str) -> Response:
    return _job_act(job_id, lambda: _manager().kill_job(job_id, by=_operator()), "killed")


@bp.post("/jobs/<job_id>/scale")
@login_required
@acts_as("PUT", "/api/v3/jobs/{job_id}/capacityAttributes")
def scale(job_id: str) -> Response:
    values: dict[str, int] = {}
    for key in ("min", "desired", "max"):
        raw = (request.form.get(key) or "").strip()
        if raw:
            try:
                values[key] = int(raw)
            except ValueError:
                return job(job_id, status=400, error=f"{key}: must be an integer")
    if not values:
        return job(job_id, status=400, error="desired: give at least one of min, desired, max")
    try:
        update = CapacityUpdate.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(p) for p in first["loc"])
        return job(job_id, status=400, error=f"{path}: {first['msg']}")
    return _job_act(job_id, lambda: _manager().update_capacity(job_id, update), "scaled")


@bp.post("/jobs/<job_id>/enable")
@login_required
@acts_as("POST", "/api/v3/jobs/{job_id}/enable")
def enable(job_id: str) -> Response:
    return _job_act(job_id, lambda: _manager().set_enabled(job_id, True), "enabled")


@bp.post("/jobs/<job_id>/disable")
@login_required
@acts_as("POST", "/api/v3/jobs/{job_id}/disable")
def disable(job_id: str) -> Response:
    return _job_act(job_id, lambda: _manager().set_enabled(job_id, False), "disabled")


@bp.get("/tasks/<task_id>")
@login_required
def task(task_id: str, status: int = 200, error: str = "") -> Response:
    since = _manager().events.last_seq  # before the state is read: the live stream resumes from here
    try:
        wire = _manager().get_task(task_id)
    except NotFound:
        return _page("error.html", status=404, message=f"task {task_id} not found")
    return _page(
        "task.html",
        status=status,
        task=wire,
        running=wire["status"]["state"] != states.FINISHED,
        charts=usage_charts(_manager().task_usage_history(task_id)),
        error=error,
        since=since,
    )


@bp.post("/tasks/<task_id>/kill")
@login_required
@acts_as("DELETE", "/api/v3/tasks/{task_id}")
def kill_task(task_id: str) -> Response:
    """Titus's KillTask, as `DELETE /api/v3/tasks/{id}`: with "shrink", the service's desired drops by one
    (refused, not forced, where that would go below min)."""
    shrink = request.form.get("shrink") == "true"
    return _act(
        lambda: _manager().kill_task(task_id, shrink=shrink, prevent_min_size_update=True, by=_operator()),
        partial(task, task_id), "ui.task", "task_killed_shrunk" if shrink else "task_killed", task_id=task_id,
    )


@bp.get("/tasks/<task_id>/logs")
@login_required
def task_logs(task_id: str) -> Response:
    """What the task log route serves (`task_logs`: the agent's upload, or the tail kept when finished).

    htmx asks for the fragment with both streams, read one after the other: two concurrent log requests
    for one task would share one upload from the agent, and the second would wait out its timeout. When
    the agent did not answer the first (its source is the stored tail), the second is not put to it:
    waiting out log_wait_s twice would keep the page 10 s.
    """
    stream = request.args.get("stream", "stdout")
    if stream not in ("stdout", "stderr"):
        return Response("stream must be stdout or stderr", status=400, mimetype="text/plain")
    try:
        if request.headers.get("HX-Request"):
            out = _log_tail(task_id, "stdout")
            err = _log_tail(task_id, "stderr", ask_agent=out["source"] != "tail")
            return _page("logs.html", texts={"stdout": _text(out), "stderr": _text(err)})
        text = _text(_log_tail(task_id, stream))
    except NotFound:
        return Response(f"task {task_id} not found", status=404, mimetype="text/plain")
    return Response(text, mimetype="text/plain")


#: How long a live stream of the console stays silent before it writes a keep-alive (a closed tab is
#: noticed at that write, and its HTTP thread freed).
LIVE_KEEP_ALIVE_MS = 15_000


#: Console streams open at once, per master: each holds one of the HTTP threads (64) that the agents' long
#: polls need too, so a few dozen open tabs must not starve the agents. Past the cap a stream tells the
#: browser to come back in LIVE_BUSY_RETRY_MS and ends; the page still works, it is just not live meanwhile.
MAX_LIVE_STREAMS = 16
LIVE_BUSY_RETRY_MS = 30_000
_live_lock = threading.Lock()


def _sse(frames: Iterator[str]) -> Response:
    slots: dict[str, int] = current_app.config.setdefault("UI_LIVE_STREAMS", {"open": 0})

    def bounded() -> Iterator[bytes]:
        # The slot is taken when the server starts sending, not before: a response never iterated (the
        # client went away first) would never give it back.
        with _live_lock:
            admitted = slots["open"] < MAX_LIVE_STREAMS
            if admitted:
                slots["open"] += 1
        if not admitted:
            yield f"retry: {LIVE_BUSY_RETRY_MS}\nevent: busy\ndata: {{}}\n\n".encode()
            return
        try:
            for frame in frames:
                yield frame.encode()
        finally:
            with _live_lock:
                slots["open"] -= 1

    resp = Response(bounded(), mimetype="text/event-stream")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Accel-Buffering"] = "no"
    return resp


def _everything(job_id: str, descriptor: dict[str, Any]) -> bool:
    return True


@bp.get("/events")
@login_required
def events() -> Response:
    """Which jobs changed, as they change (`event: change`, data {"job": id}), for live fragments: the
    observe stream (master/api/observe.py) reduced to ids (the fragment is rendered by its own route).
    With ?job=ID: that job's changes, then `event: end` once it is Finished.

    `since` is the event sequence the page was rendered at, so what changed between the render and this
    connection is not missed; when the master no longer has it (or it is absent) the stream starts with a
    snapshot, which is sent as one change: the page cannot know what it missed, so it re-fetches."""
    job_id = request.args.get("job") or None
    raw = request.args.get("since", "")
    since = int(raw) if raw.isdigit() else None
    m = _manager()
    if job_id is not None:
        try:
            m.get_job(job_id)
        except NotFound:
            return Response(f"job {job_id} not found", status=404, mimetype="text/plain")
    stream = JobStream(m, _everything, job_id, since, LIVE_KEEP_ALIVE_MS)

    def frames() -> Iterator[str]:
        for frame in stream:
            message = frame.message
            if "keepAliveResponse" in message:
                yield ": keep-alive\n\n"
            elif "snapshotEnd" in message:  # after a snapshot (no usable `since`, or a resynchronisation)
                yield f"event: change\ndata: {json.dumps({'job': job_id})}\n\n"
            elif frame.seq is not None:  # a change (a snapshot's frames carry no sequence)
                if "jobUpdate" in message:
                    changed = message["jobUpdate"]["job"]["id"]
                else:
                    changed = message["taskUpdate"]["task"]["jobId"]
                yield f"event: change\ndata: {json.dumps({'job': changed})}\n\n"
        # ObserveJob ended: the job is Finished. A master that stops ends the stream too, but without
        # `end` the browser reconnects (EventSource does by itself) to whichever master serves next.
        if not m.closing:
            yield "event: end\ndata: {}\n\n"

    return _sse(frames())


@bp.get("/tasks/<task_id>/logs/events")
@login_required
def task_log_events(task_id: str) -> Response:
    """`event: change` whenever the task's stdout grew, `event: end` when the task has ended: a follow
    read through the agent channel (the one `titus task logs -f` uses, the agent holding it until the
    file grows), so the logs fragment is re-fetched when there is more to show, not on a timer. When no
    agent answers (the stored tail is all there is) it asks again after a few seconds."""
    m = _manager()
    try:
        first = m.task_log_range(task_id, "stdout", 0, 1, 0.0)
    except NotFound:
        return Response(f"task {task_id} not found", status=404, mimetype="text/plain")

    def frames() -> Iterator[str]:
        size, chunk = int(first["size"]), first
        # What was written between the page's own read and this one: the page cannot know, so re-fetch.
        yield "event: change\ndata: {}\n\n"
        while not chunk["final"] and not m.closing:
            chunk = m.task_log_range(task_id, "stdout", size, 1, LOG_FOLLOW_WAIT_S)
            if int(chunk["size"]) > size:
                size = int(chunk["size"])
                yield "event: change\ndata: {}\n\n"
            else:
                yield ": keep-alive\n\n"
                # Nothing new: the read was not held (no agent to answer, or the master's cap on held
                # reads reached), so wait a little before asking again instead of spinning.
                time.sleep(LOG_RETRY_S if chunk["source"] == "agent" else LOG_NO_AGENT_RETRY_S)
        if chunk["final"]:  # the task ended (a stopping master leaves the browser to reconnect)
            yield "event: change\ndata: {}\n\n"
            yield "event: end\ndata: {}\n\n"

    return _sse(frames())


#: How long one follow read of the console may be held by the agent (as the CLI's --follow).
LOG_FOLLOW_WAIT_S = 20.0
#: Pauses before asking again when a read brought nothing new.
LOG_RETRY_S = 0.5
LOG_NO_AGENT_RETRY_S = 3.0


#: How much of a stream the console shows: its last 64 KiB (the CLI's `titus task logs` reads it all).
LOG_TAIL_BYTES = 64 * 1024


def _log_tail(task_id: str, stream: str, ask_agent: bool = True) -> dict[str, Any]:
    """The end of one stream, read through the master's byte-range log call without waiting for growth."""
    return _manager().task_log_range(task_id, stream, -LOG_TAIL_BYTES, LOG_TAIL_BYTES, 0.0, ask_agent)


def _text(chunk: dict[str, Any]) -> str:
    data = chunk["data"]
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)


def _free(view: dict[str, Any]) -> dict[str, float]:
    res, used = view["resources"], view["used"]
    return {k: res[k] - used.get(k, 0) for k in ("cpu", "memoryMB", "diskMB", "networkMbps", "gpu")}


@bp.get("/agents")
@login_required
def agents(status: int = 200, error: str = "") -> Response:
    views = _manager().agent_views()
    for v in views:
        v["free"] = _free(v)
    return _page("agents.html", status=status, agents=views, lifecycle_states=LIFECYCLE_STATES,
                 error=error)


@bp.post("/agents/<agent_id>/lifecycle")
@login_required
@acts_as("PUT", "/api/v3/agent/instances/{agent_id}/lifecycle")
def agent_lifecycle(agent_id: str) -> Response:
    """PUT /api/v3/agent/instances/{id}/lifecycle: PhasedOut drains the agent through the eviction service."""
    return _set_lifecycle(lambda state, detail: _manager().set_agent_lifecycle(agent_id, state, detail),
                          agents, "ui.agents")


@bp.post("/instance-groups/<group_id>/lifecycle")
@login_required
@acts_as("PUT", "/api/v3/agent/instanceGroups/{group_id}/lifecycle")
def instance_group_lifecycle(group_id: str) -> Response:
    """PUT /api/v3/agent/instanceGroups/{id}/lifecycle, for every agent of the group."""
    return _set_lifecycle(
        lambda state, detail: _manager().set_instance_group_lifecycle(group_id, state, detail),
        instance_groups, "ui.instance_groups",
    )


def _set_lifecycle(
    action: Callable[[str, str], object], page: Callable[..., Response], endpoint: str
) -> Response:
    state = request.form.get("state", "")
    if state not in LIFECYCLE_STATES:
        return page(status=400, error=f"state: must be one of {', '.join(LIFECYCLE_STATES)}")
    detail = (request.form.get("detail") or "").strip()[:200] or f"set in the console by {_operator()}"
    return _act(lambda: action(state, detail), page, endpoint, "lifecycle")


@bp.get("/instance-groups")
@login_required
def instance_groups(status: int = 200, error: str = "") -> Response:
    views = {v["id"]: v for v in _manager().agent_views()}
    groups = _manager().list_instance_groups()
    for g in groups:
        members = [views[a] for a in g["agentIds"] if a in views]
        g["free"] = {
            k: sum(_free(m)[k] for m in members) for k in ("cpu", "memoryMB", "diskMB", "networkMbps", "gpu")
        }
    return _page("instance_groups.html", status=status, groups=groups, lifecycle_states=LIFECYCLE_STATES,
                 error=error)


_DIMS = ("cpu", "memoryMB", "diskMB", "networkMbps")


@bp.get("/capacity-groups")
@login_required
def capacity_groups() -> Response:
    """Reservation (instanceCount x resourceDimension) against what the group's placed tasks hold."""
    used: dict[str, dict[str, float]] = {}
    running: dict[str, int] = {}
    resources: dict[str, dict[str, Any]] = {}  # per job: Titus's Task carries none, its job's container does
    for t in _manager().list_tasks(None, None):
        ctx = t["taskContext"]
        if "agent.id" not in ctx or "task.capacityGroup" not in ctx:
            continue
        if t["jobId"] not in resources:
            try:
                job = _manager().get_job(t["jobId"])
            except NotFound:
                continue
            resources[t["jobId"]] = job["jobDescriptor"]["container"].get("resources", {})
        group = ctx["task.capacityGroup"]
        running[group] = running.get(group, 0) + 1
        acc = used.setdefault(group, dict.fromkeys(_DIMS, 0.0))
        for k in _DIMS:
            acc[k] += float(resources[t["jobId"]].get(k, 0))
    rows = []
    for g in _manager().list_capacity_groups():
        dim = g["resourceDimension"]
        reserved = {k: float(dim.get(k, 0)) * g["instanceCount"] for k in _DIMS}
        rows.append(
            {
                "group": g,
                "reserved": reserved,
                "used": used.get(g["appName"], dict.fromkeys(_DIMS, 0.0)),
                "tasks": running.get(g["appName"], 0),
            }
        )
    return _page("capacity_groups.html", rows=rows, dims=_DIMS)
