"""Attacks on the master's HTTP edge, over real sockets, against a real `titus master` process.

Each attack asserts the refusal (status and the API's JSON error shape) and that the master keeps serving a
normal client afterwards; the memory attacks also assert that the master's RSS stays bounded (generous
limits: they are security properties, not speed goals). The master runs as a subprocess so its RSS and
descriptors are its own.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import batch_job, free_port, wait_for

API_TOKEN = "edge-attack-api-token"
AGENT_TOKEN = "edge-attack-agent-token"
HEADER_TIMEOUT_S = 2
IDLE_TIMEOUT_S = 5
CONNECTION_LIMIT = 1000


@dataclass
class Master:
    url: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def api(self, method: str, path: str, token: str = API_TOKEN, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        if path.split("?")[0].endswith("/observe"):
            # ObserveJobs streams without end: the status line and headers are the answer; the body is
            # read (an error's) only when the stream was refused.
            r = requests.request(method, self.url + path, headers=headers, timeout=30, stream=True, **kwargs)
            if r.status_code < 400:
                r.close()
                r._content = b""
            return r
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kwargs)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def assert_serving(self) -> None:
        """A normal client still gets a correct answer (and the process is alive)."""
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        r = self.api("GET", "/api/v3/jobs")
        assert r.status_code == 200, r.text
        assert "items" in r.json()


def spawn_master(data: Path, port: int | None = None, **env_extra: str) -> Master:
    """A `titus master` subprocess on `data`; `env_extra` overrides the TITUS_* settings (empty: unset)."""
    port = port or free_port()
    env = {**os.environ, "TITUS_INIT_CLUSTER": "true",
           "TITUS_PORT": str(port), "TITUS_DATA_DIR": str(data / "state"),
           "TITUS_API_TOKEN": API_TOKEN, "TITUS_AGENT_TOKEN": AGENT_TOKEN,
           "TITUS_SQLITE_SYNCHRONOUS": "NORMAL",
           "TITUS_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S), "TITUS_REQUEST_TIMEOUT_S": "4",
           "TITUS_IDLE_TIMEOUT_S": str(IDLE_TIMEOUT_S), "TITUS_CONNECTION_LIMIT": str(CONNECTION_LIMIT),
           "TITUS_LOG_LEVEL": "WARNING", **env_extra}
    env = {k: v for k, v in env.items() if v != ""}
    log = data / "master.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "titus.cli", "master"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    m = Master(f"http://127.0.0.1:{port}", port, proc, log)

    def healthy() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return requests.get(m.url + "/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    wait_for(healthy, timeout=60, what="master /healthz")
    return m


def stop_master(m: Master) -> None:
    m.proc.terminate()
    try:
        m.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        m.proc.kill()
        m.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Master]:
    m = spawn_master(tmp_path_factory.mktemp("edge-master"))
    yield m
    stop_master(m)


def _connect(m: Master, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", m.port), timeout=timeout)


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one HTTP/1.1 response with a Content-Length."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response: {buf!r}")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def _closed_by_peer(sock: socket.socket, within_s: float) -> bool:
    """True if the server closes the connection within `within_s` (reads until EOF or reset)."""
    sock.settimeout(within_s)
    deadline = time.monotonic() + within_s
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return False


def _assert_error_shape(body: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(body)
    assert isinstance(doc["error"], str) and doc["error"]
    assert isinstance(doc["fields"], list)
    return doc


# ----------------------------------------------------------------------------------------- /healthz
def test_healthz_without_a_token_says_only_up(master: Master) -> None:
    r = requests.get(master.url + "/healthz", timeout=10)
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}  # no role, leader URL, epoch or counts for anonymous probers
    rich = master.api("GET", "/healthz").json()
    assert rich["role"] == "leader" and "jobs" in rich and "agents" in rich
    wrong = requests.get(master.url + "/healthz", timeout=10,
                         headers={"Authorization": f"Bearer {AGENT_TOKEN}"})
    assert wrong.json() == {"status": "ok"}  # the agent token is not an operator's
    assert requests.get(master.url + "/metrics", timeout=10).status_code == 401
    assert master.api("GET", "/metrics").status_code == 200


# ----------------------------------------------------------------------------------------- bodies
def test_a_100_mb_body_is_refused_early_and_memory_stays_bounded(master: Master) -> None:
    before = master.rss_mb()
    sock = _connect(master)
    sock.sendall(
        b"POST /api/v3/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + API_TOKEN.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(100 << 20).encode() + b"\r\n\r\n"
    )
    sent = 0
    chunk = b"x" * (1 << 20)
    try:
        while sent < (100 << 20):
            sock.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the master stopped reading: what we want
    try:
        status, headers, body = _read_response(sock)
    except (ConnectionError, OSError):
        status, headers, body = 0, {}, b""
    sock.close()
    # Refused from the declared length, before the body: the master did not read 100 MB.
    assert sent < (100 << 20), "the master read the whole 100 MB body"
    if status:  # the reset may have beaten the answer to the client; when it arrived it is the JSON 413
        assert status == 413 and headers["content-type"].startswith("application/json")
        assert "Request Entity Too Large" in _assert_error_shape(body)["error"]
    assert master.rss_mb() - before < 50
    master.assert_serving()


def test_a_100_mb_chunked_body_is_cut_off_at_the_limit(master: Master) -> None:
    before = master.rss_mb()
    sock = _connect(master)
    sock.sendall(
        b"POST /api/v3/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + API_TOKEN.encode()
        + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    piece = b"x" * 65536
    frame = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    sent = 0
    try:
        while sent < (100 << 20):
            sock.sendall(frame)
            sent += len(piece)
    except (BrokenPipeError, ConnectionResetError):
        pass
    try:
        status, _, body = _read_response(sock)
    except (ConnectionError, OSError):
        status, body = 0, b""
    sock.close()
    assert sent < (100 << 20), "the master read the whole chunked body"
    if status:
        assert status == 413
        _assert_error_shape(body)
    assert master.rss_mb() - before < 50
    master.assert_serving()


def test_a_body_just_over_the_limit_gets_the_json_413(master: Master) -> None:
    r = master.api("POST", "/api/v3/jobs", data=b"{" + b" " * (1 << 20) + b"}",
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    _assert_error_shape(r.content)
    master.assert_serving()


@pytest.mark.parametrize("depth", [33, 1000, 100_000], ids=["just-over", "deep", "very-deep"])
def test_deeply_nested_json_is_a_400_naming_the_limit(master: Master, depth: int) -> None:
    for body in (b"[" * depth + b"]" * depth,
                 json.dumps(batch_job()).encode()[:-1] + b', "attributes": ' + b"{\"a\": " * depth + b"1"
                 + b"}" * depth + b"}"):
        r = master.api("POST", "/api/v3/jobs", data=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 400, r.text
        doc = _assert_error_shape(r.content)
        assert "32" in doc["error"] and doc["fields"][0]["path"] == "(body)"
    master.assert_serving()


def test_ordinary_nesting_is_accepted(master: Master) -> None:
    # More brackets in total than the depth limit, and brackets inside strings, but shallow: accepted.
    job = batch_job(command=["/bin/sh", "-c", "echo " + "[[[[{{{{" * 20])
    job["container"]["env"] = {f"K{i}": "[{" * 10 for i in range(40)}
    job["container"]["softConstraints"] = {"constraints": {}}
    job["container"]["hardConstraints"] = {"constraints": {}}
    job["container"]["attributes"] = {}
    r = master.api("POST", "/api/v3/jobs", json=job)
    assert r.status_code == 202, r.text


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/xml"])
@pytest.mark.parametrize("path,token", [("/api/v3/jobs", API_TOKEN),
                                        ("/api/v3/agent/instances/register", AGENT_TOKEN)],
                         ids=["jobs", "agent-register"])
def test_bodies_that_are_not_json_are_415(master: Master, content_type: str | None, path: str,
                                          token: str) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    body = json.dumps(batch_job()).encode()
    r = master.api("POST", path, token=token, data=body, headers=headers)
    assert r.status_code == 415, r.text
    doc = _assert_error_shape(r.content)
    assert doc["fields"] == [{"path": "Content-Type", "reason": "must be application/json"}]
    master.assert_serving()


# ----------------------------------------------------------------------------------------- connections
def _open_idle(master: Master, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        try:
            socks.append(_connect(master, timeout=5))
        except OSError:
            break
    return socks


def test_2000_idle_connections_do_not_lock_a_normal_client_out(master: Master) -> None:
    """Twice the connection cap, held open without a byte: the master sheds idle connections to make room."""
    before = master.rss_mb()
    idle = _open_idle(master, 2000)
    try:
        assert len(idle) >= 1900, f"could open only {len(idle)} connections"
        worst = 0.0
        for _ in range(20):
            started = time.monotonic()
            master.assert_serving()
            worst = max(worst, time.monotonic() - started)
        # Generous: before the fix, a client waited 25 s or more (until idle connections timed out).
        assert worst < 5.0, f"a normal request took {worst:.2f} s behind 2,000 idle connections"
        assert master.rss_mb() - before < 100
    finally:
        for s in idle:
            s.close()
    master.assert_serving()


def test_slowloris_headers_are_cut_off_at_the_header_deadline(master: Master) -> None:
    """Headers dribbled a line at a time keep an idle timeout from firing; the header deadline does not."""
    socks = [_connect(master) for _ in range(50)]
    for s in socks:
        s.sendall(b"GET /api/v3/jobs HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    closed = set()
    while time.monotonic() - started < HEADER_TIMEOUT_S + 15 and len(closed) < len(socks):
        for i, s in enumerate(socks):
            if i in closed:
                continue
            try:
                s.sendall(b"X-a: b\r\n")
            except (BrokenPipeError, ConnectionResetError):
                closed.add(i)
        master.assert_serving()  # served all along
        time.sleep(0.5)
    for s in socks:
        s.close()
    assert len(closed) == len(socks), f"only {len(closed)} of {len(socks)} slow clients were cut off"
    master.assert_serving()


def test_a_body_that_never_completes_is_cut_off(master: Master) -> None:
    sock = _connect(master)
    sock.sendall(b"POST /api/v3/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + API_TOKEN.encode()
                 + b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
    assert _closed_by_peer(sock, within_s=4 + 15), "a body that never completes held its connection"
    sock.close()
    master.assert_serving()


def test_an_idle_connection_is_closed_after_the_idle_timeout(master: Master) -> None:
    sock = _connect(master)
    assert _closed_by_peer(sock, within_s=IDLE_TIMEOUT_S + 15)
    sock.close()


# ----------------------------------------------------------------------------------------- who may call
PUBLIC = {"/healthz", "/api/v3/openapi.json", "/metrics"}  # /metrics checks its own token (test above)


def _routes() -> list[tuple[str, str, bool]]:
    """(method, path, agent channel?) for every route the app serves, from the app's own URL map."""
    from master.api.app import ApiConfig, create_app, is_agent_channel

    app = create_app(ApiConfig("a", "b"), None)  # type: ignore[arg-type]  # only the URL map is read
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.rule in PUBLIC or rule.rule.startswith("/ui"):
            continue  # the console's pages have a cookie login of their own: tests/ui/test_console_http.py
        path = rule.rule
        for arg in rule.arguments:
            path = path.replace(f"<{arg}>", "x1")
        agent = is_agent_channel(path)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            out.append((method, path, agent))
    return out


