"""/api/v3/jobs: Titus's job management operations over REST (JobManagementSpringResource's routes).

Bodies are the proto messages Titus's REST gateway takes (Capacity, JobCapacityWithOptionalAttributes,
ServiceJobSpec.ServiceJobProcesses, JobDisruptionBudget, JobAttributesUpdate); answers are Titus's
messages (JobId, Job, JobQueryResult) or google.protobuf.Empty (`{}`), built by master/api/mapper.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, jsonify, request
from pydantic import ValidationError

from master.api import mapper, observe
from master.api.app import caller_email, manager, paginate, parse_body, query_int, time_window
from master.api.errors import ApiError, bad_request, validation_error
from master.api.models import (
    Capacity,
    CapacityUpdate,
    JobAttributesUpdate,
    JobDescriptor,
    JobDisruptionBudget,
    ServiceJobProcesses,
)
from master.core import states
from master.scheduler.constraints import validate_constraints

bp = Blueprint("jobs", __name__, url_prefix="/api/v3/jobs")

_JOB_TYPES = {"BATCH", "SERVICE"}
#: Titus always returns these, whatever `fields` asks for.
_JOB_ALWAYS = ("id",)



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


def _csv(name: str) -> set[str] | None:
    raw = request.args.get(name)
    if not raw:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()} or None


def _attribute_filter() -> Callable[[dict[str, str]], bool] | None:
    """Titus's `attributes` criterion: `key` (present) or `key:value`, comma separated; a key given with
    several values matches any of them; `attributes.op` is `and` (default) or `or` across keys."""
    raw = request.args.get("attributes")
    if not raw:
        return None
    op = (request.args.get("attributes.op") or "and").lower()
    if op not in ("and", "or"):
        raise bad_request("attributes.op must be and or or", "attributes.op", "must be and or or")
    wanted: dict[str, set[str] | None] = {}
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        key, sep, value = part.partition(":")
        if not sep:
            wanted.setdefault(key, None)
        else:
            values = wanted.get(key) or set()
            values.add(value)
            wanted[key] = values

    def one(attrs: dict[str, str], key: str, values: set[str] | None) -> bool:
        return key in attrs and (values is None or attrs[key] in values)

    combine = all if op == "and" else any
    return lambda attrs: combine(one(attrs, k, v) for k, v in wanted.items())


#: Titus's exact-match criteria and where each is in a descriptor's wire form.
_EXACT = {
    "applicationName": ("applicationName",),
    "capacityGroup": ("capacityGroup",),
    "owner": ("owner", "teamEmail"),
    "imageName": ("container", "image", "name"),
    "imageTag": ("container", "image", "tag"),
    "jobGroupStack": ("jobGroupInfo", "stack"),
    "jobGroupDetail": ("jobGroupInfo", "detail"),
    "jobGroupSequence": ("jobGroupInfo", "sequence"),
}


def _at(doc: Any, path: tuple[str, ...]) -> str:
    for key in path:
        doc = doc.get(key, "") if isinstance(doc, dict) else ""
    return str(doc or "")


def job_filter() -> Callable[[str, dict[str, Any]], bool]:
    """Titus's job filtering criteria from the query (find and observe alike), read now, applied later to
    (job id, descriptor in wire form)."""
    job_type = (request.args.get("jobType") or "").upper()
    if job_type and job_type not in _JOB_TYPES:
        raise bad_request("jobType must be BATCH or SERVICE", "jobType", "unknown job type")
    job_ids = _csv("jobIds")
    attrs = _attribute_filter()
    exact = {name: request.args[name] for name in _EXACT if request.args.get(name)}

    def matches(job_id: str, descriptor: dict[str, Any]) -> bool:
        if job_ids is not None and job_id not in job_ids:
            return False
        if job_type and ("batch" in descriptor) != (job_type == "BATCH"):
            return False
        if any(_at(descriptor, _EXACT[name]) != value for name, value in exact.items()):
            return False
        return attrs is None or attrs(dict(descriptor.get("attributes") or {}))

    return matches


@bp.get("")
def list_jobs() -> dict[str, Any]:
    """FindJobs: Titus's filtering criteria as query parameters, `page`/`pageSize`/`cursor`, `fields`."""
    job_state = request.args.get("jobState")
    if job_state and job_state not in states.JOB_STATES:
        raise bad_request(
            f"jobState must be one of {', '.join(states.JOB_STATES)}", "jobState", "unknown state"
        )
    matches = job_filter()
    in_window = time_window()
    fields = mapper.parse_fields(request.args.getlist("fields"))
    jobs = manager().list_jobs(include_finished=job_state == states.JOB_FINISHED)
    selected = [
        mapper.project(mapper.job_to_wire(j), fields, _JOB_ALWAYS)
        for j in jobs
        if (not job_state or j.state == job_state)
        and in_window(j.machine.status.timestamp_ms)
        and matches(j.id, j.descriptor_json())
    ]
    return paginate(selected)


