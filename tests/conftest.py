"""Shared fixtures: a real master over real HTTP on 127.0.0.1, and job descriptor builders."""

from __future__ import annotations

import copy
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from master.server import MasterConfig, MasterServer

# Fixtures for real servers (ZooKeeper, Cassandra, dockerd + registry), started through scripts/services.
pytest_plugins = ["tests.fixtures.servers", "tests.runtime.docker_fixtures"]

API_TOKEN = "test-api-token"
AGENT_TOKEN = "test-agent-token"


def batch_job(size: int = 1, command: list[str] | None = None, **overrides: Any) -> dict[str, Any]:
    job: dict[str, Any] = {
        "owner": {"teamEmail": "team@example.com"},
        "applicationName": "hello",
        "container": {
            "resources": {"cpu": 0.5, "memoryMB": 64, "diskMB": 100, "networkMbps": 10},
            "image": {"name": "127.0.0.1:5000/titus/busybox", "tag": "latest"},
            "command": command or ["/bin/sh", "-c", "echo hello"],
        },
        "batch": {"size": size, "retryPolicy": {"immediate": {"retries": 0}}},
    }
    return _merge(job, overrides)


def service_job(desired: int = 2, **overrides: Any) -> dict[str, Any]:
    job: dict[str, Any] = {
        "owner": {"teamEmail": "team@example.com"},
        "applicationName": "web",
        "container": {
            "resources": {"cpu": 0.25, "memoryMB": 64, "diskMB": 100, "networkMbps": 10},
            "image": {"name": "127.0.0.1:5000/titus/busybox", "tag": "latest"},
            "command": ["/bin/sleep", "3600"],
        },
        "service": {"capacity": {"min": 0, "desired": desired, "max": 10}, "enabled": True,
                    "retryPolicy": {"immediate": {"retries": 10}}},
    }
    return _merge(job, overrides)


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Any, timeout: float = 20.0, interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


@dataclass
class RunningMaster:
    url: str
    server: MasterServer
    thread: threading.Thread

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {API_TOKEN}", **kwargs.pop("headers", {})}
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kwargs)

    def agent(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {AGENT_TOKEN}", **kwargs.pop("headers", {})}
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kwargs)


def start_master(data_dir: Path, heartbeat_timeout_ms: int = 15_000, **config: Any) -> RunningMaster:
    """A master in this process on 127.0.0.1, healthy when returned; `config` overrides MasterConfig fields
    (a fixed `port` to restart on, a `principals_file`, ...)."""
    settings: dict[str, Any] = {
        "port": free_port(), "data_dir": data_dir, "api_token": API_TOKEN, "agent_token": AGENT_TOKEN,
        "sqlite_synchronous": "NORMAL", "heartbeat_timeout_ms": heartbeat_timeout_ms, "init_cluster": True,
        **config,
    }
    server = MasterServer(MasterConfig(**settings))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.port}"
    wait_for(lambda: _healthy(url), what="master /healthz")
    return RunningMaster(url, server, thread)


def _healthy(url: str) -> bool:
    try:
        return requests.get(url + "/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture(scope="module")
def shared_master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMaster]:
    """One master for a module of tests that do not depend on each other's state."""
    running = start_master(tmp_path_factory.mktemp("master"))
    yield running
    running.server.shutdown()
    running.thread.join(timeout=10)


@pytest.fixture
def master(tmp_path: Path) -> Iterator[RunningMaster]:
    running = start_master(tmp_path / "master")
    yield running
    running.server.shutdown()
    running.thread.join(timeout=10)
