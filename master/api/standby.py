"""A standby answers every API request by forwarding it to the leader, so any master serves any client.

Forwarding (not a 307) lets agents' long polls and reports, and clients that do not follow redirects for
POST, work through whichever master they reach. A request is forwarded at most once (a header marks it):
a master that receives a forwarded request it cannot serve answers 503, so two masters that disagree about
the leader never bounce a request between them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import requests
from flask import Response, request

from master.api.errors import error_response

FORWARDED_HEADER = "X-Titus-Forwarded-By"
ROLE_HEADER = "X-Titus-Master-Role"

_REQUEST_HEADERS = ("Authorization", "Content-Type", "Accept", "Idempotency-Key", "Last-Event-ID")
_RESPONSE_HEADERS = ("Content-Type", "Retry-After", "WWW-Authenticate", "Location", "Cache-Control",
                     ROLE_HEADER)
# Longer than the longest agent long poll (60 s) plus the leader's own handling.
_READ_TIMEOUT_S = 75.0
_CONNECT_TIMEOUT_S = 2.0


class Routing(Protocol):
    def role(self) -> str:
        """leader, standby, starting (elected, loading state) or deposed (lost leadership, exiting)."""

    def leader_url(self) -> str | None:
        """Where the ready leader listens, if known."""

    @property
    def own_url(self) -> str:
        ...


def unavailable(message: str) -> Response:
    resp = error_response(503, message)
    resp.headers["Retry-After"] = "1"
    return resp


class Forwarder:
    def __init__(self, routing: Routing) -> None:
        self.routing = routing
        self.http = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=128)
        self.http.mount("http://", adapter)

    def __call__(self) -> Response | None:
        """Flask before_request hook: None lets the leader serve the request itself."""
        role = self.routing.role()
        if role == "leader":
            return None
        if role == "deposed":
            return unavailable("this master lost leadership and is shutting down; retry on another master")
        if role == "starting":
            return unavailable("this master was just elected and is loading state")
        leader = self.routing.leader_url()
        if request.headers.get(FORWARDED_HEADER):
            return unavailable("this master is a standby and the request was already forwarded once")
        if leader is None or leader.rstrip("/") == self.routing.own_url.rstrip("/"):
            return unavailable("no leader is known yet (election in progress)")
        return self._forward(leader)

    def _forward(self, leader: str) -> Response:
        headers = {h: request.headers[h] for h in _REQUEST_HEADERS if h in request.headers}
        headers[FORWARDED_HEADER] = self.routing.own_url
        # The job event streams never end: relay them as they come instead of reading them whole.
        stream = request.method == "GET" and request.path.endswith("/observe")
        try:
            upstream = self.http.request(
                request.method, leader.rstrip("/") + request.full_path.rstrip("?"), headers=headers,
                data=request.get_data(), timeout=(_CONNECT_TIMEOUT_S, _READ_TIMEOUT_S), allow_redirects=False,
                stream=stream)
        except requests.RequestException as exc:
            return unavailable(f"the leader at {leader} did not answer: {type(exc).__name__}")
        if stream and upstream.status_code == 200:
            resp = Response(_relay(upstream), status=200, direct_passthrough=True)
        else:
            resp = Response(upstream.content, status=upstream.status_code)
        for name in _RESPONSE_HEADERS:
            if name in upstream.headers:
                resp.headers[name] = upstream.headers[name]
        return resp


def _relay(upstream: requests.Response) -> Iterator[bytes]:
    """The leader's stream, chunk by chunk as it arrives; it ends when either side goes away."""
    try:
        yield from upstream.iter_content(chunk_size=None)
    except requests.RequestException:
        return
    finally:
        upstream.close()
