"""Task logs end to end: full stdout/stderr and byte ranges through the agent channel (not the 16 KiB tail),
`titus task logs --follow` on a running task, and rotation on the agent with a size bound per task. A real
master over real HTTP, a real agent (OCI runtime) and real tasks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from master.job_manager import MAX_FOLLOW_WAITS
from tests.cli.harness import cli_cluster, titus
from tests.conftest import API_TOKEN, RunningMaster, batch_job, wait_for

pytestmark = pytest.mark.e2e

SEQ = "".join(f"{i}\n" for i in range(1, 100_001)).encode()  # 588,895 bytes, the size of the log


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningMaster, Path]]:
    tmp = tmp_path_factory.mktemp("logs")
    # A 2 MiB bound per task: 1 MiB per stream on disk, rotated down to about half of that.
    with cli_cluster(tmp, TITUS_TASK_LOG_MAX_MB="2") as master:
        yield master, tmp / "agent"


def _submit(master: RunningMaster, command: str) -> str:
    r = master.api("POST", "/api/v3/jobs", json=batch_job(command=["/bin/sh", "-c", command]))
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]

    def started() -> list[dict[str, Any]]:
        items = master.api("GET", "/api/v3/tasks", params={"jobIds": job_id}).json()["items"]
        return [t for t in items if t["status"]["state"] == "Started"]

    tasks = wait_for(started, timeout=60, what="a Started task")
    return str(tasks[0]["id"])


def _headers(master: RunningMaster, task_id: str, **params: Any) -> dict[str, str]:
    r = master.api("GET", f"/api/v3/tasks/{task_id}/logs", params=params)
    assert r.status_code == 200, r.text
    return {k.lower(): v for k, v in r.headers.items()}


def test_full_logs_and_byte_ranges_of_a_running_then_finished_task(
    cluster: tuple[RunningMaster, Path],
) -> None:
    master, _ = cluster
    # 589 KB of stdout: bigger than the old 16 KiB tail, smaller than the rotation bound (1 MiB a stream).
    task_id = _submit(master, "seq 1 100000; echo all-written >&2; sleep 60")
    wait_for(lambda: b"all-written" in titus(master, "task", "logs", task_id, "--stderr").stdout_bytes,
             timeout=30, what="the task to write everything")
    r = titus(master, "task", "logs", task_id)
    assert r.exit_code == 0, r.output
    assert r.stdout_bytes == SEQ

    r = titus(master, "task", "logs", task_id, "--offset", "10", "--limit", "20")
    assert r.stdout_bytes == SEQ[10:30]
    r = titus(master, "task", "logs", task_id, "--tail", "7")
    assert r.stdout_bytes == b"100000\n"
    data = json.loads(titus(master, "task", "logs", task_id, "--json", "--offset", str(len(SEQ) - 13)).stdout)
    assert data["offset"] == len(SEQ) - 13 and data["size"] == len(SEQ) and data["text"] == "99999\n100000\n"
    assert data["source"] == "agent" and data["final"] is False
    headers = _headers(master, task_id, offset=-5)
    assert headers["x-titus-log-offset"] == str(len(SEQ) - 5) and headers["x-titus-log-final"] == "false"

    # Finished (killed): the agent still holds the files, so the whole log is still served, marked final.
    assert titus(master, "task", "kill", task_id, "--wait").exit_code == 0
    r = titus(master, "task", "logs", task_id)
    assert r.exit_code == 0 and r.stdout_bytes == SEQ
    assert _headers(master, task_id)["x-titus-log-final"] == "true"

    bad = master.api("GET", f"/api/v3/tasks/{task_id}/logs", params={"limit": 0})
    assert bad.status_code == 400 and bad.json()["fields"][0]["path"] == "limit"
    assert titus(master, "task", "logs", task_id, "--tail", "5", "--offset", "1").exit_code == 2
    assert titus(master, "task", "logs", "no-such-task").exit_code == 3


def test_follow_streams_lines_as_they_are_written_and_ends_with_the_task(
    cluster: tuple[RunningMaster, Path],
) -> None:
    master, _ = cluster
    task_id = _submit(master, "sleep 1; for i in $(seq 1 15); do echo line $i; sleep 0.2; done")
    env = {**os.environ, "TITUS_URL": master.url, "TITUS_API_TOKEN": API_TOKEN}
    proc = subprocess.Popen([sys.executable, "-m", "titus.cli", "task", "logs", task_id, "--follow"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    arrivals: list[tuple[float, bytes]] = []
    for line in iter(proc.stdout.readline, b""):
        arrivals.append((time.monotonic(), line))
    assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    assert [line for _, line in arrivals] == [f"line {i}\n".encode() for i in range(1, 16)]
    # Streamed, not printed at the end: the lines arrived spread over the ~3 s the task wrote them in.
    assert arrivals[-1][0] - arrivals[0][0] > 1.5
    # --follow returned because the task ended (its agent saw the exit; the master hears of it next report).
    wait_for(lambda: master.api("GET", f"/api/v3/tasks/{task_id}").json()["status"]["state"] == "Finished",
             timeout=15, what="the task to be Finished")


def test_rotation_bounds_a_task_logs_on_disk_and_keeps_offsets(cluster: tuple[RunningMaster, Path]) -> None:
    master, agent_dir = cluster
    total = 8_000_000
    task_id = _submit(master, f"yes 0123456789abcdef | head -c {total}; echo written >&2; sleep 60")
    wait_for(lambda: _headers(master, task_id, offset=-1)["x-titus-log-size"] == str(total), timeout=60,
             what="8 MB written")
    # The agent rotates on its 1 s report loop: the first offset kept moves up, the disk use stays bounded.
    start = int(wait_for(lambda: int(_headers(master, task_id)["x-titus-log-start"]), timeout=10,
                         what="a rotation"))
    assert total - start <= 1 << 20
    files = [p for p in agent_dir.rglob("stdout") if task_id in str(p)]
    assert files, list(agent_dir.rglob("*"))[:20]
    st = files[0].stat()
    assert st.st_size == total  # offsets keep their meaning: the file is as long as the stream
    assert st.st_blocks * 512 <= (1 << 20) + 64 * 1024  # but only the kept part uses disk

    r = titus(master, "task", "logs", task_id)
    assert r.exit_code == 0, r.output
    assert f"[{start} bytes rotated away on the agent]" in r.stderr
    expected = (b"0123456789abcdef\n" * (total // 17 + 1))[:total]
    assert r.stdout_bytes == expected[start:]
    r = titus(master, "task", "logs", task_id, "--offset", str(total - 17), "--limit", "17")
    assert r.stdout_bytes == expected[-17:]
    assert titus(master, "task", "kill", task_id).exit_code == 0


def test_follow_started_before_the_task_runs_waits_for_it(cluster: tuple[RunningMaster, Path]) -> None:
    master, _ = cluster
    job = batch_job(command=["/bin/sh", "-c", "echo early; sleep 1; echo late"])
    r = master.api("POST", "/api/v3/jobs", json=job)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    task_id = wait_for(lambda: master.api("GET", "/api/v3/tasks", params={"jobIds": job_id}).json()["items"],
                       what="the task")[0]["id"]
    env = {**os.environ, "TITUS_URL": master.url, "TITUS_API_TOKEN": API_TOKEN}
    done = subprocess.run([sys.executable, "-m", "titus.cli", "task", "logs", task_id, "-f"], env=env,
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"early\nlate\n"


def test_follow_reads_past_the_cap_are_answered_at_once(cluster: tuple[RunningMaster, Path]) -> None:
    """At most MAX_FOLLOW_WAITS reads wait at once (each holds an HTTP thread the agents' polls need)."""
    master, _ = cluster
    task_id = _submit(master, "echo quiet; sleep 60")
    wait_for(lambda: _headers(master, task_id, offset=0)["x-titus-log-size"] == "6", what="the first line")
    took: list[float] = []

    def follow() -> None:
        began = time.monotonic()
        master.api("GET", f"/api/v3/tasks/{task_id}/logs", params={"offset": 6, "waitMs": 4000})
        took.append(time.monotonic() - began)

    threads = [threading.Thread(target=follow) for _ in range(MAX_FOLLOW_WAITS + 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    quick = [s for s in took if s < 2.0]
    assert len(took) == MAX_FOLLOW_WAITS + 2 and len(quick) >= 2, sorted(took)
    assert len([s for s in took if s >= 3.5]) >= MAX_FOLLOW_WAITS - 2, sorted(took)  # the others waited
    assert titus(master, "task", "kill", task_id).exit_code == 0
