"""Secret-looking values are masked in every log line: the pure redactor, then the real logging pipeline."""

from __future__ import annotations

import io
import json
import logging

import pytest

from shared.redact import MASK, redact


@pytest.mark.parametrize("text,secret", [
    ("env: {'DB_PASSWORD': 'hunter2-very-secret', 'MODE': 'prod'}", "hunter2-very-secret"),
    ('{"env": {"API_KEY": "k-123456789", "X": "1"}}', "k-123456789"),
    ('{"github_token":"abc\\"def"}', 'abc\\"def'),
    ("exec env AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG ./run", "wJalrXUtnFEMI/K7MDENG"),
    ("password: opensesame!", "opensesame!"),
    ("Authorization: Bearer abcdefghijklmnop", "abcdefghijklmnop"),
    ("using AKIAIOSFODNN7EXAMPLE for s3", "AKIAIOSFODNN7EXAMPLE"),
    ("credential titus-agent.0123456789abcdef.Zr3_kz-93jfnLq", "Zr3_kz-93jfnLq"),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig_part-1", "eyJzdWIiOiIxMjM0NTY3ODkwIn0"),
    ("key -----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY----- done", "MIIEow"),
    ("slack xoxb-1234567890-abcdefghij", "xoxb-1234567890-abcdefghij"),
], ids=["repr-dict", "json", "json-escaped-quote", "env-assignment", "colon", "bearer", "aws-key-id",
        "titus-credential", "jwt", "pem", "slack"])
def test_secrets_are_masked(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out and MASK in out, out


@pytest.mark.parametrize("text", [
    "task 3f2 started on agent a1 (session 77)",
    "env: {'MODE': 'prod', 'REGION': 'eu-west-1'}",
    "missing or invalid bearer token",
    "bootstrap token 0123456789abcdef created (1 use(s), 600 s)",
])
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text) == text


def test_the_logging_pipeline_masks_messages_extras_and_exceptions() -> None:
    from shared.logs import configure

    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        configure(logging.INFO, "json")
        stream = io.StringIO()
        root.handlers[0].stream = stream  # type: ignore[attr-defined]
        log = logging.getLogger("titus.test")
        env = {"DB_PASSWORD": "hunter2-very-secret", "MODE": "prod"}
        log.info("launching with env %s", env, extra={"spec": json.dumps({"env": env})})
        try:
            raise RuntimeError("runc failed: env DB_PASSWORD=hunter2-very-secret")
        except RuntimeError:
            log.exception("start failed")
        out = stream.getvalue()
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    assert "hunter2-very-secret" not in out, out
    lines = [json.loads(line) for line in out.splitlines()]
    assert "'MODE': 'prod'" in lines[0]["msg"] and MASK in lines[0]["msg"] and MASK in lines[0]["spec"]
    assert "RuntimeError" in lines[1]["exc"] and MASK in lines[1]["exc"]
