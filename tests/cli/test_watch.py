"""`titus job watch` as a user runs it: a real `titus` process reading a real master's ObserveJobs stream over
HTTP, while a fake of our own agent channel starts and finishes the tasks. It prints the snapshot, then every
change in order, ends when the watched job is Finished, resumes over a master restart, and refuses an
unknown job with exit code 3."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from tests.capacity.fake_agent import FakeAgent
from tests.conftest import (
    API_TOKEN,
    RunningMaster,
    batch_job,
    free_port,
    service_job,
    start_master,
    wait_for,
)

WATCH_TIMEOUT_S = 60


def _env(master: RunningMaster) -> dict[str, str]:
    return {**os.environ, "TITUS_URL": master.url, "TITUS_API_TOKEN": API_TOKEN}


class Watch:
    """A running `titus job watch`, its stdout lines read by a thread so the test can wait on them."""

    def __init__(self, master: RunningMaster, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "titus.cli", "job", "watch", *args],
            env=_env(master),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert self.proc.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, out: IO[str]) -> None:
        for line in out:
            self.lines.put(line.rstrip("\n"))

    def until(self, what: str, done: Any) -> list[str]:
        """Read lines until done(line) holds for one; all the lines read so far."""
        while True:
            try:
                line = self.lines.get(timeout=WATCH_TIMEOUT_S)
            except queue.Empty:
                self.proc.kill()
                raise AssertionError(f"no {what} within {WATCH_TIMEOUT_S}s; printed: {self.seen}") from None
            self.seen.append(line)
            if done(line):
                return self.seen

    def rest(self) -> list[str]:
        """Every line, once the process has exited and its stdout is read to the end."""
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return self.seen

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def watches() -> Iterator[list[Watch]]:
    started: list[Watch] = []
    yield started
    for w in started:
        w.stop()


def _submit(master: RunningMaster, descriptor: dict[str, Any]) -> str:
    r = master.api("POST", "/api/v3/jobs", json=descriptor)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def _finish(master: RunningMaster, agent: FakeAgent, task_id: str) -> None:
    report = {
        "sessionEpoch": agent.session,
        "updates": [{"taskId": task_id, "state": "Finished", "reasonCode": "normal", "exitCode": 0}],
        "runningTaskIds": sorted(agent.running - {task_id}),
    }
    r = master.agent("POST", f"/api/v3/agent/instances/{agent.id}/status", json=report)
    assert r.status_code == 200, r.text
    agent.running.discard(task_id)


def test_watching_a_batch_job_prints_every_change_in_order_and_ends_when_it_finishes(
    master: RunningMaster, watches: list[Watch]
) -> None:
    agent = FakeAgent(master.url, "watch-agent", "i-watch", "watch-pool")
    job_id = _submit(master, batch_job(applicationName="watched"))
    watch = Watch(master, job_id, "--json")
    watches.append(watch)
    watch.until("snapshot end", lambda line: "snapshotEnd" in line)
    wait_for(lambda: len(agent.converge()) == 1, what="the task Started on the fake agent")
    task_id = next(iter(agent.running))
    _finish(master, agent, task_id)
    code = watch.proc.wait(timeout=WATCH_TIMEOUT_S)  # ObserveJob ends after the job's final update
    assert code == 0, watch.proc.stderr.read() if watch.proc.stderr else code
    messages = [json.loads(line) for line in watch.rest()]
    assert all("keepAliveResponse" not in m for m in messages)
    task_states = [m["taskUpdate"]["task"]["status"]["state"] for m in messages if "taskUpdate" in m]
    # the states the fake agent went through, in order (Accepted may be in the snapshot or a change)
    assert [s for s in task_states if s in ("Started", "Finished")] == ["Started", "Finished"], task_states
    assert task_states.index("Launched") < task_states.index("Started"), task_states
    jobs = [m["jobUpdate"]["job"] for m in messages if "jobUpdate" in m]
    assert jobs[0]["id"] == job_id and jobs[-1]["status"]["state"] == "Finished", jobs
    assert {m["taskUpdate"]["task"]["id"] for m in messages if "taskUpdate" in m} == {task_id}


def test_watching_every_job_in_human_form_shows_new_jobs_and_their_tasks(
    master: RunningMaster, watches: list[Watch]
) -> None:
    agent = FakeAgent(master.url, "watch-agent-2", "i-watch-2", "watch-pool")
    before = _submit(master, service_job(desired=1, applicationName="before"))
    wait_for(lambda: len(agent.converge()) == 1, what="the first job's task Started")
    watch = Watch(master, "--app", "after")
    watches.append(watch)
    after = _submit(master, service_job(desired=1, applicationName="after"))
    wait_for(lambda: len(agent.converge()) == 2, what="the second job's task Started")
    lines = watch.until("the task Started", lambda line: " task " in line and " Started " in line)
    assert any(f"job   {after}  Accepted  service after" in line for line in lines), lines
    assert all(before not in line for line in lines), lines  # --app filtered it out
    started = [line for line in lines if " Started " in line]
    assert f"job {after} agent {agent.id}" in started[0], started


def test_watch_resumes_over_a_master_restart(tmp_path: Path, watches: list[Watch]) -> None:
    """The stream ends when its master stops; the CLI reconnects (the new master has no place in its event
    log for the old one's sequence, so it sends a fresh snapshot) and prints the changes made since."""
    port, data = free_port(), tmp_path / "master"

    def start() -> RunningMaster:
        return start_master(data, port=port)  # the same port and store: the CLI's URL stays valid

    first = start()
    job_id = _submit(first, batch_job(applicationName="resumed"))
    watch = Watch(first, "--json")
    watches.append(watch)
    watch.until("snapshot end", lambda line: "snapshotEnd" in line)
    first.server.shutdown()
    first.thread.join(timeout=10)
    second = start()
    try:
        r = second.api("PUT", f"/api/v3/jobs/{job_id}/attributes", json={"attributes": {"after": "restart"}})
        assert r.status_code == 200, r.text
        # in the fresh snapshot or as a change after it, whichever the reconnect came before
        watch.until(
            "the change made after the restart",
            lambda line: "jobUpdate" in line
            and json.loads(line)["jobUpdate"]["job"]["jobDescriptor"]["attributes"].get("after") == "restart",
        )
    finally:
        second.server.shutdown()
        second.thread.join(timeout=10)
    watch.stop()
    assert watch.proc.stderr is not None and "reconnecting" in watch.proc.stderr.read()


def test_watching_an_unknown_job_exits_3(master: RunningMaster) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "titus.cli", "job", "watch", "no-such-job"],
        env=_env(master),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
    assert "no-such-job" in r.stderr and r.stdout == ""
