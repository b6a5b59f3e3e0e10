"""Finished tasks' logs outlive their agent: the agent uploads them to S3 (a real moto_server over HTTP) once
the master recorded the end, and the master serves them from there, byte ranges included, after the agent
is gone; the retention rule is set on the prefix without touching the bucket's other rules."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from shared.log_archive import RULE_ID, LogArchiveError, S3LogArchive, from_settings
from tests.cli.harness import AGENT_ID, AGENTS, cli_cluster, titus
from tests.conftest import RunningMaster, batch_job, free_port, wait_for

pytestmark = pytest.mark.e2e

BUCKET = "titus-logs"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
SEQ = "".join(f"{i}\n" for i in range(1, 50_001)).encode()


@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    try:
        import moto.server  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"moto[server] is not installed in {sys.executable}: run scripts/setup.sh --test ({exc})")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **CREDENTIALS})
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("moto_server did not start")
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


def _s3(url: str) -> Any:
    return boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def test_logs_of_a_task_whose_agent_is_gone_come_from_s3(s3_url: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    s3 = _s3(s3_url)
    s3.create_bucket(Bucket=BUCKET)
    other_rule = {"ID": "someone-elses", "Status": "Enabled", "Filter": {"Prefix": "other/"},
                  "Expiration": {"Days": 3}}
    s3.put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration={"Rules": [other_rule]})
    archive = S3LogArchive(BUCKET, "task-logs", "us-east-1", s3_url, retention_days=14)
    archive.ensure_retention()
    archive.ensure_retention()  # idempotent: our rule once, theirs kept
    rules = s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    assert sorted(r["ID"] for r in rules) == sorted([RULE_ID, "someone-elses"])
    ours = next(r for r in rules if r["ID"] == RULE_ID)
    assert ours["Expiration"]["Days"] == 14 and ours["Filter"]["Prefix"] == "task-logs/"

    agent_env = {"TITUS_LOG_S3_BUCKET": BUCKET, "TITUS_LOG_S3_ENDPOINT_URL": s3_url, **CREDENTIALS}
    with cli_cluster(tmp_path, heartbeat_timeout_ms=2000, log_archive=archive, **agent_env) as master:
        task_id = _run_to_end(master, "seq 1 50000; echo on-stderr >&2")
        wait_for(lambda: _has(s3, f"task-logs/{task_id}/stdout") and _has(s3, f"task-logs/{task_id}/stderr"),
                 timeout=30, what="the agent to upload the task's logs")
        agent = AGENTS[master.url]
        agent.terminate()
        assert agent.wait(timeout=30) is not None
        wait_for(lambda: _agent_state(master) in ("Lost", None), timeout=30, what="the agent to be lost")

        r = titus(master, "task", "logs", task_id)
        assert r.exit_code == 0, r.output
        assert r.stdout_bytes == SEQ and "tail stored" not in r.stderr
        ranged = titus(master, "task", "logs", task_id, "--json", "--offset", "100", "--limit", "10")
        data = json.loads(ranged.stdout)
        assert data["text"] == SEQ[100:110].decode() and data["source"] == "s3" and data["final"] is True
        assert data["size"] == len(SEQ)
        assert titus(master, "task", "logs", task_id, "--stderr").stdout_bytes == b"on-stderr\n"
        assert titus(master, "task", "logs", task_id, "--tail", "6").stdout_bytes == b"50000\n"


def _agent_state(master: RunningMaster) -> str | None:
    agents = master.api("GET", "/api/v3/agent/instances").json()["items"]
    return next((str(a["state"]) for a in agents if a["id"] == AGENT_ID), None)


def _has(s3: Any, key: str) -> bool:
    try:
        s3.head_object(Bucket=BUCKET, Key=key)
        return True
    except s3.exceptions.ClientError:
        return False


def _run_to_end(master: RunningMaster, command: str) -> str:
    r = master.api("POST", "/api/v3/jobs", json=batch_job(command=["/bin/sh", "-c", command]))
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    wait_for(lambda: master.api("GET", f"/api/v3/jobs/{job_id}").json()["status"]["state"] == "Finished",
             timeout=60, what="the job to finish")
    tasks = master.api("GET", "/api/v3/tasks", params={"jobIds": job_id, "taskStates": "Finished"}).json()
    return str(tasks["items"][0]["id"])


def test_retention_zero_leaves_the_bucket_owners_lifecycle_alone(s3_url: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Terraform's log bucket carries its own rule (modules/log_bucket), and its masters hold no right to
    change the bucket: with TITUS_LOG_RETENTION_DAYS=0 the master neither reads nor writes the lifecycle."""
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    s3 = _s3(s3_url)
    s3.create_bucket(Bucket="owned-by-terraform")
    owners = {"ID": RULE_ID, "Status": "Enabled", "Filter": {"Prefix": "task-logs/"},
              "Expiration": {"Days": 7}}
    s3.put_bucket_lifecycle_configuration(Bucket="owned-by-terraform",
                                          LifecycleConfiguration={"Rules": [owners]})
    settings = {"TITUS_LOG_S3_BUCKET": "owned-by-terraform", "TITUS_LOG_S3_ENDPOINT_URL": s3_url}
    archive = from_settings({**settings, "TITUS_LOG_RETENTION_DAYS": "0"})
    assert archive is not None
    calls: list[str] = []
    archive.s3.meta.events.register("before-call", lambda model, **_: calls.append(model.name))
    archive.ensure_retention()
    assert calls == []
    assert s3.get_bucket_lifecycle_configuration(Bucket="owned-by-terraform")["Rules"][0]["Expiration"] == {
        "Days": 7}

    for bad in ("-1", "a week", "1.5"):
        with pytest.raises(LogArchiveError, match="TITUS_LOG_RETENTION_DAYS must be a whole number"):
            from_settings({**settings, "TITUS_LOG_RETENTION_DAYS": bad})
