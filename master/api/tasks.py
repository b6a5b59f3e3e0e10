"""/api/v3/tasks: Titus's task operations over REST (find, kill, attributes), plus the task's logs.

Answers are Titus's Task / TaskQueryResult (master/api/mapper.py) or google.protobuf.Empty (`{}`).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from master.api import mapper
from master.api.app import (
    caller_email,
    manager,
    paginate,
    parse_body,
    query_bool,
    query_int,
    time_window,
)
from master.api.errors import bad_request
from master.api.jobs import attribute_keys
from master.api.models import TaskAttributesUpdate, TaskMoveRequest
from master.core import states

#: Titus always returns these, whatever `fields` asks for.
_TASK_ALWAYS = ("id", "jobId")

bp = Blueprint("tasks", __name__, url_prefix="/api/v3/tasks")


def _csv(name: str) -> set[str] | None:
    raw = request.args.get(name)
    if not raw:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()} or None


@bp.get("")
def list_tasks() -> dict[str, Any]:
    task_states = _csv("taskStates")
    if task_states is not None:
        unknown = task_states - set(states.TASK_STATES)
        if unknown:
            raise bad_request(f"unknown task state(s): {', '.join(sorted(unknown))}", "taskStates",
                              f"must be among {', '.join(states.TASK_STATES)}")
    in_window = time_window()
    tasks = manager().list_tasks(_csv("jobIds"), task_states)
    task_ids = _csv("taskIds")
    if task_ids is not None:
        tasks = [t for t in tasks if t["id"] in task_ids]
    tasks = [t for t in tasks if in_window(int(t["status"]["timestamp"]))]
    fields = mapper.parse_fields(request.args.getlist("fields"))
    return paginate([mapper.project(t, fields, _TASK_ALWAYS) for t in tasks])


@bp.post("/move")
def move_task() -> dict[str, Any]:
    """MoveTask: a Started task from one service job to another, compatible one (TaskMoveRequest)."""
    move = parse_body(TaskMoveRequest, "task move")
    for name in ("sourceJobId", "targetJobId", "taskId"):
        if not getattr(move, name):
            raise bad_request(f"{name} is required", name, "field required")
    manager().move_task(move.sourceJobId, move.targetJobId, move.taskId)
    return {}


@bp.get("/<task_id>")
def get_task(task_id: str) -> dict[str, Any]:
    return manager().get_task(task_id)


@bp.delete("/<task_id>")
def kill_task(task_id: str) -> dict[str, Any]:
    manager().kill_task(
        task_id,
        shrink=query_bool("shrink", False),
        prevent_min_size_update=query_bool("preventMinSizeUpdate", False),
        by=caller_email() or "user",
    )
    return {}


@bp.put("/<task_id>/attributes")
def update_task_attributes(task_id: str) -> dict[str, Any]:
    update = parse_body(TaskAttributesUpdate, "task attributes")
    if update.taskId and update.taskId != task_id:
        raise bad_request("taskId in the body differs from the path", "taskId", "must match the path")
    if not update.attributes:
        raise bad_request("attributes must not be empty", "attributes", "no attributes to update")
    manager().update_task_attributes(task_id, update.attributes)
    return {}


@bp.delete("/<task_id>/attributes")
def delete_task_attributes(task_id: str) -> dict[str, Any]:
    manager().delete_task_attributes(task_id, attribute_keys())
    return {}


MAX_LOG_CHUNK = 1 << 20  # bytes per answer; a client pages with offset for more
MAX_LOG_WAIT_MS = 30_000


@bp.get("/<task_id>/logs")
def task_logs(task_id: str) -> Response:
    """A byte range of the task's stdout or stderr (docs/cli.md, "Logs"). `offset` counts from the start of
    the stream, or from its end when negative (default: the last MAX_LOG_CHUNK bytes); `limit` caps the
    answer; `waitMs` > 0 holds the request until there is something past `offset` or the task ended (follow).
    The X-Titus-Log-* headers say which range this is, so a client can ask for the next one."""
    stream = request.args.get("stream", "stdout")
    if stream not in ("stdout", "stderr"):
        raise bad_request("stream must be stdout or stderr", "stream", "must be stdout or stderr")
    offset = query_int("offset", -MAX_LOG_CHUNK, -(2**62), 2**62)
    limit = query_int("limit", MAX_LOG_CHUNK, 1, MAX_LOG_CHUNK)
    wait_ms = query_int("waitMs", 0, 0, MAX_LOG_WAIT_MS)
    chunk = manager().task_log_range(task_id, stream, offset, limit, wait_ms / 1000)
    headers = {
        "X-Titus-Log-Offset": str(chunk["offset"]),
        "X-Titus-Log-Size": str(chunk["size"]),
        "X-Titus-Log-Start": str(chunk["start"]),
        "X-Titus-Log-Final": "true" if chunk["final"] else "false",
        "X-Titus-Log-Source": chunk["source"],
    }
    return Response(chunk["data"], mimetype="text/plain", headers=headers)