def _observe(job_id: str | None) -> Response:
    raw = request.headers.get("Last-Event-ID") or request.args.get("since")
    since: int | None = None
    if raw:
        if not raw.isdigit():
            raise bad_request("Last-Event-ID (or since) must be a sequence this master sent", "Last-Event-ID",
                              "not a sequence number")
        since = int(raw)
    keep_alive_ms = query_int("keepAliveMs", observe.DEFAULT_KEEP_ALIVE_MS, 100, 60_000)
    matches = job_filter()
    m = manager()
    if job_id is not None:
        m.get_job(job_id)  # 404 before the stream starts
    stream = observe.JobStream(m, matches, job_id, since, keep_alive_ms)
    resp = Response(stream.chunks(), mimetype="text/event-stream")
    resp.headers["Cache-Control"] = "no-cache"
    return resp


@bp.get("/observe")
def observe_jobs() -> Response:
    """ObserveJobs: every active job matching the find filters, then every change (master/api/observe.py)."""
    return _observe(None)


@bp.get("/<job_id>/observe")
def observe_job(job_id: str) -> Response:
    """ObserveJob: one job and its tasks, until the job is Finished."""
    return _observe(job_id)


@bp.get("/<job_id>")
def get_job(job_id: str) -> dict[str, Any]:
    return manager().get_job(job_id)


@bp.delete("/<job_id>")
def kill_job(job_id: str) -> dict[str, Any]:
    manager().kill_job(job_id, by=caller_email() or "user")
    return {}


def _capacity(job_id: str, update: CapacityUpdate) -> dict[str, Any]:
    try:
        manager().update_capacity(job_id, update)
    except ValueError as exc:
        raise bad_request(str(exc), "desired", str(exc)) from exc
    return {}


@bp.put("/<job_id>/instances")
def update_capacity(job_id: str) -> dict[str, Any]:
    """UpdateJobCapacity: the body is a whole Capacity (an omitted bound is proto3's 0)."""
    return _capacity(job_id, CapacityUpdate.of(parse_body(Capacity, "capacity")))


@bp.put("/<job_id>/capacityAttributes")
def update_capacity_attributes(job_id: str) -> dict[str, Any]:
    """UpdateJobCapacityWithOptionalAttributes: only the bounds present change."""
    return _capacity(job_id, parse_body(CapacityUpdate, "capacity"))


@bp.post("/<job_id>/enable")
def enable(job_id: str) -> dict[str, Any]:
    manager().set_enabled(job_id, True)
    return {}


@bp.post("/<job_id>/disable")
def disable(job_id: str) -> dict[str, Any]:
    manager().set_enabled(job_id, False)
    return {}


def _descriptor_change(action: Callable[[], None], what: str) -> dict[str, Any]:
    """Runs a change that re-validates the descriptor; a rule it breaks is the client's 400."""
    try:
        action()
    except ValidationError as exc:
        raise validation_error(exc, what) from exc
    return {}


@bp.put("/<job_id>/jobprocesses")
def update_job_processes(job_id: str) -> dict[str, Any]:
    processes = parse_body(ServiceJobProcesses, "job processes")
    return _descriptor_change(lambda: manager().update_job_processes(job_id, processes), "job processes")


@bp.put("/<job_id>/disruptionBudget")
def update_disruption_budget(job_id: str) -> dict[str, Any]:
    budget = parse_body(JobDisruptionBudget, "disruption budget")
    return _descriptor_change(
        lambda: manager().update_disruption_budget(job_id, budget), "disruption budget"
    )


@bp.put("/<job_id>/attributes")
def update_job_attributes(job_id: str) -> dict[str, Any]:
    update = parse_body(JobAttributesUpdate, "job attributes")
    if update.jobId and update.jobId != job_id:
        raise bad_request("jobId in the body differs from the path", "jobId", "must match the path")
    if not update.attributes:
        raise bad_request("attributes must not be empty", "attributes", "no attributes to update")
    for key in update.attributes:
        if key.lower().startswith("titus"):
            raise bad_request(
                f"attribute {key!r} is reserved",
                f"attributes.{key}",
                "names starting with 'titus' are reserved",
            )
    return _descriptor_change(
        lambda: manager().update_job_attributes(job_id, update.attributes), "job attributes"
    )


def attribute_keys() -> list[str]:
    """`?keys=a,b` of the attribute deletes (Titus: required and non-empty)."""
    keys = sorted({k.strip() for k in request.args.get("keys", "").split(",") if k.strip()})
    if not keys:
        raise bad_request("query parameter keys is required (comma separated)", "keys", "must not be empty")
    return keys


@bp.delete("/<job_id>/attributes")
def delete_job_attributes(job_id: str) -> dict[str, Any]:
    keys = attribute_keys()
    return _descriptor_change(lambda: manager().delete_job_attributes(job_id, keys), "job attributes")
