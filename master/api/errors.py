"""One error shape for every failure: {"error": ..., "fields": [{"path": ..., "reason": ...}]}.

Validation turns pydantic's error locations into dotted field paths (container.resources.memoryMB), so a
client learns which field broke which rule without reading server logs.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Response, jsonify
from pydantic import ValidationError

_RELPATH = re.compile(r"^@(\S+): (.*)$", re.S)

_REASONS = {
    "extra_forbidden": "unknown field: not part of the Titus v3 API",
    "missing": "field required",
}


class ApiError(Exception):
    def __init__(self, status: int, message: str, fields: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = fields or []


def bad_request(message: str, path: str = "", reason: str = "") -> ApiError:
    return ApiError(400, message, [{"path": path, "reason": reason or message}] if path else [])


def field_errors(exc: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    fields = []
    for err in exc.errors(include_url=False):
        parts = [str(p) for p in err["loc"]]
        reason = _REASONS.get(err["type"], str(err["msg"]))
        reason = reason.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        match = _RELPATH.match(reason)
        if match:  # validators name the sub-field they judged as "@field: reason"
            parts.append(match.group(1))
            reason = match.group(2)
        path = ".".join(p for p in [prefix, *parts] if p)
        fields.append({"path": path, "reason": reason})
    return fields


def validation_error(exc: ValidationError, what: str, prefix: str = "") -> ApiError:
    fields = field_errors(exc, prefix)
    summary = "; ".join(f"{f['path'] or '(body)'}: {f['reason']}" for f in fields[:5])
    return ApiError(400, f"invalid {what}: {summary}", fields)


def error_response(status: int, message: str, fields: list[dict[str, str]] | None = None) -> Response:
    body: dict[str, Any] = {"error": message, "fields": fields or []}
    resp = jsonify(body)
    resp.status_code = status
    return resp
