"""/api/v3/agent: the agents' channel (register, long-poll desired set, report) and the agents' list.

The master never connects to agents: everything flows on requests the agents make (DESIGN.md #1).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from flask import Blueprint, g

from master.api.app import manager, parse_body, query_int
from master.api.errors import ApiError, bad_request
from master.api.models import AgentRegistration, AgentStatusReport, LogUpload

bp = Blueprint("agents", __name__, url_prefix="/api/v3/agent")

MAX_WAIT_MS = 60_000
#: Per stream of one log upload; the agent sends a tail of 16 KiB by default (TITUS_LOG_TAIL_BYTES).


@bp.get("/instances")
def list_agents() -> dict[str, Any]:
    return {"items": manager().agent_views()}


@bp.post("/instances/register")
def register() -> dict[str, Any]:
    reg = parse_body(AgentRegistration, "agent registration")
    if g.agent_id is not None and reg.id != g.agent_id:  # an enrolled agent registers only as itself
        raise ApiError(403, f"this credential is agent {g.agent_id}'s, not {reg.id}'s",
                       [{"path": "id", "reason": "not the agent this credential was issued to"}])
    bound_instance = g.get("agent_instance_id", "")
    if g.agent_id is not None and bound_instance and reg.attributes.get("instanceId") != bound_instance:
        raise ApiError(403, f"agent {g.agent_id} enrolled from instance {bound_instance}",
                       [{"path": "attributes.instanceId", "reason": f"must be {bound_instance}"}])
    return manager().register_agent(reg)


@bp.get("/instances/<agent_id>/assignments")
def assignments(agent_id: str) -> dict[str, Any]:
    since = query_int("since", -1, -1, 2**62)
    session = query_int("session", 0, 0, 2**63)
    wait_ms = query_int("waitMs", 20_000, 0, MAX_WAIT_MS)
    return manager().desired_set(agent_id, session, since, wait_ms / 1000)


@bp.post("/instances/<agent_id>/status")
def status(agent_id: str) -> dict[str, Any]:
    manager().agent_report(agent_id, parse_body(AgentStatusReport, "status report"))
    return {}


@bp.post("/instances/<agent_id>/logs/<task_id>")
def upload_logs(agent_id: str, task_id: str) -> dict[str, Any]:
    body = parse_body(LogUpload, "log upload")
    if len(body.dataB64) > 2_000_000:
        raise bad_request("log upload too large", "dataB64", "at most 2 MB per upload")
    try:
        data = base64.b64decode(body.dataB64, validate=True)
    except binascii.Error as exc:
        raise bad_request("dataB64 is not base64", "dataB64", "not base64") from exc
    manager().log_chunk(agent_id, task_id, body.sessionEpoch, body.requestId, {
        "data": data, "offset": body.offset, "size": body.size, "start": body.start, "final": body.final,
        "found": body.found, "source": "agent"})
    return {}
