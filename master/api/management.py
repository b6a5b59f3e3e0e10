"""Capacity groups (/api/v3/management/applications) and agent pools (/api/v3/agent/instanceGroups)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from master.api.app import manager, parse_body
from master.api.models import ApplicationSla, LifecycleUpdate

bp = Blueprint("management", __name__)


@bp.get("/api/v3/management/applications")
def list_groups() -> Response:
    return jsonify(manager().list_capacity_groups())


@bp.get("/api/v3/management/applications/<name>")
def get_group(name: str) -> dict[str, Any]:
    return manager().get_capacity_group(name)


@bp.post("/api/v3/management/applications")
def create_group() -> tuple[dict[str, Any], int]:
    sla = parse_body(ApplicationSla, "capacity group")
    return manager().put_capacity_group(sla, create=True), 201


@bp.put("/api/v3/management/applications/<name>")
def update_group(name: str) -> dict[str, Any]:
    sla = parse_body(ApplicationSla, "capacity group")
    if sla.appName != name:
        from master.api.errors import bad_request

        raise bad_request("appName must match the name in the path", "appName", "does not match the path")
    return manager().put_capacity_group(sla, create=False)


@bp.delete("/api/v3/management/applications/<name>")
def delete_group(name: str) -> dict[str, Any]:
    manager().delete_capacity_group(name)
    return {}


@bp.get("/api/v3/agent/instanceGroups")
def list_instance_groups() -> dict[str, Any]:
    return {"items": manager().list_instance_groups()}


@bp.get("/api/v3/agent/instanceGroups/<group_id>")
def get_instance_group(group_id: str) -> dict[str, Any]:
    return manager().get_instance_group(group_id)


@bp.put("/api/v3/agent/instanceGroups/<group_id>/lifecycle")
def set_instance_group_lifecycle(group_id: str) -> dict[str, Any]:
    update = parse_body(LifecycleUpdate, "lifecycle update")
    return manager().set_instance_group_lifecycle(group_id, update.lifecycleState, update.detail)


@bp.put("/api/v3/agent/instances/<agent_id>/lifecycle")
def set_agent_lifecycle(agent_id: str) -> dict[str, Any]:
    update = parse_body(LifecycleUpdate, "lifecycle update")
    return manager().set_agent_lifecycle(agent_id, update.lifecycleState, update.detail)
