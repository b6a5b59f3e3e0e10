"""Enrolment: trade an operator's bootstrap token, once, for this agent's own credential.

The credential lives in the agent's data directory (0600, written atomically), so a restarted agent uses it
again and the bootstrap token, short-lived and of limited uses, is needed only on the first start. The
master binds the credential to the agent id: with it this agent can poll, report and upload logs only as
itself, for its own tasks.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import requests

log = logging.getLogger("titus.agent")

CREDENTIAL_FILE = "agent-credential"


class EnrolmentError(Exception):
    """No credential could be had: say why and stop (a bad bootstrap token will not get better)."""


def credential_path(data_dir: Path) -> Path:
    return data_dir / CREDENTIAL_FILE


def stored_credential(data_dir: Path, agent_id: str | None = None) -> str | None:
    """The credential kept in `data_dir`; one issued to another agent id is an error, not a fallback."""
    path = credential_path(data_dir)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise EnrolmentError(f"{path} is not a credential file: {exc}") from exc
    if agent_id is not None and doc.get("agentId") != agent_id:
        raise EnrolmentError(f"{path} holds the credential of agent {doc.get('agentId')!r}, not "
                             f"{agent_id!r}: remove it and enrol again with a bootstrap token")
    credential = doc.get("credential")
    return credential if isinstance(credential, str) and credential else None


def enrol(data_dir: Path, master_urls: list[str], agent_id: str, bootstrap_token: str,
          timeout_s: float = 10.0, instance_id: str | None = None, ca_file: str = "",
          client_cert: tuple[str, str] | None = None) -> str:
    """The stored credential, or a new one obtained with the bootstrap token (then stored).

    `instance_id` (EC2, from IMDSv2) is bound to the credential: the master then accepts registrations under
    it only from that instance id."""
    existing = stored_credential(data_dir, agent_id)
    if existing is not None:
        return existing
    if not bootstrap_token:
        raise EnrolmentError(f"no credential in {credential_path(data_dir)} and no bootstrap token "
                             "(TITUS_BOOTSTRAP_TOKEN) to enrol with")
    errors = []
    for url in master_urls:
        try:
            body = {"agentId": agent_id, **({"instanceId": instance_id} if instance_id else {})}
            resp = requests.post(url.rstrip("/") + "/api/v3/agent/enrol", json=body,
                                 headers={"Authorization": f"Bearer {bootstrap_token}"}, timeout=timeout_s,
                                 verify=ca_file or True, cert=client_cert)
        except requests.RequestException as exc:
            errors.append(f"{url}: {exc}")
            continue
        if resp.status_code != 200:
            raise EnrolmentError(f"enrolment as {agent_id} refused by {url}: HTTP {resp.status_code} "
                                 f"{resp.text[:300]}")
        credential = str(resp.json()["credential"])
        _store(data_dir, agent_id, credential)
        log.info("enrolled as agent %s (credential %s)", agent_id, resp.json().get("credentialId"))
        return credential
    raise EnrolmentError("no master answered the enrolment: " + "; ".join(errors))


def _store(data_dir: Path, agent_id: str, credential: str) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = credential_path(data_dir).with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps({"agentId": agent_id, "credential": credential}).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, credential_path(data_dir))
