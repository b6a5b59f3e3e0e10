"""EC2 instance metadata (IMDSv2): who this agent's host is, for placement and for scale-in.

The agent reports its instance id, availability zone and instance type as attributes: the scheduler
places by zone and machine type, and the capacity controller terminates exactly the instances whose
agents it drained, which it can only do if the agent said which instance it is. Only IMDSv2 is spoken
(a session token from a PUT, then GETs carrying it): the launch templates require it, and a hop limit of
1 keeps containers from reaching it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import requests

DEFAULT_URL = "http://169.254.169.254"
TOKEN_TTL_S = 21600


class ImdsError(Exception):
    """The instance metadata service could not be read; the agent must not start with a made-up identity."""


@dataclass(frozen=True)
class InstanceIdentity:
    instance_id: str
    zone: str
    instance_type: str


def read_identity(base_url: str = DEFAULT_URL, timeout_s: float = 2.0, attempts: int = 5) -> InstanceIdentity:
    """Instance id, zone and type from IMDSv2; retried briefly, since IMDS can lag right after boot."""
    last: Exception | None = None
    for attempt in range(attempts):
        try:
            return _read_once(base_url.rstrip("/"), timeout_s)
        except (requests.RequestException, ImdsError) as exc:
            last = exc
            if attempt + 1 < attempts:
                time.sleep(min(0.2 * 2**attempt, 2.0))
    raise ImdsError(f"instance metadata at {base_url} unreadable after {attempts} attempts: {last}")


def _read_once(base: str, timeout_s: float) -> InstanceIdentity:
    with requests.Session() as http:
        token_resp = http.put(
            f"{base}/latest/api/token",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_S)},
            timeout=timeout_s,
        )
        if token_resp.status_code != 200 or not token_resp.text:
            raise ImdsError(f"IMDSv2 token request answered {token_resp.status_code}")
        headers = {"X-aws-ec2-metadata-token": token_resp.text}

        def get(path: str) -> str:
            resp = http.get(f"{base}/latest/meta-data/{path}", headers=headers, timeout=timeout_s)
            if resp.status_code != 200 or not resp.text.strip():
                raise ImdsError(f"meta-data/{path} answered {resp.status_code}")
            return resp.text.strip()

        return InstanceIdentity(
            instance_id=get("instance-id"),
            zone=get("placement/availability-zone"),
            instance_type=get("instance-type"),
        )
