"""The agent's side of the channel: plain HTTP requests to the master with the agent token."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import requests

if TYPE_CHECKING:
    from agent.agent import AgentConfig


class MasterUnavailable(Exception):
    """The master did not answer usefully; retry after a pause."""


class SessionExpired(Exception):
    """The master no longer knows our session (it restarted, or declared us lost): register again."""


class MasterClient:
    """Talks to one master at a time out of several (any master serves: standbys forward to the leader).

    A connection error or timeout moves on to the next URL: a dead master costs one failed request.
    """

    def __init__(self, base_url: str | list[str], token: str, ca_file: str = "",
                 client_cert: tuple[str, str] | None = None) -> None:
        """`ca_file`: the CA that signed the masters' certificates (HTTPS with a private CA);
        `client_cert`: (certificate, key) files this agent presents to masters that require mutual TLS."""
        urls = base_url.split(",") if isinstance(base_url, str) else base_url
        self.bases = [u.strip().rstrip("/") + "/api/v3/agent/instances" for u in urls if u.strip()]
        if not self.bases:
            raise ValueError("at least one master URL is required")
        self._current = 0
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"
        # Per request, not on the session: requests lets REQUESTS_CA_BUNDLE override a session's verify.
        self.verify: str | bool = ca_file or True
        if client_cert is not None:
            self.http.cert = client_cert
        # Bounded by the heartbeat timeout once known: a request stuck in a partition must not outlive
        # the point where the agent has to act on the silence.
        self.timeout_s = 10.0

    @property
    def base(self) -> str:
        return self.bases[self._current % len(self.bases)]

    def next_master(self) -> None:
        """Try the next URL (the current master is of no use to us, e.g. of another cluster)."""
        self._current += 1

    def _call(self, method: str, path: str, timeout: float, **kwargs: Any) -> dict[str, Any]:
        base = self.base
        try:
            resp = self.http.request(method, base + path, timeout=timeout, verify=self.verify, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as exc:
            if self.base == base:  # another thread may have rotated already
                self._current += 1
            raise MasterUnavailable(f"{base}: {exc}") from exc
        except requests.RequestException as exc:
            raise MasterUnavailable(str(exc)) from exc
        if resp.status_code == 409:
            raise SessionExpired(resp.text)
        if resp.status_code != 200:
            raise MasterUnavailable(f"HTTP {resp.status_code}: {resp.text[:300]}")
        body: dict[str, Any] = resp.json()
        return body

    def register(self, config: AgentConfig, running: list[str],
                 exited: list[str] | None = None) -> dict[str, Any]:
        return self._call("POST", "/register", self.timeout_s, json={
            "id": config.agent_id,
            "resources": {"cpu": config.cpu, "memoryMB": config.memory_mb, "diskMB": config.disk_mb,
                          "networkMbps": config.network_mbps, "gpu": config.gpu},
            "attributes": config.attributes, "runningTaskIds": running, "exitedTaskIds": exited or []})

    def desired_set(self, agent_id: str, session: int, since: int, wait_ms: int) -> dict[str, Any]:
        return self._call("GET", f"/{agent_id}/assignments", wait_ms / 1000 + self.timeout_s,
                          params={"since": since, "session": session, "waitMs": wait_ms})

    def report(self, agent_id: str, body: dict[str, Any]) -> None:
        self._call("POST", f"/{agent_id}/status", self.timeout_s, json=body)

    def upload_log_chunk(self, agent_id: str, task_id: str, session: int, body: dict[str, Any]) -> None:
        """One byte range of one stream, the answer to a logReads entry of the desired set."""
        self._call("POST", f"/{agent_id}/logs/{task_id}", 15, json={"sessionEpoch": session, **body})

