"""/api/v3/scheduler: Titus's SchedulerService over REST, the part this platform has (GetSchedulingResult)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from master.api.app import manager

bp = Blueprint("scheduler", __name__, url_prefix="/api/v3/scheduler")


@bp.get("/results/<task_id>")
def scheduling_result(task_id: str) -> dict[str, Any]:
    """SchedulingResultEvent: `success` for a placed task, else `failures` (reason, agents it excluded)."""
    return manager().scheduling_result(task_id)
