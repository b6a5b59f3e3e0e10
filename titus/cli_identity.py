"""`titus agent-tokens create|list|delete` (bootstrap tokens an agent presents once to enrol) and `titus
agent-credentials list|revoke` (each enrolled agent's credential, bound to its agent id). Imported only when
one of them runs (titus/cli.py's LazyGroup)."""

from __future__ import annotations

import time

import click

from titus.cli_common import api_call, api_options, emit, make_client, table


def _when(ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) if ms else "-"


@click.group("agent-tokens")
def agent_tokens() -> None:
    """Bootstrap tokens: an agent presents one once (TITUS_BOOTSTRAP_TOKEN) to get its own credential."""


@agent_tokens.command("create")
@click.option("--ttl", "ttl_s", type=click.IntRange(1, 7 * 86_400), default=3600, show_default=True,
              help="Seconds the token stays valid.")
@click.option("--uses", type=click.IntRange(1, 10_000), default=1, show_default=True,
              help="How many agents may enrol with it.")
@click.option("--description", default="", help="Free text shown in the list (who or what it is for).")
@api_options
def tokens_create(ttl_s: int, uses: int, description: str, url: str | None, token: str | None,
                  as_json: bool) -> None:
    """Create a bootstrap token; its secret is printed once (the master keeps only a hash)."""
    client = make_client(url, token)
    body = {"ttlSeconds": ttl_s, "uses": uses, "description": description}
    made = api_call(lambda: client.call("POST", "/api/v3/agent/bootstrapTokens", json=body))
    emit(made, as_json, made["token"])


@agent_tokens.command("list")
@api_options
def tokens_list(url: str | None, token: str | None, as_json: bool) -> None:
    """Bootstrap tokens with uses left (secrets are never shown again)."""
    client = make_client(url, token)
    items = api_call(lambda: client.call("GET", "/api/v3/agent/bootstrapTokens"))["items"]
    rows = [[t["id"], str(t["usesLeft"]), _when(t["expiresAt"]), "yes" if t["expired"] else "no",
             t["description"]] for t in items]
    emit(items, as_json, table(rows, ["ID", "USES LEFT", "EXPIRES (UTC)", "EXPIRED", "DESCRIPTION"]))


@agent_tokens.command("delete")
@click.argument("token_id")
@api_options
def tokens_delete(token_id: str, url: str | None, token: str | None, as_json: bool) -> None:
    """Withdraw a bootstrap token before it expires (agents already enrolled keep their credentials)."""
    client = make_client(url, token)
    api_call(lambda: client.call("DELETE", f"/api/v3/agent/bootstrapTokens/{token_id}"))
    emit({"id": token_id, "deleted": True}, as_json, f"deleted bootstrap token {token_id}")


@click.group("agent-credentials")
def agent_credentials() -> None:
    """Enrolled agents' credentials, each bound to one agent id."""


@agent_credentials.command("list")
@api_options
def credentials_list(url: str | None, token: str | None, as_json: bool) -> None:
    """Active agent credentials."""
    client = make_client(url, token)
    items = api_call(lambda: client.call("GET", "/api/v3/agent/credentials"))["items"]
    rows = [[c["agentId"], c["credentialId"], _when(c["createdAt"]), c["bootstrapTokenId"]] for c in items]
    emit(items, as_json, table(rows, ["AGENT", "CREDENTIAL", "ENROLLED (UTC)", "BOOTSTRAP TOKEN"]))


@agent_credentials.command("revoke")
@click.argument("agent_id")
@api_options
def credentials_revoke(agent_id: str, url: str | None, token: str | None, as_json: bool) -> None:
    """Revoke an agent's credential: it is refused at once and the agent is treated as lost."""
    client = make_client(url, token)
    revoked = api_call(lambda: client.call("DELETE", f"/api/v3/agent/credentials/{agent_id}"))
    emit(revoked, as_json, f"revoked credential {revoked['credentialId']} of agent {agent_id}")
