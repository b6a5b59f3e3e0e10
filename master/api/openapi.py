"""The OpenAPI 3 document, generated from the same pydantic models that validate requests.

Request schemas cannot drift from the code because they are the code; paths are listed here once, next to
the blueprints they describe (tests fuzz the server against this document with schemathesis).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from flask import Blueprint
from pydantic import BaseModel

from master.api.credentials import BootstrapTokenRequest, EnrolRequest
from master.api.models import (
    AgentRegistration,
    AgentStatusReport,
    CapacityUpdate,
    JobDescriptor,
    LogUpload,
)
from master.core import states

bp = Blueprint("openapi", __name__)

_ERROR = {
    "type": "object",
    "required": ["error", "fields"],
    "properties": {
        "error": {"type": "string"},
        "fields": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["path", "reason"],
                "properties": {"path": {"type": "string"}, "reason": {"type": "string"}},
            },
        },
    },
}


def _schemas() -> dict[str, Any]:
    defs: dict[str, Any] = {}
    models: list[type[BaseModel]] = [
        JobDescriptor,
        CapacityUpdate,
        AgentRegistration,
        AgentStatusReport,
        LogUpload,
        BootstrapTokenRequest,
        EnrolRequest,
    ]
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        defs.update(schema.pop("$defs", {}))
        defs[model.__name__] = schema
    defs["Error"] = _ERROR
    return defs


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Invalid input; `fields` names each offending field",
        401: "Missing or wrong bearer token",
        403: "The caller's role or agent credential does not allow this",
        404: "No such entity",
        409: "Illegal in the entity's current state",
        413: "Request body over the master's limit (1 MiB by default)",
        415: "Request body that is not application/json",
        503: "This master cannot write now; retry",
    }
    return {
        str(c): {"description": text[c], "content": {"application/json": {"schema": _ref("Error")}}}
        for c in codes
    }


def _ok(description: str, schema: dict[str, Any] | None = None, status: str = "200") -> dict[str, Any]:
    return {
        status: {
            "description": description,
            "content": {"application/json": {"schema": schema or {"type": "object"}}},
        }
    }


def _body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_PAGING = [
    _query("page", {"type": "integer", "minimum": 0, "maximum": 1_000_000}, "Page number, from 0"),
    _query("pageSize", {"type": "integer", "minimum": 1, "maximum": 1000}, "Items per page (default 100)"),
    _query("cursor", {"type": "string"}, "Cursor from the previous page's pagination.cursor"),
]


@cache
def document() -> dict[str, Any]:
    job_id = [_path_param("jobId")]
    task_id = [_path_param("taskId")]
    paths: dict[str, Any] = {
        "/healthz": {
            "get": {
                "summary": "Liveness and leadership",
                "security": [],
                "responses": {**_ok("Healthy leader"), **_errors(503)},
            }
        },
        "/api/v3/jobs": {
            "post": {
                "summary": "Submit a job",
                "requestBody": _body("JobDescriptor"),
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                    }
                ],
                "responses": {
                    **_ok(
                        "Accepted: the job is durable",
                        {"type": "object", "properties": {"id": {"type": "string"}}},
                        "202",
                    ),
                    **_errors(400, 401, 503),
                },
            },
            "get": {
                "summary": "List jobs",
                "parameters": [
                    _query("jobState", {"type": "string", "enum": list(states.JOB_STATES)}, "Job state"),
                    _query("applicationName", {"type": "string"}, "Exact application name"),
                    _query("capacityGroup", {"type": "string"}, "Exact capacity group"),
                    _query("jobType", {"type": "string", "enum": ["BATCH", "SERVICE"]}, "Job type"),
                    _query("owner", {"type": "string"}, "Owner team email"),
                    *_PAGING,
                ],
                "responses": {**_ok("A page of jobs"), **_errors(400, 401)},
            },
        },
        "/api/v3/jobs/{jobId}": {
            "get": {
                "summary": "One job",
                "parameters": job_id,
                "responses": {**_ok("The job"), **_errors(401, 404)},
            },
            "delete": {
                "summary": "Kill a job",
                "parameters": job_id,
                "responses": {**_ok("Kill initiated"), **_errors(401, 404, 409, 503)},
            },
        },
        "/api/v3/jobs/{jobId}/instances": {
            "put": {
                "summary": "Change a service job's capacity",
                "parameters": job_id,
                "requestBody": _body("CapacityUpdate"),
                "responses": {**_ok("The updated job"), **_errors(400, 401, 404, 409, 503)},
            }
        },
        "/api/v3/jobs/{jobId}/enable": {
            "post": {
                "summary": "Enable a service job",
                "parameters": job_id,
                "responses": {**_ok("Enabled"), **_errors(401, 404, 409, 503)},
            }
        },
        "/api/v3/jobs/{jobId}/disable": {
            "post": {
                "summary": "Disable a service job",
                "parameters": job_id,
                "responses": {**_ok("Disabled"), **_errors(401, 404, 409, 503)},
            }
        },
        "/api/v3/tasks": {
            "get": {
                "summary": "List tasks (active ones unless taskStates asks for Finished)",
                "parameters": [
                    _query("jobIds", {"type": "string"}, "Comma-separated job ids"),
                    _query("taskStates", {"type": "string"}, "Comma-separated task states"),
                    *_PAGING,
                ],
                "responses": {**_ok("A page of tasks"), **_errors(400, 401)},
            }
        },
        "/api/v3/tasks/{taskId}": {
            "get": {
                "summary": "One task",
                "parameters": task_id,
                "responses": {**_ok("The task"), **_errors(401, 404)},
            },
            "delete": {
                "summary": "Kill a task",
                "parameters": [
                    *task_id,
                    _query(
                        "shrink",
                        {"type": "string", "enum": ["true", "false"]},
                        "Also decrement the service job's desired count",
                    ),
                ],
                "responses": {**_ok("Kill initiated"), **_errors(400, 401, 404, 409, 503)},
            },
        },
        "/api/v3/tasks/{taskId}/logs": {
            "get": {
                "summary": "A task's stdout or stderr",
                "parameters": [
                    *task_id,
                    _query("stream", {"type": "string", "enum": ["stdout", "stderr"]}, "Which stream"),
                ],
                "responses": {
                    "200": {
                        "description": "Log text",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors(400, 401, 404),
                },
            }
        },
        "/api/v3/agent/instances": {
            "get": {"summary": "Registered agents", "responses": {**_ok("Agents"), **_errors(401)}}
        },
    }
    paths.update(_identity_paths())
    for operations in paths.values():  # the edge's refusals apply to every operation that takes a body
        for operation in operations.values():
            if "requestBody" in operation:
                operation["responses"].update(_errors(413, 415))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Titus in Python: v3 API",
            "version": "0.1.0",
            "description": "Job and task management. Errors are always JSON: {error, fields[path, reason]}.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _identity_paths() -> dict[str, Any]:
    """Agent identity (master/api/credentials.py): bootstrap tokens, enrolment, credentials."""
    token_id, agent_id = [_path_param("tokenId")], [_path_param("agentId")]
    return {
        "/api/v3/agent/bootstrapTokens": {
            "post": {"summary": "Create a bootstrap token (its secret is in this answer only)",
                     "requestBody": _body("BootstrapTokenRequest"),
                     "responses": {**_ok("The token", status="201"), **_errors(400, 401, 403, 503)}},
            "get": {"summary": "Bootstrap tokens with uses left",
                    "responses": {**_ok("Tokens"), **_errors(401, 403)}},
        },
        "/api/v3/agent/bootstrapTokens/{tokenId}": {
            "delete": {"summary": "Withdraw a bootstrap token", "parameters": token_id,
                       "responses": {**_ok("Deleted"), **_errors(401, 403, 404, 503)}},
        },
        "/api/v3/agent/enrol": {
            "post": {"summary": "Trade a bootstrap token (the bearer) for this agent's own credential",
                     "requestBody": _body("EnrolRequest"),
                     "responses": {**_ok("The credential"), **_errors(400, 401, 409, 503)}},
        },
        "/api/v3/agent/credentials": {
            "get": {"summary": "Active agent credentials",
                    "responses": {**_ok("Credentials"), **_errors(401, 403)}},
        },
        "/api/v3/agent/credentials/{agentId}": {
            "delete": {"summary": "Revoke an agent's credential; the agent is treated as lost",
                       "parameters": agent_id,
                       "responses": {**_ok("Revoked"), **_errors(401, 403, 404, 503)}},
        },
    }


@bp.get("/api/v3/openapi.json")
def openapi_json() -> dict[str, Any]:
    return document()
