"""An EMULATION of the published Mesos v1 HTTP APIs, served on 127.0.0.1 inside the test process. NOT Mesos.

Mesos cannot be installed on this machine, so the framework scheduler and the executor are tested at the
boundary the Apache Mesos documentation defines:
- "Scheduler HTTP API" (docs/scheduler-http-api.md): POST /api/v1/scheduler; SUBSCRIBE opens a stream
  (200, chunked, `Mesos-Stream-Id` header) of events in RecordIO framing ("<length>\\n<json>"); every other
  call is a separate POST answered 202 Accepted.
- "Executor HTTP API" (docs/executor-http-api.md): the same shape at POST /api/v1/executor on the agent.
- GET /version, which pymesos's scheduler driver reads first.

It records every call and lets a test push any event; it has none of Mesos's own logic (no allocator, no
agents, no status update manager), so each test plays Mesos's part by sending the events Mesos would.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Call = dict[str, Any]


class MesosEmulator:
    def __init__(self, path: str, on_subscribe: Callable[[Call], list[dict[str, Any]]]) -> None:
        self.path = path
        self.on_subscribe = on_subscribe
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._streams: list[queue.Queue[bytes | None]] = []
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path == "/version":
                    self._reply(200, {"version": "1.11.0", "git_tag": "emulated"})
                else:
                    self._reply(404, {})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != emulator.path:
                    self._reply(404, {})
                    return
                call: Call = json.loads(body or b"{}")
                emulator._record(call)
                if call.get("type") != "SUBSCRIBE":
                    self.send_response(202)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                stream: queue.Queue[bytes | None] = queue.Queue()
                for event in emulator.on_subscribe(call):
                    stream.put(_record_io(event))
                with emulator._lock:
                    emulator._streams.append(stream)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Mesos-Stream-Id", str(uuid.uuid4()))
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.close_connection = True
                try:
                    while True:
                        try:
                            item = stream.get(timeout=0.25)
                        except queue.Empty:  # Mesos heartbeats idle streams; a closed client shows here
                            item = _record_io({"type": "HEARTBEAT"})
                        if item is None:  # the test drops the connection
                            break
                        self.wfile.write(f"{len(item):x}\r\n".encode() + item + b"\r\n")
                        self.wfile.flush()
                except OSError:
                    pass
                finally:
                    with emulator._lock:
                        if stream in emulator._streams:
                            emulator._streams.remove(stream)

            def _reply(self, code: int, value: Any) -> None:
                data = json.dumps(value).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> MesosEmulator:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.drop()
        self.server.shutdown()
        self.server.server_close()

    def _record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def send(self, event: dict[str, Any]) -> None:
        """Push one event down the current subscription's stream."""
        with self._lock:
            streams = list(self._streams)
        assert streams, "no subscriber connected"
        streams[-1].put(_record_io(event))

    def drop(self) -> None:
        """Close every open event stream, as a failing-over Mesos master would."""
        with self._lock:
            streams = list(self._streams)
        for s in streams:
            s.put(None)

    def subscribers(self) -> int:
        with self._lock:
            return len(self._streams)

    def of_type(self, kind: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.get("type") == kind]

    def wait_call(self, kind: str, predicate: Callable[[Call], bool] = lambda c: True,
                  timeout: float = 20.0) -> Call:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for call in self.of_type(kind):
                if predicate(call):
                    return call
            time.sleep(0.02)
        kinds = [c.get("type") for c in self.calls]
        raise AssertionError(f"no {kind} call matched within {timeout}s; calls: {kinds}")


def _record_io(event: dict[str, Any]) -> bytes:
    data = json.dumps(event).encode()
    return str(len(data)).encode() + b"\n" + data


# ------------------------------------------------------------------------ scheduler API event builders
def scheduler_master(framework_id: str = "") -> MesosEmulator:
    """A Mesos master's scheduler endpoint that answers SUBSCRIBE with SUBSCRIBED (keeping a given id)."""

    def subscribed(call: Call) -> list[dict[str, Any]]:
        given = (call.get("framework_id") or {}).get("value")
        fid = given or framework_id or f"fw-{uuid.uuid4().hex[:12]}"
        return [{"type": "SUBSCRIBED", "subscribed": {"framework_id": {"value": fid},
                                                        "heartbeat_interval_seconds": 15}}]

    return MesosEmulator("/api/v1/scheduler", subscribed).start()


def scalar(name: str, value: float) -> dict[str, Any]:
    return {"name": name, "type": "SCALAR", "scalar": {"value": value}, "role": "*"}


def offer(offer_id: str, agent_id: str, cpus: float = 4, mem: float = 4096, disk: float = 10_000,
          network: float = 1000, zone: str = "us-east-1a",
          extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "id": {"value": offer_id}, "framework_id": {"value": "ignored"}, "agent_id": {"value": agent_id},
        "hostname": f"{agent_id}.example",
        "resources": [scalar("cpus", cpus), scalar("mem", mem), scalar("disk", disk),
                      scalar("network_bandwidth", network),
                      {"name": "ports", "type": "RANGES", "role": "*",
                       "ranges": {"range": [{"begin": 31000, "end": 32000}]}}, *(extra or [])],
        "attributes": [{"name": "zone", "type": "TEXT", "text": {"value": zone}},
                       {"name": "instance_type", "type": "TEXT", "text": {"value": "m5.xlarge"}},
                       {"name": "tier", "type": "TEXT", "text": {"value": "flex"}}],
    }


def offers_event(*offers: dict[str, Any]) -> dict[str, Any]:
    return {"type": "OFFERS", "offers": {"offers": list(offers)}}


def update_event(task_id: str, agent_id: str, state: str, message: str = "", with_uuid: bool = True,
                 data: str | None = None, reason: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"task_id": {"value": task_id}, "agent_id": {"value": agent_id}, "state": state,
                              "source": "SOURCE_EXECUTOR", "timestamp": time.time()}
    if message:
        status["message"] = message
    if with_uuid:
        status["uuid"] = "AAECAwQFBgcICQoLDA0ODw=="  # bytes, base64 as in the JSON form of protobuf
    if data is not None:
        status["data"] = data
    if reason is not None:
        status["reason"] = reason
    return {"type": "UPDATE", "update": {"status": status}}
