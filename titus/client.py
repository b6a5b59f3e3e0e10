"""A small client for the v3 API, shared by the CLI, the tests and the benchmarks."""

from __future__ import annotations

from typing import Any

import requests


class ApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any] | None, text: str) -> None:
        self.status = status
        self.body = body or {}
        message = self.body.get("error") or text or f"HTTP {status}"
        fields = self.body.get("fields") or []
        if fields:
            message += "\n" + "\n".join(f"  {f.get('path')}: {f.get('reason')}" for f in fields)
        super().__init__(message)


class TitusClient:
    def __init__(self, url: str, token: str, timeout: float = 30) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"
        # A private CA's file for an HTTPS master (TITUS_CA_FILE); per request, because requests lets
        # REQUESTS_CA_BUNDLE override a session's own setting.
        self.verify: str | bool = True

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self.http.request(method, self.url + path, timeout=self.timeout, verify=self.verify,
                                     **kwargs)
        except requests.ConnectionError as exc:
            raise ApiError(0, None, f"cannot reach the master at {self.url}: {exc}") from exc
        if resp.status_code >= 400:
            try:
                body = resp.json()
            except ValueError:
                body = None
            raise ApiError(resp.status_code, body if isinstance(body, dict) else None, resp.text[:500])
        if resp.headers.get("Content-Type", "").startswith("application/json"):
            return resp.json()
        return resp.text

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
        result: dict[str, Any] = self.call("PUT", f"/api/v3/jobs/{job_id}/instances", json=capacity)
        return result

    def tasks(self, job_id: str | None = None, states: str | None = None) -> list[dict[str, Any]]:
        params = {}
        if job_id:
            params["jobIds"] = job_id
        if states:
            params["taskStates"] = states
        return self._all_pages("/api/v3/tasks", params)

    def task(self, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", f"/api/v3/tasks/{task_id}")
        return result

    def kill_task(self, task_id: str, shrink: bool = False) -> None:
        self.call("DELETE", f"/api/v3/tasks/{task_id}", params={"shrink": str(shrink).lower()})

    def logs(self, task_id: str, stream: str = "stdout") -> str:
        return str(self.call("GET", f"/api/v3/tasks/{task_id}/logs", params={"stream": stream}))

    def agents(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call("GET", "/api/v3/agent/instances")["items"]
        return result

    def _all_pages(self, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        page = 0
        while True:
            body = self.call("GET", path, params={**params, "page": page, "pageSize": 1000})
            items += body["items"]
            if not body["pagination"]["hasMore"]:
                return items
            page += 1
