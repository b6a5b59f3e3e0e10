"""Agent identity, attacked over real HTTP against a `titus master` process without the shared agent token.

Bootstrap tokens (short-lived, limited uses) are traded once for a credential bound to one agent id; with it
an agent registers, polls, reports and uploads logs only as itself and only for its own tasks; a revoked
credential is refused and its agent treated as lost; credentials survive a master restart. A real
`titus agent` enrols with a bootstrap token and keeps its credential in its data directory.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from agent.enrol import EnrolmentError, credential_path, enrol, stored_credential
from tests.conftest import batch_job, wait_for
from tests.security.test_api_edge import (
    AGENT_TOKEN,
    API_TOKEN,
    Master,
    _assert_error_shape,
    spawn_master,
    stop_master,
)

RESOURCES = {"cpu": 4, "memoryMB": 8192, "diskMB": 100_000, "networkMbps": 1000}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("identity")


@pytest.fixture(scope="module")
def master(data: Path) -> Iterator[Master]:
    # No shared agent token: agents must enrol (TITUS_AGENT_TOKEN="" unsets it).
    m = spawn_master(data, TITUS_AGENT_TOKEN="", TITUS_HEARTBEAT_TIMEOUT_MS="600000")
    yield m
    stop_master(m)


def _bootstrap(master: Master, uses: int = 1, ttl: int = 600) -> str:
    r = master.api("POST", "/api/v3/agent/bootstrapTokens", json={"ttlSeconds": ttl, "uses": uses})
    assert r.status_code == 201, r.text
    token: str = r.json()["token"]
    return token


def _as(credential: str, master: Master, method: str, path: str, **kwargs: Any) -> requests.Response:
    return master.api(method, "/api/v3/agent/instances" + path, token=credential, **kwargs)


def _register(master: Master, credential: str, agent_id: str) -> requests.Response:
    return _as(credential, master, "POST", "/register", json={"id": agent_id, "resources": RESOURCES})


@pytest.fixture(scope="module")
def agents(master: Master, data: Path) -> dict[str, tuple[str, int]]:
    """Two enrolled, registered agents: id -> (credential, session)."""
    token = _bootstrap(master, uses=2)
    out = {}
    for agent_id in ("id-alice", "id-bob"):
        credential = enrol(data / agent_id, [master.url], agent_id, token)
        r = _register(master, credential, agent_id)
        assert r.status_code == 200, r.text
        out[agent_id] = (credential, int(r.json()["sessionEpoch"]))
    return out


def test_enrolment_stores_a_private_credential_and_spends_the_bootstrap_token(
        master: Master, data: Path, agents: dict[str, tuple[str, int]]) -> None:
    path = credential_path(data / "id-alice")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"agentId": "id-alice", "credential": agents["id-alice"][0]}
    # A credential kept for another agent id is an error, not something to present under a new name.
    with pytest.raises(EnrolmentError, match="not 'id-mallory'"):
        enrol(data / "id-alice", [master.url], "id-mallory", "")
    # A restarted agent uses what it stored: no bootstrap token needed again.
    assert enrol(data / "id-alice", ["http://127.0.0.1:9"], "id-alice", "") == agents["id-alice"][0]
    listed = {c["agentId"] for c in master.api("GET", "/api/v3/agent/credentials").json()["items"]}
    assert {"id-alice", "id-bob"} <= listed
    # Both uses were spent: a third agent cannot enrol with the same token (it is no longer listed either).
    token_ids = {t["id"] for t in master.api("GET", "/api/v3/agent/bootstrapTokens").json()["items"]}
    assert not token_ids & {c["bootstrapTokenId"] for c in
                            master.api("GET", "/api/v3/agent/credentials").json()["items"]}


def test_bootstrap_tokens_are_limited_in_uses_and_time(master: Master, data: Path) -> None:
    once = _bootstrap(master, uses=1)
    enrol(data / "id-carol", [master.url], "id-carol", once)
    with pytest.raises(EnrolmentError, match="401"):
        enrol(data / "id-dave", [master.url], "id-dave", once)  # used up
    short = _bootstrap(master, uses=5, ttl=1)
    time.sleep(1.5)
    with pytest.raises(EnrolmentError, match="401"):
        enrol(data / "id-erin", [master.url], "id-erin", short)  # expired
    forged = once.rsplit(".", 1)[0] + ".forged-secret-forged-secret-forged"
    r = requests.post(master.url + "/api/v3/agent/enrol", json={"agentId": "id-x"}, timeout=10,
                      headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401
    _assert_error_shape(r.content)
    master.assert_serving()


def test_a_credential_enrolled_from_an_instance_registers_only_from_it(master: Master, data: Path) -> None:
    credential = enrol(data / "id-ec2", [master.url], "id-ec2", _bootstrap(master),
                       instance_id="i-0123456789abcdef0")
    for attributes, status in (({}, 403), ({"instanceId": "i-0fedcba9876543210"}, 403),
                               ({"instanceId": "i-0123456789abcdef0"}, 200)):
        r = _as(credential, master, "POST", "/register",
                json={"id": "id-ec2", "resources": RESOURCES, "attributes": attributes})
        assert r.status_code == status, (attributes, r.text)
    listed = {c["agentId"]: c for c in master.api("GET", "/api/v3/agent/credentials").json()["items"]}
    assert listed["id-ec2"]["instanceId"] == "i-0123456789abcdef0"


def test_an_enrolled_agent_id_cannot_be_taken_over_with_a_new_bootstrap_token(
        master: Master, agents: dict[str, tuple[str, int]]) -> None:
    token = _bootstrap(master)
    r = requests.post(master.url + "/api/v3/agent/enrol", json={"agentId": "id-alice"}, timeout=10,
                      headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 409, r.text
    assert "revoke" in _assert_error_shape(r.content)["error"]


def test_the_agent_channel_takes_neither_the_api_token_nor_a_made_up_credential(master: Master) -> None:
    for token in (API_TOKEN, AGENT_TOKEN, "titus-agent.0123456789abcdef.made-up-secret-made-up-secret",
                  _bootstrap(master)):
        r = master.api("POST", "/api/v3/agent/instances/register", token=token,
                       json={"id": "id-alice", "resources": RESOURCES})
        assert r.status_code == 401, (token, r.text)
    # And an agent credential is not an API token.
    creds = master.api("GET", "/api/v3/agent/credentials").json()["items"]
    assert creds
    master.assert_serving()


def test_an_agent_acts_only_as_itself(master: Master, agents: dict[str, tuple[str, int]]) -> None:
    alice, alice_session = agents["id-alice"]
    _, bob_session = agents["id-bob"]
    # Re-registering as another agent (the attack evicted all of that agent's tasks).
    r = _register(master, alice, "id-bob")
    assert r.status_code == 403 and _assert_error_shape(r.content)["fields"][0]["path"] == "id"
    # Polling another agent's desired set (it carries the tasks' env, secrets included).
    r = _as(alice, master, "GET", "/id-bob/assignments", params={"session": bob_session, "waitMs": 0})
    assert r.status_code == 403
    r = _as(alice, master, "POST", "/id-bob/status", json={"sessionEpoch": bob_session, "updates": []})
    assert r.status_code == 403
    r = _as(alice, master, "POST", "/id-bob/logs/any",
            json={"sessionEpoch": bob_session, "requestId": "x", "dataB64": ""})
    assert r.status_code == 403
    # The API routes refuse agent credentials.
    assert master.api("GET", "/api/v3/jobs", token=alice).status_code == 401
    assert master.api("GET", "/api/v3/agent/credentials", token=alice).status_code == 401
    # Its own channel works.
    r = _as(alice, master, "GET", "/id-alice/assignments", params={"session": alice_session, "waitMs": 0})
    assert r.status_code == 200, r.text
    master.assert_serving()


def test_a_revoked_agent_is_refused_and_treated_as_lost(master: Master, data: Path) -> None:
    credential = enrol(data / "id-frank", [master.url], "id-frank", _bootstrap(master))
    big = {**RESOURCES, "memoryMB": 65536}  # the only agent the job below fits on
    r = _as(credential, master, "POST", "/register", json={"id": "id-frank", "resources": big})
    session = int(r.json()["sessionEpoch"])
    spec = batch_job(command=["sleep", "600"])
    spec["container"]["resources"]["memoryMB"] = 32768
    r = master.api("POST", "/api/v3/jobs", json=spec)
    assert r.status_code == 202, r.text
    job = r.json()["id"]

    def on_frank() -> str | None:
        for t in master.api("GET", f"/api/v3/tasks?jobIds={job}").json()["items"]:
            if t["status"]["state"] == "Launched" and t["taskContext"].get("agent.id") == "id-frank":
                return str(t["id"])
        return None

    task_id = wait_for(on_frank, timeout=30, what="a task placed on the agent to revoke")
    r = master.api("DELETE", "/api/v3/agent/credentials/id-frank")
    assert r.status_code == 200 and r.json()["revoked"] is True
    calls: list[tuple[str, str, Any]] = [
        ("GET", "/id-frank/assignments", None),
        ("POST", "/id-frank/status", {"sessionEpoch": session, "updates": []}),
        ("POST", f"/id-frank/logs/{task_id}", {"sessionEpoch": session, "requestId": "x", "dataB64": ""}),
        ("POST", "/register", {"id": "id-frank", "resources": RESOURCES}),
    ]
    for method, path, body in calls:
        r = _as(credential, master, method, path, json=body, params={"session": session, "waitMs": 0})
        assert r.status_code == 401, (path, r.text)
        _assert_error_shape(r.content)

    def lost() -> bool:
        task = master.api("GET", f"/api/v3/tasks/{task_id}").json()
        return bool(task["status"]["state"] == "Finished" and task["status"]["reasonCode"] == "lost")

    wait_for(lost, timeout=30, what="the revoked agent's task to be lost")
    listed = master.api("GET", "/api/v3/agent/credentials").json()["items"]
    assert "id-frank" not in {c["agentId"] for c in listed}
    assert master.api("DELETE", "/api/v3/agent/credentials/id-frank").status_code == 404
    master.api("DELETE", f"/api/v3/jobs/{job}")
    master.assert_serving()


def test_credentials_survive_a_master_restart(master: Master, data: Path,
                                              agents: dict[str, tuple[str, int]]) -> None:
    stop_master(master)
    restarted = spawn_master(data, port=master.port, TITUS_AGENT_TOKEN="",
                             TITUS_HEARTBEAT_TIMEOUT_MS="600000")
    master.proc = restarted.proc  # the module fixture stops whichever process is current
    alice, _ = agents["id-alice"]
    assert _register(restarted, alice, "id-alice").status_code == 200
    assert _register(restarted, alice, "id-bob").status_code == 403
    revoked = stored_credential(data / "id-frank")
    assert revoked is not None
    assert _register(restarted, revoked, "id-frank").status_code == 401


def test_a_real_agent_enrols_with_a_bootstrap_token(master: Master, data: Path) -> None:
    token = _bootstrap(master)
    agent_dir = data / "real-agent"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TITUS_")}
    env.update({"TITUS_MASTER_URL": master.url, "TITUS_BOOTSTRAP_TOKEN": token,
                "TITUS_AGENT_ID": "id-real",
                "TITUS_DATA_DIR": str(agent_dir), "TITUS_RUNTIME": "process", "TITUS_AGENT_CPU": "1",
                "TITUS_AGENT_MEMORY_MB": "1024", "TITUS_SELF_FENCE": "false", "TITUS_LOG_LEVEL": "WARNING"})
    log = data / "real-agent.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "titus.cli", "agent"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        def registered() -> bool:
            assert proc.poll() is None, log.read_text()
            agents = master.api("GET", "/api/v3/agent/instances").json()["items"]
            return any(a["id"] == "id-real" for a in agents)

        wait_for(registered, timeout=60, what=f"the enrolled agent to register (log: {log})")
        assert stat.S_IMODE(credential_path(agent_dir).stat().st_mode) == 0o600
        creds = {c["agentId"] for c in master.api("GET", "/api/v3/agent/credentials").json()["items"]}
        assert "id-real" in creds
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _cli(master: Master, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "titus.cli", *args, "--url", master.url, "--token", API_TOKEN]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_the_cli_creates_tokens_and_lists_and_revokes_credentials(master: Master, data: Path) -> None:
    import json

    made = _cli(master, "agent-tokens", "create", "--uses", "1", "--ttl", "300", "--description", "cli",
                "--json")
    assert made.returncode == 0, made.stderr
    token = json.loads(made.stdout)["token"]
    listed = _cli(master, "agent-tokens", "list")
    assert json.loads(made.stdout)["id"] in listed.stdout and "cli" in listed.stdout
    enrol(data / "id-cli", [master.url], "id-cli", token)
    creds = _cli(master, "agent-credentials", "list", "--json")
    assert "id-cli" in {c["agentId"] for c in json.loads(creds.stdout)}
    revoked = _cli(master, "agent-credentials", "revoke", "id-cli")
    assert revoked.returncode == 0 and "revoked credential" in revoked.stdout
    again = _cli(master, "agent-credentials", "revoke", "id-cli")
    assert again.returncode == 3 and "no active credential" in again.stderr  # 3: not found (docs/cli.md)
    bad = _cli(master, "agent-tokens", "create", "--uses", "0")
    assert bad.returncode != 0
