"""Agent identity routes: bootstrap tokens and credentials (API token), enrolment (a bootstrap token).

Operators create bootstrap tokens and list or revoke agents' credentials; an agent enrols once with a
bootstrap token and gets its own credential (master/agent_auth.py has the rules).
"""

from __future__ import annotations

from typing import Annotated, Any

from flask import Blueprint, g
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from master.agent_auth import MAX_BOOTSTRAP_TTL_S, MAX_BOOTSTRAP_USES
from master.api.app import manager, parse_body

bp = Blueprint("credentials", __name__, url_prefix="/api/v3/agent")

#: The one route that takes a bootstrap token (master/api/app.py authenticates it).
ENROL_PATH = "/api/v3/agent/enrol"
_AGENT_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,252}$"


class BootstrapTokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ttlSeconds: Annotated[StrictInt, Field(ge=1, le=MAX_BOOTSTRAP_TTL_S)] = 3600
    uses: Annotated[StrictInt, Field(ge=1, le=MAX_BOOTSTRAP_USES)] = 1
    description: Annotated[StrictStr, Field(max_length=200)] = ""


class EnrolRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agentId: Annotated[StrictStr, Field(pattern=_AGENT_ID)]
    # EC2 (the agent read it from IMDSv2): registrations under this credential must carry the same
    # attributes.instanceId. Claimed by the agent; not yet checked against the signed identity document.
    instanceId: Annotated[StrictStr, Field(pattern=r"^i-[0-9a-f]{8,17}$")] | None = None


@bp.post("/bootstrapTokens")
def create_bootstrap_token() -> tuple[dict[str, Any], int]:
    """The token's secret is in this answer only; the master keeps its hash."""
    body = parse_body(BootstrapTokenRequest, "bootstrap token request")
    return manager().create_bootstrap_token(body.ttlSeconds, body.uses, body.description), 201


@bp.get("/bootstrapTokens")
def list_bootstrap_tokens() -> dict[str, Any]:
    return {"items": manager().list_bootstrap_tokens()}


@bp.delete("/bootstrapTokens/<token_id>")
def delete_bootstrap_token(token_id: str) -> dict[str, Any]:
    manager().delete_bootstrap_token(token_id)
    return {}


@bp.post("/enrol")
def enrol() -> dict[str, Any]:
    body = parse_body(EnrolRequest, "enrolment")
    return manager().enrol(g.bootstrap_token, body.agentId, body.instanceId or "")


@bp.get("/credentials")
def list_credentials() -> dict[str, Any]:
    return {"items": manager().list_credentials()}


@bp.delete("/credentials/<agent_id>")
def revoke_credential(agent_id: str) -> dict[str, Any]:
    """Revoke the agent's credential; the agent is treated as lost and its tasks replaced."""
    return manager().revoke_agent(agent_id)
