"""Agent identity: operator-made bootstrap tokens, enrolment, per-agent credentials bound to an agent id.

An operator creates a bootstrap token (short-lived, a limited number of uses). An agent presents it once to
enrol and receives its own credential, bound to its agent id; from then on every agent-channel call carries
that credential, and the API edge checks that the agent acts only as itself (DESIGN.md #11). A revoked
credential is refused at once and its agent is treated as lost, exactly as if it had stopped beating.

Only hashes are kept (SHA-256 of a 256-bit random secret: no slow hash is needed for secrets that cannot be
guessed), in the store as `credential` entities, so they survive restarts and failovers. The token strings
carry their own id (`titus-bootstrap.<id>.<secret>`, `titus-agent.<id>.<secret>`), so a check is one dict
lookup and one constant-time comparison.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from master.manager_base import Conflict, ManagerBase, NotFound
from master.store.base import Write

log = logging.getLogger("titus.master")

BOOTSTRAP_PREFIX = "titus-bootstrap."
CREDENTIAL_PREFIX = "titus-agent."
MAX_BOOTSTRAP_TTL_S = 7 * 86_400
MAX_BOOTSTRAP_USES = 10_000
_TOKEN = re.compile(r"^(titus-bootstrap|titus-agent)\.([0-9a-f]{16})\.([A-Za-z0-9_-]{20,100})$")


class Unauthenticated(Exception):
    """The token presented is not a live one of the kind this call needs (HTTP 401)."""


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _split(token: str, prefix: str) -> tuple[str, str] | None:
    match = _TOKEN.match(token)
    if match is None or match.group(1) + "." != prefix:
        return None
    return match.group(2), match.group(3)


def is_agent_credential(token: str) -> bool:
    return token.startswith(CREDENTIAL_PREFIX)


@dataclass
class BootstrapToken:
    id: str
    secret_hash: str
    created_ms: int
    expires_ms: int
    uses_left: int
    description: str = ""
    version: int = 0

    def record(self) -> dict[str, Any]:
        return {"type": "bootstrap", "id": self.id, "hash": self.secret_hash, "createdMs": self.created_ms,
                "expiresMs": self.expires_ms, "usesLeft": self.uses_left, "description": self.description}

    def wire(self, now: int) -> dict[str, Any]:
        return {"id": self.id, "createdAt": self.created_ms, "expiresAt": self.expires_ms,
                "usesLeft": self.uses_left, "expired": now >= self.expires_ms,
                "description": self.description}


@dataclass
class AgentCredential:
    id: str
    agent_id: str
    secret_hash: str
    created_ms: int
    bootstrap_id: str
    version: int = 0
    revoked_ms: int | None = None
    instance_id: str = ""  # EC2: the instance it enrolled from; registrations must carry the same

    def record(self) -> dict[str, Any]:
        return {"type": "agent", "id": self.id, "agentId": self.agent_id, "hash": self.secret_hash,
                "createdMs": self.created_ms, "bootstrapId": self.bootstrap_id, "revokedMs": self.revoked_ms,
                "instanceId": self.instance_id}

    def wire(self) -> dict[str, Any]:
        return {"agentId": self.agent_id, "credentialId": self.id, "createdAt": self.created_ms,
                "bootstrapTokenId": self.bootstrap_id, "revoked": self.revoked_ms is not None,
                "revokedAt": self.revoked_ms, "instanceId": self.instance_id}


@dataclass
class CredentialState:
    """What the master holds in memory: active bootstrap tokens and credentials, by id and by agent."""

    bootstrap: dict[str, BootstrapToken] = field(default_factory=dict)
    credentials: dict[str, AgentCredential] = field(default_factory=dict)
    by_agent: dict[str, str] = field(default_factory=dict)  # agent id -> its active credential id


class AgentAuth(ManagerBase):
    """One part of `JobManager` (master/job_manager.py); see the module docstring."""

    @property
    def credential_state(self) -> CredentialState:
        state: CredentialState | None = getattr(self, "_credential_state", None)
        if state is None:
            state = self._credential_state = CredentialState()
        return state

    def start(self, init_cluster: bool = False, expected_cluster_id: str = "", where: str = "") -> None:
        """Leadership: the rest of the state first (ManagerBase.start), then the credentials."""
        super().start(init_cluster, expected_cluster_id, where)
        with self.lock:
            self.load_credentials()

    def load_credentials(self) -> None:
        """Called under the lock at start-up (a new leader), from the store's active `credential` rows."""
        state = self._credential_state = CredentialState()
        for stored in self.store.load_active("credential"):
            r = stored.record
            if r["type"] == "bootstrap":
                state.bootstrap[r["id"]] = BootstrapToken(
                    r["id"], r["hash"], r["createdMs"], r["expiresMs"], r["usesLeft"],
                    r.get("description", ""), stored.version)
            elif r["type"] == "agent" and r.get("revokedMs") is None:
                cred = AgentCredential(r["id"], r["agentId"], r["hash"], r["createdMs"],
                                       r.get("bootstrapId", ""), stored.version,
                                       instance_id=r.get("instanceId", ""))
                state.credentials[cred.id] = cred
                state.by_agent[cred.agent_id] = cred.id

    # ----------------------------------------------------------------------------------- bootstrap
    def create_bootstrap_token(self, ttl_s: int, uses: int, description: str) -> dict[str, Any]:
        now = self.clock()
        token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        token = BootstrapToken(token_id, _hash(secret), now, now + ttl_s * 1000, uses, description)
        with self.lock:
            pending = self._queue([Write("credential", f"bootstrap:{token_id}", 0, token.record())])
            token.version = 1
            self.credential_state.bootstrap[token_id] = token
        self._wait(pending)
        log.info("bootstrap token %s created (%d use(s), %d s)", token_id, uses, ttl_s)
        return {**token.wire(now), "token": f"{BOOTSTRAP_PREFIX}{token_id}.{secret}"}

    def list_bootstrap_tokens(self) -> list[dict[str, Any]]:
        now = self.clock()
        with self.lock:
            return [t.wire(now) for t in sorted(self.credential_state.bootstrap.values(), key=lambda t: t.id)]

    def delete_bootstrap_token(self, token_id: str) -> None:
        with self.lock:
            token = self.credential_state.bootstrap.get(token_id)
            if token is None:
                raise NotFound(f"bootstrap token {token_id} not found")
            pending = self._queue([Write("credential", f"bootstrap:{token_id}", token.version, token.record(),
                                         archived=True)])
            del self.credential_state.bootstrap[token_id]
        self._wait(pending)

    def valid_bootstrap(self, token: str) -> bool:
        """Is this a live bootstrap token (known, not expired, uses left)? Does not use it up."""
        parts = _split(token, BOOTSTRAP_PREFIX)
        if parts is None:
            return False
        with self.lock:
            known = self.credential_state.bootstrap.get(parts[0])
            return (known is not None and known.uses_left > 0 and self.clock() < known.expires_ms
                    and hmac.compare_digest(known.secret_hash, _hash(parts[1])))

    def enrol(self, bootstrap: str, agent_id: str, instance_id: str = "") -> dict[str, Any]:
        """Spend one use of the bootstrap token on a new credential for `agent_id`.

        An agent id that already holds an active credential is refused: a leaked bootstrap token must not
        let anyone take over a running agent's identity (the operator revokes the old credential first).
        """
        now = self.clock()
        parts = _split(bootstrap, BOOTSTRAP_PREFIX)
        cred_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        with self.lock:
            state = self.credential_state
            token = state.bootstrap.get(parts[0]) if parts else None
            if (parts is None or token is None or token.uses_left <= 0 or now >= token.expires_ms
                    or not hmac.compare_digest(token.secret_hash, _hash(parts[1]))):
                raise Unauthenticated("unknown, expired or used-up bootstrap token")
            if agent_id in state.by_agent:
                raise Conflict(f"agent {agent_id} is already enrolled; revoke its credential first")
            token.uses_left -= 1
            cred = AgentCredential(cred_id, agent_id, _hash(secret), now, token.id, instance_id=instance_id)
            writes = [
                Write("credential", f"bootstrap:{token.id}", token.version, token.record(),
                      archived=token.uses_left == 0),
                Write("credential", f"agent:{cred_id}", 0, cred.record()),
            ]
            pending = self._queue(writes)
            token.version += 1
            cred.version = 1
            if token.uses_left == 0:
                del state.bootstrap[token.id]
            state.credentials[cred_id] = cred
            state.by_agent[agent_id] = cred_id
        self._wait(pending)
        log.info("agent %s enrolled (credential %s, bootstrap token %s)", agent_id, cred_id, token.id,
                 extra={"agent_id": agent_id})
        return {"agentId": agent_id, "credentialId": cred_id,
                "credential": f"{CREDENTIAL_PREFIX}{cred_id}.{secret}"}

    # --------------------------------------------------------------------------------- credentials
    def agent_for_credential(self, token: str) -> tuple[str, str] | None:
        """(agent id, instance id or "") an active credential is bound to; None if unknown or revoked."""
        parts = _split(token, CREDENTIAL_PREFIX)
        if parts is None:
            return None
        with self.lock:
            cred = self.credential_state.credentials.get(parts[0])
            if cred is None or not hmac.compare_digest(cred.secret_hash, _hash(parts[1])):
                return None
            return cred.agent_id, cred.instance_id

    def list_credentials(self) -> list[dict[str, Any]]:
        with self.lock:
            return [c.wire() for c in sorted(self.credential_state.credentials.values(),
                                             key=lambda c: c.agent_id)]

    def revoke_agent(self, agent_id: str) -> dict[str, Any]:
        """Revoke the agent's credential and treat the agent as lost (the timer pass does the rest)."""
        now = self.clock()
        with self.lock:
            state = self.credential_state
            cred_id = state.by_agent.get(agent_id)
            if cred_id is None:
                raise NotFound(f"agent {agent_id} has no active credential")
            cred = state.credentials[cred_id]
            cred.revoked_ms = now
            pending = self._queue([Write("credential", f"agent:{cred_id}", cred.version, cred.record(),
                                         archived=True)])
            del state.credentials[cred_id]
            del state.by_agent[agent_id]
            agent = self.agents.get(agent_id)
            if agent is not None:
                # The next timer pass marks it lost. Not merely silent: an agent whose credential was
                # withdrawn is no longer trusted to come back, so its tasks are lost (and replaced) at once
                # rather than Disconnected (master/reconcile.py), as for a host the resource manager lost.
                agent.gone = True
                agent.last_heartbeat_ms = -self.settings.heartbeat_timeout_ms - 1
                self._wake_agent(agent_id)
        self._wait(pending)
        log.warning("agent %s: credential %s revoked; the agent is treated as lost", agent_id, cred_id,
                    extra={"agent_id": agent_id})
        return cred.wire()
