"""Enrolment: trade an operator's bootstrap token, once, for this agent's own credential.

The credential lives in the agent's data directory (0600, written atomically), so a restarted agent uses it
again and the bootstrap token, short-lived and of limited uses, is needed only on the first start. The
master binds the credential to the agent id: with it this agent can poll, report and upload logs only as
itself, for its own tasks.
"""

from __future__ import annotations

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


def stored_credential(data_dir: Path) -> str | None:
    path = credential_path(data_dir)
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return text or None


def enrol(data_dir: Path, master_urls: list[str], agent_id: str, bootstrap_token: str,
          timeout_s: float = 10.0) -> str:
    """The stored credential, or a new one obtained with the bootstrap token (then stored)."""
    existing = stored_credential(data_dir)
    if existing is not None:
        return existing
    if not bootstrap_token:
        raise EnrolmentError(f"no credential in {credential_path(data_dir)} and no bootstrap token "
                             "(TITUS_BOOTSTRAP_TOKEN) to enrol with")
    errors = []
    for url in master_urls:
        try:
            resp = requests.post(url.rstrip("/") + "/api/v3/agent/enrol", json={"agentId": agent_id},
                                 headers={"Authorization": f"Bearer {bootstrap_token}"}, timeout=timeout_s)
        except requests.RequestException as exc:
            errors.append(f"{url}: {exc}")
            continue
        if resp.status_code != 200:
            raise EnrolmentError(f"enrolment as {agent_id} refused by {url}: HTTP {resp.status_code} "
                                 f"{resp.text[:300]}")
        credential = str(resp.json()["credential"])
        _store(data_dir, credential)
        log.info("enrolled as agent %s (credential %s)", agent_id, resp.json().get("credentialId"))
        return credential
    raise EnrolmentError("no master answered the enrolment: " + "; ".join(errors))


def _store(data_dir: Path, credential: str) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = credential_path(data_dir).with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, credential.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, credential_path(data_dir))
