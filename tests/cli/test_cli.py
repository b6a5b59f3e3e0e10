"""The `titus` CLI against a real master over real HTTP with a real agent (OCI runtime, busybox from the local
registry): the commands of daily work, their human output (with the reasons), --json results and errors,
--wait and its progress line, and the documented exit codes (docs/cli.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.harness import AGENT_ID, cli_cluster, titus
from tests.conftest import API_TOKEN, RunningMaster, batch_job, service_job

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMaster]:
    with cli_cluster(tmp_path_factory.mktemp("cli")) as master:
        yield master


def write_job(tmp_path: Path, descriptor: dict[str, Any]) -> str:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(descriptor))
    return str(path)


def test_batch_submit_wait_then_job_get_and_task_get(cluster: RunningMaster, tmp_path: Path) -> None:
    job_file = write_job(
        tmp_path, batch_job(size=2, command=["/bin/sh", "-c", "echo hi from $TITUS_TASK_INDEX"])
    )
    r = titus(cluster, "job", "submit", job_file, "--wait", "--timeout", "120")
    assert r.exit_code == 0, r.output
    job_id = r.stdout.split()[1]
    assert f"job {job_id}: Finished" in r.stdout
    assert "tasks:" in r.stderr and "[" in r.stderr  # the progress line went to stderr, stdout has the result

    r = titus(cluster, "job", "get", job_id)
    assert r.exit_code == 0, r.output
    assert "active tasks: 0" in r.stdout and "finished tasks: 2" in r.stdout
    assert r.stdout.count("normal") >= 2 and "exit 0" in r.stdout

    data = json.loads(titus(cluster, "job", "get", job_id, "--json").stdout)
    assert len(data["finishedTasks"]) == 2 and data["tasks"] == []
    task_id = data["finishedTasks"][0]["id"]

    r = titus(cluster, "task", "get", task_id)
    assert r.exit_code == 0, r.output
    assert f"task {task_id}" in r.stdout and "reason:     normal" in r.stdout and AGENT_ID in r.stdout
    for state in ("Accepted", "Launched", "Started", "Finished"):
        assert state in r.stdout  # the status history
    assert json.loads(titus(cluster, "task", "get", task_id, "--json").stdout)["id"] == task_id


def test_failures_show_their_reasons_in_human_output(cluster: RunningMaster, tmp_path: Path) -> None:
    # Exit code 3; a memory hog in 64 MB (tail keeps the newline-free "line" in memory); a runtime limit.
    # Of two tasks, index 1 fails: exit code 6 and only that one is named.
    failing = batch_job(size=2, command=["/bin/sh", "-c", '[ "$TITUS_TASK_INDEX" = 0 ] || exit 3'])
    r = titus(cluster, "job", "submit", write_job(tmp_path, failing), "--wait", "--timeout", "120")
    assert r.exit_code == 6, r.output
    assert "(index 1): failed" in r.stdout and "exit 3" in r.stdout and "(index 0)" not in r.stdout

    oom = batch_job(command=["/bin/sh", "-c", "head -c 400000000 /dev/zero | tail"])
    r = titus(cluster, "job", "submit", write_job(tmp_path, oom), "--wait", "--timeout", "120")
    assert r.exit_code == 6, r.output
    assert "out of memory" in r.stdout
    oom_job = r.stdout.split()[1]
    assert "out of memory" in titus(cluster, "job", "get", oom_job).stdout
    assert "out of memory" in titus(cluster, "task", "list", "--job", oom_job, "--states", "Finished").stdout

    limited = batch_job(command=["/bin/sleep", "60"], batch={"size": 1, "runtimeLimitSec": 1})
    r = titus(cluster, "job", "submit", write_job(tmp_path, limited), "--wait", "--timeout", "120")
    assert r.exit_code == 6, r.output
    assert "runtimeLimitExceeded" in r.stdout


def test_service_wait_on_submit_scale_task_kill_and_job_kill(cluster: RunningMaster, tmp_path: Path) -> None:
    written = service_job(desired=2)
    del written["service"]["enabled"]  # a hand-written file: the CLI submits it enabled, as Titus clients do
    r = titus(cluster, "job", "submit", write_job(tmp_path, written), "--wait", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    job_id = data["job"]["id"]
    assert data["job"]["jobDescriptor"]["service"]["enabled"] is True
    assert [t["status"]["state"] for t in data["tasks"]] == ["Started", "Started"]
    assert "2/2 Started" in r.stderr

    r = titus(cluster, "job", "scale", job_id, "--desired", "1", "--wait")
    assert r.exit_code == 0, r.output
    assert "desired 1" in r.stdout and f"job {job_id}: 1 tasks Started" in r.stdout
    assert len(cluster.api("GET", "/api/v3/tasks", params={"jobIds": job_id}).json()["items"]) == 1

    task_id = json.loads(titus(cluster, "task", "list", "--job", job_id, "--json").stdout)[0]["id"]
    r = titus(cluster, "task", "kill", task_id, "--wait")
    assert r.exit_code == 0, r.output
    assert f"task {task_id}: Finished (killed" in r.stdout

    r = titus(cluster, "job", "kill", job_id, "--wait")
    assert r.exit_code == 0, r.output
    assert f"job {job_id}: Finished" in r.stdout
    assert cluster.api("GET", f"/api/v3/jobs/{job_id}").json()["status"]["state"] == "Finished"


def test_wait_gives_up_with_exit_5_and_says_why_it_is_pending(cluster: RunningMaster, tmp_path: Path) -> None:
    huge = service_job(desired=1, container={"resources": {"cpu": 0.25, "memoryMB": 60000}})
    r = titus(cluster, "job", "submit", write_job(tmp_path, huge), "--wait", "--timeout", "1", "--json")
    assert r.exit_code == 5, r.output
    error = json.loads(r.stdout)["error"]
    assert error["exitCode"] == 5 and "pending:" in error["message"]
    job_id = error["message"].split("job ")[1].split()[0]
    assert "pending:" in titus(cluster, "job", "get", job_id).stdout
    assert titus(cluster, "job", "kill", job_id).exit_code == 0


def test_agent_commands(cluster: RunningMaster) -> None:
    r = titus(cluster, "agent", "list")
    assert r.exit_code == 0, r.output
    assert AGENT_ID in r.stdout and "asg-cli" in r.stdout and "Active" in r.stdout
    r = titus(cluster, "agent", "lifecycle", AGENT_ID, "PhasedOut", "--detail", "kernel upgrade")
    assert r.exit_code == 0, r.output
    try:
        r = titus(cluster, "agent", "get", AGENT_ID)
        assert "PhasedOut (kernel upgrade)" in r.stdout and "free:" in r.stdout
        view = json.loads(titus(cluster, "agent", "get", AGENT_ID, "--json").stdout)
        assert view["lifecycle"] == "PhasedOut"
    finally:
        assert titus(cluster, "agent", "lifecycle", AGENT_ID, "Active").exit_code == 0
    r = titus(cluster, "agent", "get", "no-such-agent", "--json")
    assert r.exit_code == 3
    assert json.loads(r.stdout)["error"]["message"] == "agent no-such-agent not found"
    assert titus(cluster, "agent", "lifecycle", AGENT_ID, "Sleeping").exit_code == 2


def test_instance_group_commands(cluster: RunningMaster) -> None:
    r = titus(cluster, "instance-group", "list")
    assert r.exit_code == 0, r.output
    assert "asg-cli" in r.stdout
    r = titus(cluster, "instance-group", "lifecycle", "asg-cli", "PhasedOut", "--detail", "retiring")
    assert r.exit_code == 0, r.output
    try:
        r = titus(cluster, "instance-group", "get", "asg-cli")
        assert "PhasedOut (retiring)" in r.stdout and AGENT_ID in r.stdout
        assert (
            json.loads(titus(cluster, "agent", "get", AGENT_ID, "--json").stdout)["lifecycle"] == "PhasedOut"
        )
    finally:
        assert titus(cluster, "instance-group", "lifecycle", "asg-cli", "Active").exit_code == 0
    assert titus(cluster, "instance-group", "get", "nope").exit_code == 3


def test_capacity_group_commands(cluster: RunningMaster, tmp_path: Path) -> None:
    r = titus(
        cluster,
        "capacity-group",
        "create",
        "payments",
        "--tier",
        "flex",
        "--instances",
        "2",
        "--cpu",
        "1",
        "--memory-mb",
        "256",
        "--disk-mb",
        "100",
        "--network-mbps",
        "10",
    )
    assert r.exit_code == 0, r.output
    r = titus(
        cluster,
        "capacity-group",
        "create",
        "payments",
        "--tier",
        "flex",
        "--instances",
        "2",
        "--cpu",
        "1",
        "--memory-mb",
        "256",
        "--json",
    )
    assert r.exit_code == 2
    assert json.loads(r.stdout)["error"]["httpStatus"] == 409

    r = titus(
        cluster,
        "job",
        "submit",
        write_job(tmp_path, service_job(desired=1, capacityGroup="payments")),
        "--wait",
    )
    assert r.exit_code == 0, r.output
    job_id = r.stdout.split()[1]
    r = titus(cluster, "capacity-group", "get", "payments")
    assert "reserved:    cpu 2, mem 512 MB" in r.stdout and "used:        cpu 0.25, mem 64 MB" in r.stdout
    assert "by 1 tasks" in r.stdout
    assert "payments" in titus(cluster, "capacity-group", "list").stdout

    r = titus(cluster, "capacity-group", "update", "payments", "--instances", "3")
    assert r.exit_code == 0, r.output
    group = json.loads(titus(cluster, "capacity-group", "get", "payments", "--json").stdout)
    assert group["instanceCount"] == 3 and group["resourceDimension"]["memoryMB"] == 256

    r = titus(
        cluster,
        "capacity-group",
        "create",
        "bad",
        "--tier",
        "flex",
        "--instances",
        "1",
        "--cpu",
        "-1",
        "--memory-mb",
        "64",
        "--json",
    )
    assert r.exit_code == 2
    assert json.loads(r.stdout)["error"]["fields"][0]["path"] == "resourceDimension.cpu"

    assert titus(cluster, "job", "kill", job_id, "--wait").exit_code == 0
    assert titus(cluster, "capacity-group", "delete", "payments").exit_code == 0
    r = titus(cluster, "capacity-group", "get", "payments")
    assert r.exit_code == 3 and "not found" in r.stderr


def test_errors_and_exit_codes(cluster: RunningMaster, tmp_path: Path) -> None:
    bad = batch_job(container={"resources": {"memoryMB": 0}})
    r = titus(cluster, "job", "submit", write_job(tmp_path, bad))
    assert r.exit_code == 2
    assert "container.resources.memoryMB" in r.stderr and r.stdout == ""
    r = titus(cluster, "job", "submit", write_job(tmp_path, bad), "--json")
    assert r.exit_code == 2
    error = json.loads(r.stdout)["error"]
    assert error["httpStatus"] == 400 and error["fields"][0]["path"] == "container.resources.memoryMB"

    (tmp_path / "broken.json").write_text("{not json")
    r = titus(cluster, "job", "submit", str(tmp_path / "broken.json"), "--json")
    assert r.exit_code == 2 and "not valid JSON" in json.loads(r.stdout)["error"]["message"]

    r = titus(cluster, "task", "get", "no-such-task", "--json")
    assert r.exit_code == 3 and json.loads(r.stdout)["error"]["httpStatus"] == 404
    r = titus(cluster, "job", "list", token="wrong-token")
    assert r.exit_code == 4
    r = titus(cluster, "job", "list", "--json", token="wrong-token")
    assert r.exit_code == 4 and json.loads(r.stdout)["error"]["httpStatus"] == 401
    r = titus(cluster, "job", "list", "--url", "http://127.0.0.1:1", "--json")
    assert r.exit_code == 1 and "cannot reach the master" in json.loads(r.stdout)["error"]["message"]
    # A usage error (no such option) with --json: a JSON error object too, click's exit code 2.
    r = titus(cluster, "job", "scale", "x", "--desired", "many", "--json")
    assert r.exit_code == 2 and "many" in json.loads(r.stdout)["error"]["message"]
    r = titus(cluster, "job", "scale", "x", "--json")
    assert r.exit_code == 2 and "--desired" in json.loads(r.stdout)["error"]["message"]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "titus.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_shell_completion_is_clicks_and_knows_every_command() -> None:
    script = _cli("completion", "bash")
    assert script.returncode == 0 and "_TITUS_COMPLETE" in script.stdout
    done = subprocess.run(
        ["titus"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            **os.environ,
            "_TITUS_COMPLETE": "bash_complete",
            "COMP_WORDS": "titus capacity-",
            "COMP_CWORD": "1",
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        },
    )
    assert done.returncode == 0 and "plain,capacity-group" in done.stdout.splitlines()
    done = subprocess.run(
        ["titus"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            **os.environ,
            "_TITUS_COMPLETE": "bash_complete",
            "COMP_WORDS": "titus agent li",
            "COMP_CWORD": "2",
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        },
    )
    assert "plain,list" in done.stdout.splitlines() and "plain,lifecycle" in done.stdout.splitlines()


def test_help_imports_no_http_client_master_or_agent() -> None:
    """What makes start-up fast (bench/cli_startup.py measures it): `--help` and `job --help` import
    neither an HTTP library nor the master, the agent or the cloud libraries."""
    code = (
        "import sys; from titus.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print('MODULES', ' '.join(sorted(sys.modules)))"
    )
    for args in (["--help"], ["job", "--help"], ["agent", "--help"]):
        done = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60, check=True
        )
        modules = set(done.stdout.split("MODULES ")[1].split())
        heavy = {
            m
            for m in modules
            if m.split(".")[0]
            in {"requests", "urllib3", "master", "agent", "boto3", "botocore", "pydantic", "flask", "http"}
        }
        assert heavy == set(), (args, heavy)


def test_completion_offers_ids_from_the_master(cluster: RunningMaster, tmp_path: Path) -> None:
    r = titus(cluster, "job", "submit", write_job(tmp_path, service_job(desired=0)), "--json")
    job_id = json.loads(r.stdout)["id"]

    def complete(words: str, cword: int) -> list[str]:
        env = {**os.environ, "_TITUS_COMPLETE": "bash_complete", "COMP_WORDS": words,
               "COMP_CWORD": str(cword), "TITUS_URL": cluster.url, "TITUS_API_TOKEN": API_TOKEN,
               "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        done = subprocess.run(["titus"], capture_output=True, text=True, timeout=60, check=False, env=env)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    assert f"plain,{job_id}" in complete(f"titus job get {job_id[:6]}", 3)
    assert complete("titus agent get cli-", 3) == [f"plain,{AGENT_ID}"]
    assert "plain,asg-cli" in complete("titus instance-group get asg", 3)
    assert "plain,DEFAULT" in complete("titus capacity-group get DEF", 3)
    # Without a master to ask, completion offers nothing and prints no error into the shell.
    env = {**os.environ, "_TITUS_COMPLETE": "bash_complete", "COMP_WORDS": "titus job get ab",
           "COMP_CWORD": "3", "TITUS_URL": "http://127.0.0.1:1", "TITUS_API_TOKEN": API_TOKEN,
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(["titus"], capture_output=True, text=True, timeout=60, check=False, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "" and done.stderr == ""
    assert titus(cluster, "job", "kill", job_id).exit_code == 0
