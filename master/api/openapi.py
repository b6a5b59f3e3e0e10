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
    ApplicationSla,
    Capacity,
    CapacityUpdate,
    JobAttributesUpdate,
    JobDescriptor,
    JobDisruptionBudget,
    LifecycleUpdate,
    LogUpload,
    ServiceJobProcesses,
    TaskAttributesUpdate,
    TaskMoveRequest,
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
        Capacity,
        CapacityUpdate,
        ServiceJobProcesses,
        JobDisruptionBudget,
        JobAttributesUpdate,
        TaskAttributesUpdate,
        TaskMoveRequest,
        ApplicationSla,
        LifecycleUpdate,
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


_FIELDS = _query("fields", {"type": "string"}, "Comma-separated (nested: a.b) fields to return")
_KEYS = [
    {
        "name": "keys",
        "in": "query",
        "required": True,
        "schema": {"type": "string", "minLength": 1},
        "description": "Comma-separated attribute names to delete",
    }
]
_OBSERVE = [
    _query("keepAliveMs", {"type": "integer", "minimum": 100, "maximum": 60_000},
           "Idle time before a keepAliveResponse (default 10000)"),
    {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "Resume after this event id (also ?since=)"},
]
_STREAM = {
    "200": {
        "description": "text/event-stream; each event's data is one JobChangeNotification (proto3 JSON)",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}
_TIME_WINDOW = [
    _query("stateSince", {"type": "integer", "minimum": 0, "maximum": 10**13},
           "Only what entered its current state at or after this time (epoch ms)"),
    _query("stateBefore", {"type": "integer", "minimum": 0, "maximum": 10**13},
           "Only what entered its current state before this time (epoch ms)"),
]
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
                    _query("jobIds", {"type": "string"}, "Comma-separated job ids"),
                    _query("imageName", {"type": "string"}, "Exact image name"),
                    _query("imageTag", {"type": "string"}, "Exact image tag"),
                    _query("jobGroupStack", {"type": "string"}, "Exact jobGroupInfo.stack"),
                    _query("jobGroupDetail", {"type": "string"}, "Exact jobGroupInfo.detail"),
                    _query("jobGroupSequence", {"type": "string"}, "Exact jobGroupInfo.sequence"),
                    _query("attributes", {"type": "string"}, "key or key:value, comma separated"),
                    _query("attributes.op", {"type": "string", "enum": ["and", "or"]}, "How keys combine"),
                    *_TIME_WINDOW,
                    _FIELDS,
                    *_PAGING,
                ],
                "responses": {**_ok("A page of jobs"), **_errors(400, 401)},
            },
        },
        "/api/v3/jobs/observe": {
            "get": {
                "summary": "ObserveJobs: server-sent events of Titus JobChangeNotifications (never ends)",
                "parameters": [*_OBSERVE, _query("jobIds", {"type": "string"}, "Comma-separated job ids"),
                               _query("applicationName", {"type": "string"}, "Exact application name")],
                "responses": {**_STREAM, **_errors(400, 401)},
            }
        },
        "/api/v3/jobs/{jobId}/observe": {
            "get": {
                "summary": "ObserveJob: one job's JobChangeNotifications, until it is Finished",
                "parameters": [*job_id, *_OBSERVE],
                "responses": {**_STREAM, **_errors(400, 401, 404)},
            }
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
                "summary": "Set a service job's whole capacity (an omitted bound is 0)",
                "parameters": job_id,
                "requestBody": _body("Capacity"),
                "responses": {**_ok("Updated"), **_errors(400, 401, 404, 409, 503)},
            }
        },
        "/api/v3/jobs/{jobId}/capacityAttributes": {
            "put": {
                "summary": "Change only the given bounds of a service job's capacity",
                "parameters": job_id,
                "requestBody": _body("CapacityUpdate"),
                "responses": {**_ok("Updated"), **_errors(400, 401, 404, 409, 503)},
            }
        },
        "/api/v3/jobs/{jobId}/jobprocesses": {
            "put": {
                "summary": "Set a service job's disableIncreaseDesired / disableDecreaseDesired",
                "parameters": job_id,
                "requestBody": _body("ServiceJobProcesses"),
                "responses": {**_ok("Updated"), **_errors(400, 401, 404, 409, 503)},
            }
        },
        "/api/v3/jobs/{jobId}/disruptionBudget": {
            "put": {
                "summary": "Replace a job's disruption budget",
                "parameters": job_id,
                "requestBody": _body("JobDisruptionBudget"),
                "responses": {**_ok("Updated"), **_errors(400, 401, 404, 409, 503)},
            }
        },
        "/api/v3/jobs/{jobId}/attributes": {
            "put": {
                "summary": "Add or replace job attributes",
                "parameters": job_id,
                "requestBody": _body("JobAttributesUpdate"),
                "responses": {**_ok("Updated"), **_errors(400, 401, 404, 409, 503)},
            },
            "delete": {
                "summary": "Delete job attributes",
                "parameters": [*job_id, *_KEYS],
                "responses": {**_ok("Deleted"), **_errors(400, 401, 404, 409, 503)},
            },
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
                    _query("taskIds", {"type": "string"}, "Comma-separated task ids"),
                    *_TIME_WINDOW,
                    _FIELDS,
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
                    _query(
                        "preventMinSizeUpdate",
                        {"type": "string", "enum": ["true", "false"]},
                        "With shrink: refuse rather than lower min",
                    ),
                ],
                "responses": {**_ok("Kill initiated"), **_errors(400, 401, 404, 409, 503)},
            },
        },
        "/api/v3/tasks/move": {
            "post": {
                "summary": "Move a Started task between two compatible service jobs",
                "requestBody": _body("TaskMoveRequest"),
                "responses": {**_ok("Moved"), **_errors(400, 401, 404, 409, 503)},
            }
        },
        "/api/v3/tasks/{taskId}/attributes": {
            "put": {
                "summary": "Add or replace task attributes",
                "parameters": task_id,
                "requestBody": _body("TaskAttributesUpdate"),
                "responses": {**_ok("Updated"), **_errors(400, 401, 404, 409, 503)},
            },
            "delete": {
                "summary": "Delete task attributes",
                "parameters": [*task_id, *_KEYS],
                "responses": {**_ok("Deleted"), **_errors(400, 401, 404, 409, 503)},
            },
        },
        "/api/v3/tasks/{taskId}/logs": {
            "get": {
                "summary": "A byte range of a task's stdout or stderr (X-Titus-Log-* headers say which)",
                "parameters": [
                    *task_id,
                    _query("stream", {"type": "string", "enum": ["stdout", "stderr"]}, "Which stream"),
                    _query("offset", {"type": "integer"},
                           "First byte; negative counts from the end (default: the last 1 MiB)"),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1 << 20},
                           "At most this many bytes"),
                    _query("waitMs", {"type": "integer", "minimum": 0, "maximum": 30_000},
                           "Wait this long for bytes past offset (follow)"),
                ],
                "responses": {
                    "200": {
                        "description": "Bytes from X-Titus-Log-Offset (see the other X-Titus-Log-* headers)",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors(400, 401, 404),
                },
            }
        },
        "/api/v3/scheduler/results/{taskId}": {
            "get": {
                "summary": "Titus's SchedulingResultEvent: why a task waits, or that it was placed",
                "parameters": task_id,
                "responses": {**_ok("The scheduling result"), **_errors(401, 404)},
            }
        },
        "/api/v3/agent/instances": {
            "get": {"summary": "Registered agents", "responses": {**_ok("Agents"), **_errors(401)}}
        },
        "/api/v3/management/applications": {
            "get": {"summary": "Capacity groups (Titus's ApplicationSLAs)",
                    "responses": {**_ok("Capacity groups", {"type": "array"}), **_errors(401)}},
            "post": {"summary": "Create a capacity group", "requestBody": _body("ApplicationSla"),
                     "responses": {**_ok("Created", None, "201"), **_errors(400, 401, 409, 503)}},
        },
        "/api/v3/management/applications/{name}": {
            "get": {"summary": "One capacity group", "parameters": [_path_param("name")],
                    "responses": {**_ok("The capacity group"), **_errors(401, 404)}},
            "put": {"summary": "Replace a capacity group", "parameters": [_path_param("name")],
                    "requestBody": _body("ApplicationSla"),
                    "responses": {**_ok("Updated"), **_errors(400, 401, 404, 409, 503)}},
            "delete": {"summary": "Delete a capacity group", "parameters": [_path_param("name")],
                       "responses": {**_ok("Deleted"), **_errors(401, 404, 409, 503)}},
        },
        "/api/v3/agent/instanceGroups": {
            "get": {"summary": "Agent pools", "responses": {**_ok("Instance groups"), **_errors(401)}},
        },
        "/api/v3/agent/instanceGroups/{groupId}": {
            "get": {"summary": "One agent pool", "parameters": [_path_param("groupId")],
                    "responses": {**_ok("The instance group"), **_errors(401, 404)}},
        },
        "/api/v3/agent/instanceGroups/{groupId}/lifecycle": {
            "put": {"summary": "Set an agent pool's lifecycle", "parameters": [_path_param("groupId")],
                    "requestBody": _body("LifecycleUpdate"),
                    "responses": {**_ok("Updated"), **_errors(400, 401, 404, 409, 503)}},
        },
        "/api/v3/agent/instances/{agentId}/lifecycle": {
            "put": {"summary": "Set one agent's lifecycle", "parameters": [_path_param("agentId")],
                    "requestBody": _body("LifecycleUpdate"),
                    "responses": {**_ok("Updated"), **_errors(400, 401, 404, 409, 503)}},
        },
        # The agent channel: the agent token, never the API token (the fuzz uses each where it belongs).
        "/api/v3/agent/instances/register": {
            "post": {"summary": "An agent registers (agent token)", "requestBody": _body("AgentRegistration"),
                     "security": [{"agentBearer": []}],
                     "responses": {**_ok("Session"), **_errors(400, 401, 409, 503)}},
        },
        "/api/v3/agent/instances/{agentId}/assignments": {
            "get": {"summary": "An agent's desired set, long-polled (agent token)",
                    "security": [{"agentBearer": []}],
                    "parameters": [_path_param("agentId"),
                                   _query("since", {"type": "integer", "minimum": -1}, "Last version seen"),
                                   _query("session", {"type": "integer", "minimum": 0}, "Session epoch"),
                                   _query("waitMs", {"type": "integer", "minimum": 0, "maximum": 60_000},
                                          "Long-poll wait in ms (default 20000)")],
                    "responses": {**_ok("Desired set"), **_errors(400, 401, 409, 503)}},
        },
        "/api/v3/agent/instances/{agentId}/status": {
            "post": {"summary": "An agent's report (agent token)", "parameters": [_path_param("agentId")],
                     "security": [{"agentBearer": []}], "requestBody": _body("AgentStatusReport"),
                     "responses": {**_ok("Applied"), **_errors(400, 401, 404, 409, 503)}},
        },
        "/api/v3/agent/instances/{agentId}/logs/{taskId}": {
            "post": {"summary": "An agent uploads a task's logs (agent token)",
                     "parameters": [_path_param("agentId"), _path_param("taskId")],
                     "security": [{"agentBearer": []}], "requestBody": _body("LogUpload"),
                     "responses": {**_ok("Stored"), **_errors(400, 401, 404, 409, 503)}},
        },
    }
    paths.update(_eviction_paths())
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
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "agentBearer": {"type": "http", "scheme": "bearer"}},
        },
    }