def test_every_route_refuses_no_token_a_wrong_token_and_the_other_channels_token(master: Master) -> None:
    routes = _routes()
    assert len(routes) > 20  # the whole API, not a sample
    for method, path, agent in routes:
        others = [API_TOKEN] if agent else [AGENT_TOKEN]
        if path == "/api/v3/agent/enrol":
            others.append(API_TOKEN)  # enrolment takes a bootstrap token and nothing else
        for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": f"Basic {API_TOKEN}"},
                        {"Authorization": "Bearer t\u00e9st-non-ascii"},
                        *({"Authorization": f"Bearer {other}"} for other in others)):
            r = requests.request(method, master.url + path, headers=headers, json={}, timeout=30)
            assert r.status_code == 401, (method, path, headers, r.text)
            _assert_error_shape(r.content)
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
    master.assert_serving()


def _register(master: Master, agent_id: str) -> int:
    reg = {"id": agent_id, "resources": {"cpu": 4, "memoryMB": 8192, "diskMB": 100_000, "networkMbps": 1000}}
    r = master.api("POST", "/api/v3/agent/instances/register", token=AGENT_TOKEN, json=reg)
    assert r.status_code == 200, r.text
    return int(r.json()["sessionEpoch"])


def test_an_agent_cannot_inject_logs_into_another_agents_task(master: Master) -> None:
    import threading

    victim = _register(master, "edge-victim")
    job = master.api("POST", "/api/v3/jobs", json=batch_job(command=["sleep", "600"])).json()["id"]

    def placed() -> str | None:
        tasks = master.api("GET", f"/api/v3/tasks?jobIds={job}").json()["items"]
        return tasks[0]["id"] if tasks and tasks[0]["status"]["state"] == "Launched" else None

    task_id: str = wait_for(placed, timeout=30, what="the task placed on the victim")
    evil = _register(master, "edge-evil")  # registered after the placement: the task is the victim's
    answer: dict[str, str] = {}
    reader = threading.Thread(target=lambda: answer.update(
        text=master.api("GET", f"/api/v3/tasks/{task_id}/logs").text))
    reader.start()

    def log_read() -> dict[str, Any] | None:
        r = master.api("GET", "/api/v3/agent/instances/edge-victim/assignments",
                       token=AGENT_TOKEN, params={"session": victim, "since": -1, "waitMs": 0})
        return next((read for read in r.json()["logReads"] if read["taskId"] == task_id), None)

    read: dict[str, Any] = wait_for(log_read, timeout=10, what="the log read on the victim's channel")

    def chunk(session: int, text: str) -> dict[str, Any]:
        data = text.encode()
        return {"sessionEpoch": session, "requestId": read["id"], "stream": read["stream"], "offset": 0,
                "size": len(data), "start": 0, "final": False, "dataB64": base64.b64encode(data).decode()}

    for _ in range(5):  # the attack of the issue: 3 of 5 reads returned the injected text
        r = master.api("POST", f"/api/v3/agent/instances/edge-evil/logs/{task_id}", token=AGENT_TOKEN,
                       json=chunk(evil, "INJECTED"))
        assert r.status_code == 403, r.text
        _assert_error_shape(r.content)
    r = master.api("POST", f"/api/v3/agent/instances/edge-victim/logs/{task_id}", token=AGENT_TOKEN,
                   json=chunk(victim, "genuine output"))
    assert r.status_code == 200, r.text
    reader.join(timeout=30)
    assert answer["text"] == "genuine output"
    # Nobody waits now: a second upload, even from the task's own agent, is not kept.
    r = master.api("POST", f"/api/v3/agent/instances/edge-victim/logs/{task_id}", token=AGENT_TOKEN,
                   json=chunk(victim, "late"))
    assert r.status_code == 404
    master.api("DELETE", f"/api/v3/jobs/{job}")
    master.assert_serving()


def test_uploads_for_made_up_tasks_are_refused_and_memory_stays_bounded(master: Master) -> None:
    evil = _register(master, "edge-flooder")
    before = master.rss_mb()
    big = base64.b64encode(b"A" * (600 * 1024)).decode()  # 800 KiB of base64: under the 2 MB upload cap
    with requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {AGENT_TOKEN}"
        for i in range(200):  # the attack grew the master from 57 MB to 487 MB
            r = http.post(f"{master.url}/api/v3/agent/instances/edge-flooder/logs/made-up-{i}", timeout=30,
                          json={"sessionEpoch": evil, "requestId": f"made-up-{i}", "dataB64": big})
            assert r.status_code == 403, r.text
    assert master.rss_mb() - before < 60
    master.assert_serving()
