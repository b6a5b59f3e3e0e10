"""/api/v3/tasks: query and kill tasks, read their logs."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from master.api.app import manager, paginate, query_bool, query_int
from master.api.errors import bad_request
from master.core import states

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
    return paginate(manager().list_tasks(_csv("jobIds"), task_states))


@bp.get("/<task_id>")
def get_task(task_id: str) -> dict[str, Any]:
    return manager().get_task(task_id)


@bp.delete("/<task_id>")
def kill_task(task_id: str) -> dict[str, Any]:
    manager().kill_task(task_id, shrink=query_bool("shrink", False))
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