_EVICTION_QUOTA = {
    "type": "object",
    "description": "Titus's EvictionQuota: how many tasks of the target may be evicted now, and why not more",
    "required": ["target", "quota", "message"],
    "properties": {
        "target": {"type": "object"},
        "quota": {"type": "integer", "minimum": 0},
        "message": {"type": "string"},
    },
}
_TERMINATE_RESPONSE = {
    "type": "object",
    "description": "Titus's TaskTerminateResponse: a refusal is an answer (200), with its reason",
    "required": ["allowed", "reasonCode", "reasonMessage"],
    "properties": {
        "allowed": {"type": "boolean"},
        "reasonCode": {"type": "string"},
        "reasonMessage": {"type": "string"},
    },
}


def _eviction_paths() -> dict[str, Any]:
    """Titus's eviction API (master/api/eviction.py)."""

    def quota(summary: str, *params: dict[str, Any]) -> dict[str, Any]:
        codes = (400, 401, 404) if params else (401,)
        return {
            "get": {
                "summary": summary,
                "parameters": list(params),
                "responses": {**_ok("The quota", _EVICTION_QUOTA), **_errors(*codes)},
            }
        }

    return {
        "/api/v3/eviction/quotas/system": quota("The system eviction quota (token bucket)"),
        "/api/v3/eviction/quotas/tiers/{tier}": quota("A tier's eviction quota", _path_param("tier")),
        "/api/v3/eviction/quotas/capacityGroups/{name}": quota(
            "A capacity group's eviction quota", _path_param("name")
        ),
        "/api/v3/eviction/quotas/jobs/{jobId}": quota("A job's eviction quota", _path_param("jobId")),
        "/api/v3/eviction/tasks/{taskId}": {
            "delete": {
                "summary": "Stop a service task if the disruption budgets allow it (it is replaced)",
                "parameters": [
                    _path_param("taskId"),
                    _query("reason", {"type": "string"}, "Why the termination is asked for"),
                ],
                "responses": {
                    **_ok("Allowed and done, or refused with the reason", _TERMINATE_RESPONSE),
                    **_errors(400, 401, 404, 503),
                },
            }
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
