"""The agent's MasterClient over real HTTP: several master URLs, moving on when one cannot be reached."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agent.agent import AgentConfig
from agent.master_client import MasterClient, MasterUnavailable, SessionExpired
from tests.conftest import free_port


class _Handler(BaseHTTPRequestHandler):
    status = 200

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        self.rfile.read(length)
        body = json.dumps({"sessionEpoch": 7, "path": self.path}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def live_master() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


CONFIG = AgentConfig(agent_id="a1", cpu=1, memory_mb=128, disk_mb=100, network_mbps=10)


def test_a_dead_master_costs_one_failed_call_then_the_next_url_serves(live_master: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    client = MasterClient(f"{dead}, {live_master}", "token")
    with pytest.raises(MasterUnavailable, match=dead):
        client.register(CONFIG, [])
    assert client.register(CONFIG, [])["sessionEpoch"] == 7
    assert client.register(CONFIG, [])["sessionEpoch"] == 7  # stays on the one that answers


def test_http_errors_do_not_rotate(live_master: str) -> None:
    client = MasterClient([live_master, f"http://127.0.0.1:{free_port()}"], "token")
    _Handler.status = 409
    try:
        with pytest.raises(SessionExpired):
            client.register(CONFIG, [])
    finally:
        _Handler.status = 200
    assert client.base.startswith(live_master)


def test_at_least_one_url_is_required() -> None:
    with pytest.raises(ValueError, match="at least one"):
        MasterClient(" , ", "token")
