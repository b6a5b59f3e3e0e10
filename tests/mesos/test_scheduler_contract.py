"""Contract tests of the framework scheduler (master.mesos.framework through pymesos's real driver).

The events fed in and the calls asserted are those of the Apache Mesos "Scheduler HTTP API" document
(docs/scheduler-http-api.md: SUBSCRIBE/SUBSCRIBED, OFFERS, RESCIND, UPDATE, FAILURE, ERROR; ACCEPT, DECLINE,
KILL, RECONCILE, ACKNOWLEDGE), with offers, TaskInfos and statuses shaped as in mesos/v1/mesos.proto.
They travel over real HTTP with RecordIO framing to an EMULATION of that published API (tests/mesos/
emulator.py), not to Mesos: Mesos cannot be installed here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from master.mesos import model
from tests.conftest import RunningMaster, batch_job, wait_for
from tests.mesos.conftest import start_mesos_master, stop_master
from tests.mesos.emulator import MesosEmulator, offer, offers_event, update_event


def submit(master: RunningMaster, job: dict[str, Any]) -> str:
    r = master.api("POST", "/api/v3/jobs", json=job)
    assert r.status_code in (200, 201, 202), r.text
    return str(r.json()["id"])


def one_task(master: RunningMaster, job_id: str, states: str | None = None) -> dict[str, Any]:
    params = {"jobIds": job_id, **({"taskStates": states} if states else {})}
    items: list[dict[str, Any]] = master.api("GET", "/api/v3/tasks", params=params).json()["items"]
    assert len(items) == 1, items
    return items[0]


def task_state(master: RunningMaster, task_id: str) -> tuple[str, str]:
    status = master.api("GET", f"/api/v3/tasks/{task_id}").json()["status"]
    return status["state"], status.get("reasonCode", "")


def launched(mesos: MesosEmulator, offer_id: str) -> dict[str, Any]:
    accept = mesos.wait_call("ACCEPT", lambda c: {"value": offer_id} in c["accept"]["offer_ids"])
    infos: list[dict[str, Any]] = accept["accept"]["operations"][0]["launch"]["task_infos"]
    return {"accept": accept, "infos": infos}


def running_task(master: RunningMaster, mesos: MesosEmulator, job: dict[str, Any] | None = None,
                 offer_id: str = "o-1", agent_id: str = "agent-1") -> tuple[str, str]:
    job_id = submit(master, job or batch_job(command=["/bin/sleep", "600"]))
    mesos.send(offers_event(offer(offer_id, agent_id)))
    task_id = launched(mesos, offer_id)["infos"][0]["task_id"]["value"]
    mesos.send(update_event(task_id, agent_id, "TASK_RUNNING", "running"))
    wait_for(lambda: task_state(master, task_id)[0] == "Started", what="Started")
    return job_id, task_id


def job_state(master: RunningMaster, job_id: str) -> str:
    return str(master.api("GET", f"/api/v3/jobs/{job_id}").json()["status"]["state"])


def agent(master: RunningMaster, agent_id: str) -> dict[str, Any]:
    items = master.api("GET", "/api/v3/agent/instances").json()["items"]
    return dict(next(a for a in items if a["id"] == agent_id))


def resources(info: dict[str, Any]) -> dict[str, float]:
    return {r["name"]: r["scalar"]["value"] for r in info["resources"]}


def test_subscribe_names_the_framework_and_a_new_leader_reuses_its_stored_id(
        tmp_path: Path, mesos: MesosEmulator) -> None:
    first = start_mesos_master(tmp_path / "m", mesos)
    subscribe = mesos.wait_call("SUBSCRIBE")
    info = subscribe["subscribe"]["framework_info"]
    assert (info["name"], info["role"], info["failover_timeout"], info["checkpoint"]) == (
        "titus-test", "titus", 3600.0, True)
    assert "framework_id" not in subscribe
    wait_for(lambda: first.server.manager.backend.framework_id, what="framework id")  # type: ignore[attr-defined]
    framework_id = first.server.manager.backend.framework_id  # type: ignore[attr-defined]
    stored = first.server.store.get("framework", "titus-test")
    assert stored is not None and stored.record["frameworkId"] == framework_id
    stop_master(first)
    assert not mesos.of_type("TEARDOWN"), "a stopping leader must not end the framework"

    second = start_mesos_master(tmp_path / "m", mesos)
    again = mesos.wait_call("SUBSCRIBE", lambda c: "framework_id" in c)
    assert again["framework_id"] == {"value": framework_id}
    assert again["subscribe"]["framework_info"]["id"] == {"value": framework_id}
    stop_master(second)


def test_subscribed_triggers_implicit_reconciliation(mesos_master: RunningMaster,
                                                      mesos: MesosEmulator) -> None:
    implicit = mesos.wait_call("RECONCILE", lambda c: c["reconcile"]["tasks"] == [])
    assert implicit["framework_id"]["value"].startswith("fw-")


def test_offer_is_accepted_with_a_launch_of_the_placed_task(mesos_master: RunningMaster,
                                                            mesos: MesosEmulator) -> None:
    job_id = submit(mesos_master, batch_job())  # cpu 0.5, 64 MB, 100 MB disk, 10 Mbps
    mesos.send(offers_event(offer("o-1", "agent-1", zone="us-east-1b")))
    got = launched(mesos, "o-1")
    task = one_task(mesos_master, job_id)
    assert got["accept"]["accept"]["offer_ids"] == [{"value": "o-1"}]
    assert got["accept"]["accept"]["filters"] == {"refuse_seconds": 7.0}
    assert [op["type"] for op in got["accept"]["accept"]["operations"]] == ["LAUNCH"]
    (info,) = got["infos"]
    assert info["task_id"] == {"value": task["id"]}
    assert info["agent_id"] == {"value": "agent-1"}
    assert resources(info) == {"cpus": 0.5, "mem": 64.0, "disk": 100.0, "network_bandwidth": 10.0}
    assert info["executor"]["command"] == {"value": "titus executor", "shell": True}
    assert info["executor"]["executor_id"] == {"value": task["id"]}
    entry = model.decode(info["data"])
    assert (entry["taskId"], entry["command"]) == (task["id"], ["/bin/sh", "-c", "echo hello"])
    assert task["status"]["state"] == "Launched"
    assert task["taskContext"]["agent.id"] == "agent-1"
    agents = {a["id"]: a for a in mesos_master.api("GET", "/api/v3/agent/instances").json()["items"]}
    assert agents["agent-1"]["attributes"]["zone"] == "us-east-1b"
    assert agents["agent-1"]["attributes"]["instanceType"] == "m5.xlarge"


def test_updates_move_the_task_and_are_acknowledged(mesos_master: RunningMaster,
                                                    mesos: MesosEmulator) -> None:
    job_id = submit(mesos_master, batch_job())
    mesos.send(offers_event(offer("o-1", "agent-1")))
    task_id = launched(mesos, "o-1")["infos"][0]["task_id"]["value"]
    mesos.send(update_event(task_id, "agent-1", "TASK_STAGING"))
    mesos.send(update_event(task_id, "agent-1", "TASK_STARTING", "starting"))
    wait_for(lambda: task_state(mesos_master, task_id)[0] == "StartInitiated", what="StartInitiated")
    mesos.send(update_event(task_id, "agent-1", "TASK_RUNNING", "running"))
    wait_for(lambda: task_state(mesos_master, task_id)[0] == "Started", what="Started")
    ack = mesos.wait_call("ACKNOWLEDGE")
    assert ack["acknowledge"] == {"agent_id": {"value": "agent-1"}, "task_id": {"value": task_id},
                                  "uuid": "AAECAwQFBgcICQoLDA0ODw=="}
    data = model.encode({"exitCode": 0, "stdoutTail": "hello\n", "stderrTail": ""})
    mesos.send(update_event(task_id, "agent-1", "TASK_FINISHED", "exited with code 0", data=data))
    wait_for(lambda: task_state(mesos_master, task_id) == ("Finished", "normal"), what="Finished normal")
    task = mesos_master.api("GET", f"/api/v3/tasks/{task_id}").json()
    assert task["taskContext"]["task.exitCode"] == "0"
    assert mesos_master.api("GET", f"/api/v3/tasks/{task_id}/logs").text == "hello\n"
    wait_for(lambda: job_state(mesos_master, job_id) == "Finished", what="job Finished")
    assert len(mesos.of_type("ACKNOWLEDGE")) >= 4


def test_unused_offers_are_declined_with_a_refuse_filter(mesos_master: RunningMaster,
                                                        mesos: MesosEmulator) -> None:
    mesos.send(offers_event(offer("o-idle", "agent-1")))
    decline = mesos.wait_call("DECLINE")
    assert decline["decline"] == {"offer_ids": [{"value": "o-idle"}], "filters": {"refuse_seconds": 7.0}}
    assert not mesos.of_type("ACCEPT")


def test_a_task_that_fits_no_offer_stays_pending_and_the_offer_is_declined_after_its_hold(
        mesos_master: RunningMaster, mesos: MesosEmulator) -> None:
    job_id = submit(mesos_master, batch_job(container={"resources": {"cpu": 8, "memoryMB": 64}}))
    mesos.send(offers_event(offer("o-small", "agent-1", cpus=2)))
    mesos.wait_call("DECLINE", lambda c: c["decline"]["offer_ids"] == [{"value": "o-small"}])
    task = one_task(mesos_master, job_id)
    assert task["status"]["state"] == "Accepted"
    assert "insufficient cpu" in task["taskContext"]["task.pendingReason"]


def test_a_rescinded_offer_is_never_used(mesos_master: RunningMaster, mesos: MesosEmulator) -> None:
    job_id = submit(mesos_master, batch_job(container={"resources": {"cpu": 3, "memoryMB": 64}}))
    mesos.send(offers_event(offer("o-a", "agent-1", cpus=2), offer("o-b", "agent-2", cpus=2)))
    wait_for(lambda: "insufficient cpu"
             in one_task(mesos_master, job_id)["taskContext"].get("task.pendingReason", ""),
             what="pending for cpu")
    mesos.send({"type": "RESCIND", "rescind": {"offer_id": {"value": "o-a"}}})
    wait_for(lambda: agent(mesos_master, "agent-1")["resources"]["cpu"] == 0,
             what="nothing offered on agent-1")
    mesos.send(offers_event(offer("o-c", "agent-1", cpus=1)))  # agent-1: 1 cpu; agent-2: 2 cpus; neither fits
    mesos.send(offers_event(offer("o-d", "agent-2", cpus=2)))  # agent-2 now holds 4 cpus in two offers
    got = launched(mesos, "o-d")
    assert sorted(o["value"] for o in got["accept"]["accept"]["offer_ids"]) == ["o-b", "o-d"]
    used = [o["value"] for c in mesos.of_type("ACCEPT") + mesos.of_type("DECLINE")
            for o in (c.get("accept") or c.get("decline"))["offer_ids"]]
    assert "o-a" not in used


def test_kill_goes_through_the_driver_and_killed_update_finishes_the_task(
        mesos_master: RunningMaster, mesos: MesosEmulator) -> None:
    _, task_id = running_task(mesos_master, mesos)
    assert mesos_master.api("DELETE", f"/api/v3/tasks/{task_id}").status_code in (200, 202, 204)
    kill = mesos.wait_call("KILL")
    assert kill["kill"]["task_id"] == {"value": task_id}
    assert task_state(mesos_master, task_id)[0] == "KillInitiated"
    mesos.send(update_event(task_id, "agent-1", "TASK_KILLED", "killed on request"))
    wait_for(lambda: task_state(mesos_master, task_id) == ("Finished", "killed"), what="Finished killed")


def test_agent_failure_finishes_its_tasks_as_lost(mesos_master: RunningMaster, mesos: MesosEmulator) -> None:
    _, task_id = running_task(mesos_master, mesos)
    mesos.send({"type": "FAILURE", "failure": {"agent_id": {"value": "agent-1"}}})
    wait_for(lambda: task_state(mesos_master, task_id) == ("Finished", "lost"), what="Finished lost")


@pytest.mark.parametrize(("mesos_state", "reason"), [
    ("TASK_FAILED", "failed"), ("TASK_LOST", "lost"), ("TASK_GONE", "lost"), ("TASK_UNREACHABLE", "lost"),
    ("TASK_ERROR", "invalidRequest"),
], ids=["failed", "lost", "gone", "unreachable", "error"])
def test_terminal_states_map_to_reasons(mesos_master: RunningMaster, mesos: MesosEmulator, mesos_state: str,
                                        reason: str) -> None:
    _, task_id = running_task(mesos_master, mesos)
    mesos.send(update_event(task_id, "agent-1", mesos_state, "as Mesos said"))
    wait_for(lambda: task_state(mesos_master, task_id) == ("Finished", reason), what=f"Finished {reason}")


def test_a_running_task_that_is_not_ours_is_killed(mesos_master: RunningMaster, mesos: MesosEmulator) -> None:
    mesos.send(update_event("stranger", "agent-9", "TASK_RUNNING", with_uuid=False))
    kill = mesos.wait_call("KILL")
    assert kill["kill"]["task_id"] == {"value": "stranger"}


def test_disconnection_keeps_tasks_and_resubscribes_with_explicit_reconciliation(
        mesos_master: RunningMaster, mesos: MesosEmulator) -> None:
    _, task_id = running_task(mesos_master, mesos)
    framework_id = mesos.of_type("SUBSCRIBE")  # the first carried no id
    mesos.drop()
    again = mesos.wait_call("SUBSCRIBE", lambda c: "framework_id" in c)
    assert len(framework_id) >= 1 and again["framework_id"]["value"].startswith("fw-")
    explicit = mesos.wait_call("RECONCILE",
                               lambda c: c["reconcile"]["tasks"] == [{"task_id": {"value": task_id}}])
    assert explicit["framework_id"] == again["framework_id"]
    assert task_state(mesos_master, task_id)[0] == "Started"


def test_error_ends_the_framework_and_the_master_registers_anew(mesos_master: RunningMaster,
                                                                mesos: MesosEmulator) -> None:
    old = mesos_master.server.manager.backend.framework_id  # type: ignore[attr-defined]
    mesos.send({"type": "ERROR", "error": {"message": "Framework has been removed"}})
    first = mesos.of_type("SUBSCRIBE")[0]
    fresh = mesos.wait_call("SUBSCRIBE", lambda c: c is not first and "framework_id" not in c)
    assert "framework_id" not in fresh
    wait_for(lambda: mesos_master.server.manager.backend.framework_id not in (None, old),  # type: ignore[attr-defined]
             what="a new framework id")


def test_a_fenced_master_stops_its_driver_at_once_without_teardown(mesos_master: RunningMaster,
                                                                   mesos: MesosEmulator) -> None:
    wait_for(lambda: mesos.subscribers() == 1, what="subscribed stream")
    mesos_master.server.manager._fence("a newer leader exists (test)")
    wait_for(lambda: mesos.subscribers() == 0, what="the event stream closed")
    assert mesos_master.server.manager.backend.driver is None  # type: ignore[attr-defined]
    assert not mesos.of_type("TEARDOWN")
