"""Callers have names: API tokens map to principals (name, e-mail) with a role, and a pure policy says
which role may do what (DESIGN.md #11).

Roles, as the issue describes Titus's split:
- `admin`: everything, including capacity groups, instance groups, agents' lifecycle, bootstrap tokens and
  agent credentials;
- `user`: jobs and tasks (submit, scale, enable/disable, kill), and every read but the credentials';
- `read-only`: reads only (GET), the same ones as `user`.

Principals come from a JSON file (`TITUS_PRINCIPALS_FILE`): `{"principals": [{"name": "alice", "email":
"alice@example.com", "role": "user", "tokenSha256": "<hex>"}]}`; `"token"` (plain) is accepted too, for
files that are themselves secrets. Only SHA-256 hashes are kept in memory, and a lookup is by the hash of
the presented token, so no comparison depends on how much of a token is right. The single `TITUS_API_TOKEN`
is the `admin` principal named by `TITUS_API_TOKEN_NAME`/`_EMAIL` (operator, operator@titus.local), so a
master configured as before keeps working.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROLES = ("admin", "user", "read-only")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

#: URL rules only an admin may call at all (reads included: they list secrets' metadata).
_ADMIN_ONLY = ("/api/v3/agent/bootstrapTokens", "/api/v3/agent/credentials")
#: URL rules whose writes are an admin's (cluster configuration); their reads are everybody's.
_ADMIN_WRITES = ("/api/v3/management/", "/api/v3/agent/instanceGroups", "/api/v3/agent/instances/")
#: URL rules whose writes a user may make.
_USER_WRITES = ("/api/v3/jobs", "/api/v3/tasks")
_READS = ("GET", "HEAD")


class PrincipalsError(ValueError):
    """The principals file is unreadable or wrong; the message names the entry and the rule."""


@dataclass(frozen=True)
class Principal:
    name: str
    email: str
    role: str


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def load_principals(api_token: str, path: Path | None, name: str = "operator",
                    email: str = "operator@titus.local") -> dict[str, Principal]:
    """Token hash -> principal, from the single API token (admin) and the principals file, if any."""
    out: dict[str, Principal] = {}
    if api_token:
        out[token_hash(api_token)] = Principal(name, email, "admin")
    if path is None:
        return out
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PrincipalsError(f"{path}: {exc}") from exc
    entries = doc.get("principals") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise PrincipalsError(f"{path}: expected {{\"principals\": [...]}}")
    for i, entry in enumerate(entries):
        where = f"{path}: principals[{i}]"
        if not isinstance(entry, dict):
            raise PrincipalsError(f"{where}: not an object")
        p_name, p_email, role = entry.get("name"), entry.get("email"), entry.get("role")
        if not isinstance(p_name, str) or not p_name:
            raise PrincipalsError(f"{where}.name: required")
        if not isinstance(p_email, str) or not _EMAIL.match(p_email):
            raise PrincipalsError(f"{where}.email: not an e-mail address")
        if role not in ROLES:
            raise PrincipalsError(f"{where}.role: must be one of {', '.join(ROLES)}")
        hashed = entry.get("tokenSha256")
        plain = entry.get("token")
        if isinstance(plain, str) and len(plain) >= 16:
            hashed = token_hash(plain)
        elif not (isinstance(hashed, str) and _HEX64.match(hashed)):
            raise PrincipalsError(f"{where}: needs tokenSha256 (64 hex digits) or token (16+ characters)")
        if hashed in out:
            raise PrincipalsError(f"{where}: the same token as another principal")
        out[hashed] = Principal(p_name, p_email, role)
    return out


def lookup(principals: Mapping[str, Principal], token: str) -> Principal | None:
    return principals.get(token_hash(token)) if token else None


def refusal(role: str, method: str, path: str) -> str | None:
    """None if `role` may make this call, else why not (for the 403's message). Pure."""
    if role == "admin":
        return None
    if path.startswith(_ADMIN_ONLY):
        return f"role {role} may not use {path.split('/')[4]} (admin only)"
    if method in _READS:
        return None
    if role == "read-only":
        return "role read-only may only read"
    if path.startswith(_USER_WRITES):
        return None
    if path.startswith(_ADMIN_WRITES):
        return f"role {role} may not change cluster configuration (admin only)"
    return f"role {role} may not {method} {path}"
