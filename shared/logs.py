"""Structured JSON-lines logging with the stdlib, so decisions can be grepped and shipped as they are.

Every `extra=` field of a record becomes a key of its line; the master passes `job_id`, `task_id` and
`agent_id` on every line about a job, task or agent, so one grep follows a task through the log.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from shared.redact import RedactingFilter

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                doc[key] = value
        if record.exc_text:  # set (and cleaned) by RedactingFilter
            doc["exc"] = record.exc_text
        elif record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, sort_keys=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: int = logging.INFO, fmt: str = "json") -> None:
    """Route every log record to stderr as JSON lines (`fmt="json"`) or as plain text (`fmt="text"`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RedactingFilter())  # secret-looking values never reach the log (shared/redact.py)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
