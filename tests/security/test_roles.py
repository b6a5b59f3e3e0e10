"""Caller identities and roles, over real HTTP against a `titus master` with a principals file.

Every API route is called with each role's token and the outcome checked against the role table written
out here (admin: everything; user: jobs and tasks plus reads; read-only: reads; credentials and bootstrap
tokens: admin only). A job's owner defaults to the caller's e-mail; kills name the caller in the status and
every change is in the audit log.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import batch_job, wait_for
from tests.security.test_api_edge import (
    API_TOKEN,
    Master,
    _assert_error_shape,
    _routes,
    spawn_master,
    stop_master,
)

TOKENS = {
    "admin": "roles-admin-token-0123456789",
    "user": "roles-user-token-0123456789",
    "read-only": "roles-reader-token-0123456789",
}
EMAILS = {"admin": "root@example.com", "user": "alice@example.com", "read-only": "rob@example.com"}


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Master]:
    data = tmp_path_factory.mktemp("roles")
    principals = data / "principals.json"
    principals.write_text(json.dumps({"principals": [
        {"name": role, "email": EMAILS[role], "role": role, "token": TOKENS[role]} for role in TOKENS]}))
    m = spawn_master(data, TITUS_PRINCIPALS_FILE=str(principals), TITUS_LOG_LEVEL="INFO")
    yield m
    stop_master(m)


def _expected_allowed(role: str, method: str, path: str) -> bool:
    if role == "admin":
        return True
    if path.startswith(("/api/v3/agent/bootstrapTokens", "/api/v3/agent/credentials")):
        return False
    if method == "GET":
        return True
    return role == "user" and path.startswith(("/api/v3/jobs", "/api/v3/tasks"))


@pytest.mark.parametrize("role", list(TOKENS))
def test_every_route_applies_the_role_table(master: Master, role: str) -> None:
    checked = 0
    for method, path, agent in _routes():
        if agent or path == "/api/v3/agent/enrol":
            continue  # agent credentials and bootstrap tokens: tests/security/test_agent_identity.py
        r = master.api(method, path, token=TOKENS[role], json={})
        if _expected_allowed(role, method, path):
            assert r.status_code not in (401, 403), (role, method, path, r.text)
        else:
            assert r.status_code == 403, (role, method, path, r.text)
            assert EMAILS[role] in _assert_error_shape(r.content)["error"]
        checked += 1
    assert checked > 15
    master.assert_serving()


def test_the_single_api_token_is_still_the_admin(master: Master) -> None:
    assert master.api("GET", "/api/v3/agent/credentials", token=API_TOKEN).status_code == 200


def test_owner_defaults_to_the_callers_email(master: Master) -> None:
    spec = batch_job(command=["sleep", "600"])
    del spec["owner"]
    r = master.api("POST", "/api/v3/jobs", token=TOKENS["user"], json=spec)
    assert r.status_code == 202, r.text
    job = master.api("GET", f"/api/v3/jobs/{r.json()['id']}").json()
    assert job["jobDescriptor"]["owner"]["teamEmail"] == "alice@example.com"
    given = batch_job()  # an explicit owner is kept
    r = master.api("POST", "/api/v3/jobs", token=TOKENS["user"], json=given)
    job = master.api("GET", f"/api/v3/jobs/{r.json()['id']}").json()
    assert job["jobDescriptor"]["owner"]["teamEmail"] == "team@example.com"
    # Still validated: a broken owner is a 400 naming the field, not silently replaced.
    bad = batch_job(owner={"teamEmail": "not-an-email"})
    r = master.api("POST", "/api/v3/jobs", token=TOKENS["user"], json=bad)
    assert r.status_code == 400 and r.json()["fields"][0]["path"] == "owner.teamEmail"


def test_kills_name_the_caller_and_every_change_is_audited(master: Master) -> None:
    spec = batch_job(size=2, command=["sleep", "600"])
    r = master.api("POST", "/api/v3/jobs", token=TOKENS["user"], json=spec)
    job_id = r.json()["id"]
    tasks = wait_for(lambda: (t := master.api("GET", f"/api/v3/tasks?jobIds={job_id}").json()["items"])
                     and len(t) == 2 and t, timeout=30, what="the job's tasks")
    r = master.api("DELETE", f"/api/v3/tasks/{tasks[0]['id']}", token=TOKENS["user"])
    assert r.status_code == 200, r.text
    task = master.api("GET", f"/api/v3/tasks/{tasks[0]['id']}").json()
    assert "killed by alice@example.com" in task["status"]["reasonMessage"]
    r = master.api("DELETE", f"/api/v3/jobs/{job_id}", token=TOKENS["admin"])
    assert r.status_code == 200, r.text
    job = master.api("GET", f"/api/v3/jobs/{job_id}").json()
    history = [job["status"], *job.get("statusHistory", [])]
    assert "killed by root@example.com" in [s["reasonMessage"] for s in history], history
    refused = master.api("DELETE", f"/api/v3/jobs/{job_id}", token=TOKENS["read-only"])
    assert refused.status_code == 403

    def audited() -> list[dict[str, object]]:
        lines = [json.loads(line) for line in master.log.read_text().splitlines() if line.startswith("{")]
        return [e for e in lines if e.get("logger") == "titus.audit"]

    entries = wait_for(lambda: len(a := audited()) >= 3 and a, timeout=10, what="audit lines")
    seen = {(e["method"], e["path"], e["email"], e["status"]) for e in entries}
    assert ("DELETE", f"/api/v3/tasks/{tasks[0]['id']}", "alice@example.com", 200) in seen
    assert ("DELETE", f"/api/v3/jobs/{job_id}", "root@example.com", 200) in seen
    assert ("POST", "/api/v3/jobs", "alice@example.com", 202) in seen
    # A refusal at the door never reaches the audit log as a change by rob (he made none).
    assert not any(e["email"] == "rob@example.com" and e["status"] == 200 for e in entries)


def test_a_bad_principals_file_stops_the_master_with_a_message(tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "principals.json"
    bad.write_text(json.dumps({"principals": [{"name": "x", "email": "x@example.com", "role": "root",
                                               "token": "t" * 20}]}))
    env = {"TITUS_INIT_CLUSTER": "true", "TITUS_API_TOKEN": API_TOKEN, "TITUS_PRINCIPALS_FILE": str(bad),
           "TITUS_DATA_DIR": str(tmp_path), "TITUS_PORT": "0", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "titus.cli", "master"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0 and "principals[0].role: must be one of admin, user, read-only" in out.stderr
