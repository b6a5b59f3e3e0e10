"""/api/v3/jobs: submit, query, scale, enable/disable and kill jobs."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from master.api.app import caller_email, manager, paginate, parse_body
from master.api.errors import ApiError, bad_request
from master.api.models import CapacityUpdate, JobDescriptor
from master.core import states
from master.scheduler.constraints import validate_constraints

bp = Blueprint("jobs", __name__, url_prefix="/api/v3/jobs")

_JOB_TYPES = {"BATCH", "SERVICE"}


@bp.post("")
def create_job() -> tuple[Response, int]:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= 255:
        raise bad_request("Idempotency-Key must be 1 to 255 characters", "Idempotency-Key", "bad length")
    descriptor = parse_body(JobDescriptor, "job descriptor", fill=_owner_from_caller)
    _check_against_cluster(descriptor)
    job_id, created = manager().submit(descriptor, key)
    resp = jsonify({"id": job_id})
    if not created:
        resp.headers["Idempotent-Replayed"] = "true"
    resp.headers["Location"] = f"/api/v3/jobs/{job_id}"
    return resp, 202


def _owner_from_caller(body: dict[str, Any]) -> None:
    """owner.teamEmail defaults to the caller's e-mail when absent (the Titus proto's rule)."""
    email = caller_email()
    owner = body.get("owner")
    if email is not None and owner is None:
        body["owner"] = {"teamEmail": email}
    elif email is not None and isinstance(owner, dict) and "teamEmail" not in owner:
        owner["teamEmail"] = email


def _check_against_cluster(descriptor: JobDescriptor) -> None:
    """Rules that need the cluster's configuration: the capacity group must exist, constraints be known."""
    fields = []
    if not manager().capacity_group_exists(descriptor.capacityGroup):
        fields.append(
            {
                "path": "capacityGroup",
                "reason": f"unknown capacity group {descriptor.capacityGroup!r}"
                " (see /api/v3/management/applications)",
            }
        )
    for kind in ("hardConstraints", "softConstraints"):
        constraints = getattr(descriptor.container, kind).constraints
        for key, reason in validate_constraints(constraints):
            fields.append({"path": f"container.{kind}.constraints.{key}", "reason": reason})
    if fields:
        summary = "; ".join(f"{f['path']}: {f['reason']}" for f in fields[:5])
        raise ApiError(400, f"invalid job descriptor: {summary}", fields)


@bp.get("")
def list_jobs() -> dict[str, Any]:
    job_state = request.args.get("jobState")
    if job_state and job_state not in states.JOB_STATES:
        raise bad_request(
            f"jobState must be one of {', '.join(states.JOB_STATES)}", "jobState", "unknown state"
        )
    job_type = (request.args.get("jobType") or "").upper()
    if job_type and job_type not in _JOB_TYPES:
        raise bad_request("jobType must be BATCH or SERVICE", "jobType", "unknown job type")
    app_name = request.args.get("applicationName")
    group = request.args.get("capacityGroup")
    owner = request.args.get("owner")
    jobs = manager().list_jobs(include_finished=job_state == states.JOB_FINISHED)
    selected = [
        j.to_wire()
        for j in jobs
        if (not job_state or j.state == job_state)
        and (not job_type or j.descriptor.job_type == job_type)
        and (not app_name or j.descriptor.applicationName == app_name)
        and (not group or j.descriptor.capacityGroup == group)
        and (not owner or j.descriptor.owner.teamEmail == owner)
    ]
    return paginate(selected)


@bp.get("/<job_id>")
def get_job(job_id: str) -> dict[str, Any]:
    return manager().get_job(job_id)


@bp.delete("/<job_id>")
def kill_job(job_id: str) -> dict[str, Any]:
    manager().kill_job(job_id, by=caller_email() or "user")
    return {}


@bp.put("/<job_id>/instances")
def update_capacity(job_id: str) -> dict[str, Any]:
    update = parse_body(CapacityUpdate, "capacity")
    try:
        manager().update_capacity(job_id, update)
    except ValueError as exc:
        raise bad_request(str(exc), "desired", str(exc)) from exc
    return manager().get_job(job_id)


@bp.post("/<job_id>/enable")
def enable(job_id: str) -> dict[str, Any]:
    manager().set_enabled(job_id, True)
    return {}


@bp.post("/<job_id>/disable")
def disable(job_id: str) -> dict[str, Any]:
    manager().set_enabled(job_id, False)
    return {}
