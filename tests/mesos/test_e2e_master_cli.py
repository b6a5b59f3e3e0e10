"""End to end: `titus master --backend mesos` as a real subprocess against an EMULATED Mesos master.

The Mesos side is an emulation of the published Mesos v1 scheduler HTTP API (Apache Mesos
docs/scheduler-http-api.md) running in this test process on 127.0.0.1: RecordIO event stream, calls
recorded (tests/mesos/emulator.py). It is NOT Mesos; the test plays Mesos's part by sending the OFFERS
and UPDATE events Mesos would send. Everything on our side is real: the CLI, the HTTP API, SQLite, the
pymesos driver.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from master.mesos import model
from tests.conftest import AGENT_TOKEN, API_TOKEN, batch_job, free_port, wait_for
from tests.mesos.emulator import MesosEmulator, offer, offers_event, update_event


@pytest.fixture
def master_process(tmp_path: Path, mesos: MesosEmulator) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "TITUS_API_TOKEN": API_TOKEN, "TITUS_AGENT_TOKEN": AGENT_TOKEN,
           "TITUS_MESOS_MASTER": mesos.address, "TITUS_MESOS_FRAMEWORK_NAME": "titus-e2e",
           "TITUS_MESOS_ROLE": "titus", "TITUS_SQLITE_SYNCHRONOUS": "NORMAL", "TITUS_LOG_LEVEL": "WARNING",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    log = open(tmp_path / "master.log", "wb")  # noqa: SIM115
    argv = [sys.executable, "-m", "titus.cli", "master", "--backend", "mesos", "--init-cluster",
            "--port", str(port),
            "--data-dir", str(tmp_path / "data")]
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(url) or proc.poll() is not None, what="master up")
        assert proc.poll() is None, (tmp_path / "master.log").read_text()
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _up(url: str) -> bool:
    try:
        return requests.get(url + "/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def api(url: str, method: str, path: str, **kwargs: Any) -> Any:
    r = requests.request(method, url + path, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=10,
                         **kwargs)
    assert r.status_code < 300, r.text
    return r.json()


def test_a_job_reaches_started_and_finished_through_mesos_updates(master_process: str,
                                                                 mesos: MesosEmulator) -> None:
    subscribe = mesos.wait_call("SUBSCRIBE")
    assert subscribe["subscribe"]["framework_info"]["name"] == "titus-e2e"
    job_id = api(master_process, "POST", "/api/v3/jobs", json=batch_job(command=["/bin/echo", "hi"]))["id"]
    mesos.send(offers_event(offer("offer-1", "mesos-agent-1")))
    accept = mesos.wait_call("ACCEPT")
    (info,) = accept["accept"]["operations"][0]["launch"]["task_infos"]
    task_id = info["task_id"]["value"]
    assert model.decode(info["data"])["command"] == ["/bin/echo", "hi"]

    def state() -> str:
        return str(api(master_process, "GET", f"/api/v3/tasks/{task_id}")["status"]["state"])

    assert state() == "Launched"
    mesos.send(update_event(task_id, "mesos-agent-1", "TASK_STARTING", "starting"))
    mesos.send(update_event(task_id, "mesos-agent-1", "TASK_RUNNING", "running"))
    wait_for(lambda: state() == "Started", what="Started")
    data = model.encode({"exitCode": 0, "stdoutTail": "hi\n", "stderrTail": ""})
    mesos.send(update_event(task_id, "mesos-agent-1", "TASK_FINISHED", "exited with code 0", data=data))
    wait_for(lambda: state() == "Finished", what="Finished")
    task = api(master_process, "GET", f"/api/v3/tasks/{task_id}")
    assert task["status"]["reasonCode"] == "normal"
    history = [s["state"] for s in task["statusHistory"]]
    assert history == ["Accepted", "Launched", "StartInitiated", "Started"]
    wait_for(lambda: api(master_process, "GET", f"/api/v3/jobs/{job_id}")["status"]["state"] == "Finished",
             what="job Finished")
    acked = {c["acknowledge"]["task_id"]["value"] for c in mesos.of_type("ACKNOWLEDGE")}
    assert acked == {task_id}
