"""/api/v3/tasks: query and kill tasks, read their logs."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from master.api.app import caller_email, manager, paginate, query_bool
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
    manager().kill_task(task_id, shrink=query_bool("shrink", False), by=caller_email() or "user")
    return {}


@bp.get("/<task_id>/logs")
def task_logs(task_id: str) -> Response:
    stream = request.args.get("stream", "stdout")
    if stream not in ("stdout", "stderr"):
        raise bad_request("stream must be stdout or stderr", "stream", "must be stdout or stderr")
    text = manager().task_logs(task_id, stream)
    return Response(text, mimetype="text/plain")
