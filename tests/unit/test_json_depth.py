"""The API edge's nesting check: deep bodies are caught, wide or string-heavy shallow ones are not."""

from __future__ import annotations

import json

import pytest

from master.api.app import json_too_deep


@pytest.mark.parametrize("body,deep", [
    (b"{}", False),
    (b"[" * 32 + b"]" * 32, False),
    (b"[" * 33 + b"]" * 33, True),
    (b"[" + b"[]," * 1000 + b"[]]", False),  # wide, two levels
    (json.dumps({"a": "[" * 500, "b": "{" * 500}).encode(), False),  # brackets inside strings
    (json.dumps({"a": "\\\"[[[[", "b": [[[]]]}).encode(), False),  # escaped quotes inside strings
    (b'{"a": ' * 40 + b"1" + b"}" * 40, True),
    (b"[" * 100_000, True),  # unterminated: still refused, after limit + 1 brackets
], ids=["empty", "at-limit", "over-limit", "wide", "strings", "escapes", "objects", "unterminated"])
def test_nesting_depth(body: bytes, deep: bool) -> None:
    assert json_too_deep(body, 32) is deep
