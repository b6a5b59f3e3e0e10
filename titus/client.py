"""A small client for the v3 API, shared by the CLI, the tests and the benchmarks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit


class ApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any] | None, text: str) -> None:
        self.status = status
        self.body = body or {}
        message = self.body.get("error") or text or f"HTTP {status}"
        fields = self.body.get("fields") or []
        if fields:
            message += "\n" + "\n".join(f"  {f.get('path')}: {f.get('reason')}" for f in fields)
        super().__init__(message)


class Response:
    """What a call got back: status, headers (lower-case names) and the body bytes."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


@dataclass(frozen=True)
class LogRange:
    data: bytes
    offset: int  # where data starts in the stream
    size: int  # the stream's length so far
    start: int  # the first offset still kept (older bytes were rotated away)
    final: bool  # the task ended and this is the end of its stream: nothing more will come
    source: str  # "agent" (the task's files) or "tail" (what was stored with the finished task)


@dataclass
class ObserveEvent:
    """One event of a job stream: a JobChangeNotification and, for changes, the sequence to resume after."""

    seq: int | None
    message: dict[str, Any]


class TitusClient:
    """Over the standard library's http.client, not requests: the CLI imports this on every API command and
    requests alone costs 150-250 ms of start-up here (docs/cli.md, bench/cli_startup.py). One kept-alive
    connection, re-opened once if the master closed it."""

    def __init__(self, url: str, token: str, timeout: float = 30, ca_file: str = "") -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        # A private CA's file for an HTTPS master (TITUS_CA_FILE); empty: the system's trust store.
        self.ca_file = ca_file
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ApiError(0, None, f"master URL must be http(s)://host[:port], not {url!r}")
        self._scheme, self._host, self._port = parts.scheme, parts.hostname, parts.port
        self._prefix = parts.path.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/plain"}
        self._conn: Any = None

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = self._new_connection(self.timeout)
        return self._conn

    def _new_connection(self, timeout: float) -> Any:
        import http.client

        if self._scheme == "https":
            import ssl

            context = ssl.create_default_context(cafile=self.ca_file or None)
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout, context=context)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Response:
        """One HTTP exchange; connection failures become ApiError(0, ...)."""
        import http.client

        target = self._prefix + path + ("?" + urlencode(params) if params else "")
        body = None if json_body is None else json.dumps(json_body).encode()
        all_headers = {**self._headers, **(headers or {})}
        if body is not None:
            all_headers["Content-Type"] = "application/json"
        for attempt in (0, 1):
            conn = self._connection()
            conn.timeout = timeout or self.timeout
            if conn.sock is not None:
                conn.sock.settimeout(conn.timeout)
            try:
                conn.request(method, target, body=body, headers=all_headers)
                resp = conn.getresponse()
                data = resp.read()
                return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                if attempt == 1:
                    raise ApiError(0, None, f"the master at {self.url} closed the connection: {exc}") from exc
            except TimeoutError as exc:
                self.close()
                raise ApiError(
                    0, None, f"the master at {self.url} did not answer in {conn.timeout:g}s"
                ) from exc
            except OSError as exc:
                self.close()
                raise ApiError(0, None, f"cannot reach the master at {self.url}: {exc}") from exc
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def call(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        resp = self.request(method, path, params, json, headers)
        _raise_for(resp)
        text = resp.body.decode("utf-8", "replace")
        if resp.headers.get("content-type", "").startswith("application/json"):
            return _json_loads(text)
        return text

    def submit(self, descriptor: dict[str, Any], idempotency_key: str | None = None) -> str:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return str(self.call("POST", "/api/v3/jobs", json=descriptor, headers=headers)["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", f"/api/v3/jobs/{job_id}")
        return result

    def jobs(self, **filters: str) -> list[dict[str, Any]]:
        return self._all_pages("/api/v3/jobs", filters)

    def kill_job(self, job_id: str) -> None:
        self.call("DELETE", f"/api/v3/jobs/{job_id}")

    def scale(self, job_id: str, **capacity: int) -> dict[str, Any]:
        """Sets only the bounds given (Titus's capacityAttributes; `/instances` sets all three), then
        answers the job as it now is."""
        self.call("PUT", f"/api/v3/jobs/{job_id}/capacityAttributes", json=capacity)
        return self.job(job_id)

    def tasks(
        self, job_id: str | None = None, states: str | None = None, since_ms: int | None = None
    ) -> list[dict[str, Any]]:
        params = {}
        if job_id:
            params["jobIds"] = job_id
        if states:
            params["taskStates"] = states
        if since_ms is not None:
            params["stateSince"] = str(since_ms)
        return self._all_pages("/api/v3/tasks", params)

    def task(self, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", f"/api/v3/tasks/{task_id}")
        return result

    def kill_task(self, task_id: str, shrink: bool = False) -> None:
        self.call("DELETE", f"/api/v3/tasks/{task_id}", params={"shrink": str(shrink).lower()})

    def log_range(self, task_id: str, stream: str = "stdout", offset: int = 0, limit: int = 1 << 20,
                  wait_ms: int = 0) -> LogRange:
        """One byte range of a task's stream (GET /api/v3/tasks/{id}/logs with offset, limit, waitMs)."""
        params = {"stream": stream, "offset": offset, "limit": limit, "waitMs": wait_ms}
        path = f"/api/v3/tasks/{task_id}/logs"
        resp = self.request("GET", path, params, timeout=self.timeout + wait_ms / 1000)
        _raise_for(resp)
        h = resp.headers
        return LogRange(resp.body, int(h.get("x-titus-log-offset", 0)), int(h.get("x-titus-log-size", 0)),
                        int(h.get("x-titus-log-start", 0)), h.get("x-titus-log-final", "false") == "true",
                        h.get("x-titus-log-source", ""))

    def observe(
        self,
        job_id: str | None = None,
        since: int | None = None,
        filters: dict[str, str] | None = None,
        keep_alive_ms: int = 10_000,
    ) -> Iterator[ObserveEvent]:
        """ObserveJobs (every job matching the find filters) or ObserveJob (one job): the master's
        server-sent events, each a JobChangeNotification, keep-alives included. `since`, the last sequence
        seen, resumes after it (or the master sends a fresh snapshot when it no longer has it).

        On a connection of its own, since the stream holds it. Ends when the master ends the stream
        (ObserveJob, after the job's final update); ApiError(0, ...) when the connection is lost or the
        stream stays silent for three keep-alive periods, ApiError(status) when the master refuses."""
        import http.client

        path = f"/api/v3/jobs/{job_id}/observe" if job_id else "/api/v3/jobs/observe"
        target = self._prefix + path + "?" + urlencode({**(filters or {}), "keepAliveMs": keep_alive_ms})
        headers = {**self._headers, "Accept": "text/event-stream"}
        if since is not None:
            headers["Last-Event-ID"] = str(since)
        conn = self._new_connection(3 * keep_alive_ms / 1000 + self.timeout)
        try:
            conn.request("GET", target, headers=headers)
            resp = conn.getresponse()
            if resp.status >= 400:
                _raise_for(Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()))
            seq: int | None = None
            data: list[str] = []
            while True:
                raw = resp.readline()
                if not raw:
                    return  # the master ended the stream
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if not line:  # an event ends at a blank line
                    if data:
                        yield ObserveEvent(seq, _json_loads("\n".join(data)))
                    seq, data = None, []
                elif line.startswith("id:"):
                    seq = int(line[3:].strip())
                elif line.startswith("data:"):
                    data.append(line[6:] if line.startswith("data: ") else line[5:])
        except (http.client.HTTPException, OSError, ValueError) as exc:
            raise ApiError(0, None, f"lost the job stream from {self.url}: {exc!r}") from exc
        finally:
            conn.close()

    def logs(self, task_id: str, stream: str = "stdout") -> str:
        return str(self.call("GET", f"/api/v3/tasks/{task_id}/logs", params={"stream": stream}))

    def agents(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call("GET", "/api/v3/agent/instances")["items"]
        return result

    def set_agent_lifecycle(self, agent_id: str, state: str, detail: str = "") -> dict[str, Any]:
        result: dict[str, Any] = self.call(
            "PUT",
            f"/api/v3/agent/instances/{agent_id}/lifecycle",
            json={"lifecycleState": state, "detail": detail},
        )
        return result

    def instance_groups(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call("GET", "/api/v3/agent/instanceGroups")["items"]
        return result

    def instance_group(self, group_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", f"/api/v3/agent/instanceGroups/{group_id}")
        return result

    def set_instance_group_lifecycle(self, group_id: str, state: str, detail: str = "") -> dict[str, Any]:
        result: dict[str, Any] = self.call(
            "PUT",
            f"/api/v3/agent/instanceGroups/{group_id}/lifecycle",
            json={"lifecycleState": state, "detail": detail},
        )
        return result

    def capacity_groups(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call("GET", "/api/v3/management/applications")
        return result

    def capacity_group(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", f"/api/v3/management/applications/{name}")
        return result

    def create_capacity_group(self, sla: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.call("POST", "/api/v3/management/applications", json=sla)
        return result

    def update_capacity_group(self, sla: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.call(
            "PUT", f"/api/v3/management/applications/{sla['appName']}", json=sla
        )
        return result

    def delete_capacity_group(self, name: str) -> None:
        self.call("DELETE", f"/api/v3/management/applications/{name}")

    def _all_pages(self, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        page = 0
        while True:
            body = self.call("GET", path, params={**params, "page": page, "pageSize": 1000})
            items += body["items"]
            if not body["pagination"]["hasMore"]:
                return items
            page += 1


def _json_loads(text: str) -> Any:
    return json.loads(text)


def _raise_for(resp: Response) -> None:
    """A refusal (4xx/5xx) as ApiError, with the master's JSON error when it sent one."""
    if resp.status < 400:
        return
    text = resp.body.decode("utf-8", "replace")
    try:
        parsed = _json_loads(text)
    except ValueError:
        parsed = None
    raise ApiError(resp.status, parsed if isinstance(parsed, dict) else None, text[:500])
