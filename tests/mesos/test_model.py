"""The pure Mesos translation rules: offers into the engine's resources and attributes, task states into ours.

Shapes follow mesos/v1/mesos.proto in its JSON form, as the Apache Mesos "Scheduler HTTP API" document
(docs/scheduler-http-api.md) shows them in OFFERS and UPDATE events.
"""

from __future__ import annotations

import pytest

from master.mesos import model
from master.scheduler.model import Resources
from tests.mesos.emulator import offer, scalar


@pytest.mark.parametrize(("mesos_state", "expected"), [
    ("TASK_STAGING", None),
    ("TASK_STARTING", ("StartInitiated", "")),
    ("TASK_RUNNING", ("Started", "")),
    ("TASK_FINISHED", ("Finished", "normal")),
    ("TASK_FAILED", ("Finished", "failed")),
    ("TASK_KILLED", ("Finished", "killed")),
    ("TASK_LOST", ("Finished", "lost")),
    ("TASK_GONE", ("Finished", "lost")),
    ("TASK_UNREACHABLE", ("Finished", "lost")),
    ("TASK_ERROR", ("Finished", "invalidRequest")),
], ids=lambda v: str(v))
def test_task_states_map_to_ours(mesos_state: str, expected: tuple[str, str] | None) -> None:
    update = model.to_update({"task_id": {"value": "t-1"}, "state": mesos_state, "message": "m"})
    assert (None if update is None else (update.state, update.reasonCode)) == expected


def test_terminal_update_carries_exit_code_and_log_tails_from_data() -> None:
    data = model.encode({"exitCode": 3, "stdoutTail": "out", "stderrTail": "err"})
    update = model.to_update({"task_id": {"value": "t-1"}, "state": "TASK_FAILED", "message": "exited",
                              "data": data})
    assert update is not None
    got = (update.exitCode, update.stdoutTail, update.stderrTail, update.reasonMessage)
    assert got == (3, "out", "err", "exited")


def test_offer_counts_unreserved_and_own_role_resources_only() -> None:
    other_role = {**scalar("cpus", 8), "role": "analytics"}
    ours = {**scalar("cpus", 1), "role": "titus"}
    volume = {**scalar("disk", 500), "disk": {"persistence": {"id": "v"}}}
    parsed = model.parse_offer(offer("o-1", "a-1", cpus=2, mem=1024, disk=2000, network=300,
                                     extra=[other_role, ours, volume]), "titus", 0.0)
    assert parsed.resources == Resources(3.0, 1024, 2000, 300)
    assert parsed.ports == ((31000, 32000),)
    assert parsed.attributes == {"zone": "us-east-1a", "instanceType": "m5.xlarge", "tier": "flex",
                                 "hostname": "a-1.example"}


def test_task_info_copies_the_offers_allocation_role() -> None:
    entry = {"taskId": "t-1", "resources": {"cpu": 1, "memoryMB": 128, "diskMB": 0, "networkMbps": 0}}
    info = model.task_info(entry, "a-1", "fw", "titus executor", {"role": "titus"})
    assert info["resources"] == [
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 1.0}, "allocation_info": {"role": "titus"}},
        {"name": "mem", "type": "SCALAR", "scalar": {"value": 128.0}, "allocation_info": {"role": "titus"}}]
    assert model.decode(info["data"]) == entry
