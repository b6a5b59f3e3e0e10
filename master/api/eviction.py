"""Titus's eviction API (/api/v3/eviction): quotas per system, tier, capacity group and job, and the
termination of a task through the disruption budgets. A thin view over master/eviction.py."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from master.api.app import manager
from master.api.errors import bad_request

bp = Blueprint("eviction", __name__)

_TIERS = {"flex": "flex", "critical": "critical"}


@bp.get("/api/v3/eviction/quotas/system")
def system_quota() -> dict[str, Any]:
    return manager().eviction_quota_system()


@bp.get("/api/v3/eviction/quotas/tiers/<tier>")
def tier_quota(tier: str) -> dict[str, Any]:
    # Titus parses the tier ignoring case (Flex, flex, FLEX).
    name = _TIERS.get(tier.lower())
    if name is None:
        raise bad_request(f"unknown tier {tier!r}: Flex or Critical", "tier", "must be Flex or Critical")
    return manager().eviction_quota_scope(tier=name)


@bp.get("/api/v3/eviction/quotas/capacityGroups/<name>")
def capacity_group_quota(name: str) -> dict[str, Any]:
    return manager().eviction_quota_scope(capacity_group=name)


@bp.get("/api/v3/eviction/quotas/jobs/<job_id>")
def job_quota(job_id: str) -> dict[str, Any]:
    return manager().eviction_quota_job(job_id)


@bp.delete("/api/v3/eviction/tasks/<task_id>")
def terminate_task(task_id: str) -> dict[str, Any]:
    """200 with Titus's TaskTerminateResponse either way: a refusal is an answer, not an error."""
    reason = request.args.get("reason", "")
    if len(reason) > 1024:
        raise bad_request("reason is at most 1024 characters", "reason", "too long")
    return manager().terminate_task(task_id, reason)
