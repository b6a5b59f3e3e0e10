"""Secret-looking values never reach a log line: every record passes `redact` on its way out.

Tasks' environments carry credentials (DB_PASSWORD, AWS keys, API tokens), and so do our own tokens; a log
line that quotes a spec, a command line, an exception or a request must not carry them. What counts as a
secret, by name or by shape:
- the value of any key whose name says secret, in `KEY=value`, `KEY: value` or JSON `"KEY": "value"` form:
  names containing password, passwd, secret, token, credential, api key, access key, private key, auth;
- bearer and basic credentials (`Authorization: Bearer ...`);
- shapes that are secrets whatever their name: our agent credentials and bootstrap tokens, AWS access key
  ids, PEM private keys, JWTs, GitHub and Slack tokens.
It is a pure function of the text; `RedactingFilter` applies it to the message, every string `extra=` field
and the exception text of each record.
"""

from __future__ import annotations

import logging
import re

MASK = "***"

_NAME = (r"[A-Za-z0-9_.-]*(?:passw(?:or)?d|pwd|secret|token|credential|api[_-]?key|access[_-]?key"
         r"|private[_-]?key|auth)[A-Za-z0-9_.-]*")
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # PEM private keys, whole.
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.S),
     MASK),
    # "name": "value" (JSON, Python reprs with either quote).
    (re.compile(r"""(?i)(["']""" + _NAME + r"""["']\s*:\s*)(["'])(?:(?!\2)[^\\]|\\.)*\2"""),
     r"\1\2" + MASK + r"\2"),
    # Authorization: Bearer xyz / Basic xyz.
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + MASK),
    # NAME=value and NAME: value (env files, command lines, headers).
    (re.compile(r"(?i)\b(" + _NAME + r")(\s*[=:]\s*)(?![\"'{\[])[^\s,;&'\"}\]]+"), r"\1\2" + MASK),
    # Shapes that are secrets whatever they are called.
    (re.compile(r"\btitus-(?:agent|bootstrap)\.[0-9a-f]{16}\.[A-Za-z0-9_-]+"), MASK),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), MASK),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+"), MASK),
    (re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|xox[abposr]-[A-Za-z0-9-]{10,})"), MASK),
)


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites each record in place: message (arguments merged in), string extras, exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        for key, value in list(record.__dict__.items()):
            if isinstance(value, str) and key not in ("msg", "name", "levelname", "pathname", "filename",
                                                      "module", "funcName", "threadName", "processName"):
                record.__dict__[key] = redact(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True
