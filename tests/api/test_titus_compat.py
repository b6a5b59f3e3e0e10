"""Titus v3 wire compatibility: requests built and serialised as a Titus client does, answers parsed strictly.

Every message type comes from tests/api/titus_proto.py (Titus's published proto, written down from its
facts) and goes through protobuf's own json_format: requests are `MessageToJson` of real messages (defaults
omitted, or all printed as Java clients configured with includingDefaultValueFields send them), and every
answer of the v3 job routes must `Parse` with unknown fields refused and be canonical proto3 JSON (64-bit
integers as strings, enums by name). All over real HTTP against a real master on 127.0.0.1, with an agent
driven through the real agent channel so tasks pass through Launched, Started and Finished.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import requests
from google.protobuf import json_format
from google.protobuf.message import Message

from tests.api import titus_proto as proto
from tests.conftest import RunningMaster, wait_for

IMAGE = "127.0.0.1:5000/titus/busybox"


# -------------------------------------------------------------------------------------------- helpers
def strict(resp: requests.Response, message: str, status: int = 200) -> Message:
    """The answer, as Titus's `message`: a strict parse that also demands canonical proto3 JSON."""
    assert resp.status_code == status, resp.text
    doc = resp.json()
    parsed = proto.parse_strict(doc, message)
    assert proto.check_proto3_json(doc, message) == [], doc
    return parsed


def empty(resp: requests.Response) -> None:
    """google.protobuf.Empty: Titus's answer to every update."""
    strict(resp, "Empty")


def descriptor_message(service: bool = False) -> Message:
    """A JobDescriptor as a Titus client builds it, every field the server would default set explicitly,
    so that what comes back must equal what went out."""
    d: Any = proto.new("JobDescriptor")
    d.owner.teamEmail = "team@example.com"
    d.applicationName = "compat"
    d.capacityGroup = "DEFAULT"
    d.jobGroupInfo.stack = "main"
    d.jobGroupInfo.detail = "d1"
    d.attributes["team.note"] = "hello"
    c = d.container
    c.resources.cpu = 0.5
    c.resources.memoryMB = 64
    c.resources.diskMB = 100
    c.resources.networkMbps = 10
    c.securityProfile.securityGroups.append("sg-1")
    c.securityProfile.iamRole = "arn:aws:iam::1:role/app"
    c.image.name = IMAGE
    c.image.tag = "latest"
    c.command.extend(["/bin/sleep", "3600"])
    c.env["GREETING"] = "hi"
    c.softConstraints.constraints["uniqueHost"] = "true"
    c.hardConstraints.SetInParent()
    if service:
        d.service.capacity.min = 1
        d.service.capacity.desired = 2
        d.service.capacity.max = 4
        d.service.enabled = True
        d.service.retryPolicy.delayed.initialDelayMs = 100
        d.service.retryPolicy.delayed.delayMs = 200
        d.service.retryPolicy.delayed.retries = 5
        d.service.serviceJobProcesses.SetInParent()
        d.disruptionBudget.availabilityPercentageLimit.percentageOfHealthyContainers = 50
        d.disruptionBudget.ratePerInterval.intervalMs = 60_000
        d.disruptionBudget.ratePerInterval.limitPerInterval = 2
        window = d.disruptionBudget.timeWindows.add()
        window.days.extend([0, 1, 2, 3, 4])  # Monday..Friday
        hours = window.hourlyTimeWindows.add()
        hours.startHour, hours.endHour = 9, 17
        window.timeZone = "UTC"
    else:
        d.batch.size = 2
        d.batch.runtimeLimitSec = 3_600
        d.batch.retryPolicy.exponentialBackOff.initialDelayMs = 1_000
        d.batch.retryPolicy.exponentialBackOff.maxDelayIntervalMs = 10_000
        d.batch.retryPolicy.exponentialBackOff.retries = 3
    d.networkConfiguration.networkMode = 0  # UnknownNetworkMode: the backend chooses
    return d


def numbers_for_64_bit(doc: Any, message: str = "JobDescriptor") -> Any:
    """The same document with every 64-bit field written as a JSON number (what many clients send)."""
    return _numbers(doc, proto.descriptor(message))


def _numbers(doc: Any, desc: Any) -> Any:
    if not isinstance(doc, dict):
        return doc
    out: dict[str, Any] = {}
    fields = {f.json_name: f for f in desc.fields}
    for key, value in doc.items():
        field = fields[key]
        if field.type == field.TYPE_UINT64:
            out[key] = int(value)
        elif field.type == field.TYPE_MESSAGE and not field.message_type.GetOptions().map_entry:
            out[key] = [_numbers(v, field.message_type) for v in value] if isinstance(value, list) \
                else _numbers(value, field.message_type)
        else:
            out[key] = value
    return out


class Agent:
    """An agent over the real agent channel: registers, takes its desired set, reports states."""

    def __init__(self, master: RunningMaster, agent_id: str = "compat-agent") -> None:
        self.master = master
        self.id = agent_id
        reg = {"id": agent_id, "resources": {"cpu": 16, "memoryMB": 65_536, "diskMB": 1_000_000,
                                             "networkMbps": 10_000}, "attributes": {"zone": "z1"}}
        r = master.agent("POST", "/api/v3/agent/instances/register", json=reg)
        assert r.status_code == 200, r.text
        self.session = int(r.json()["sessionEpoch"])

    def assigned(self) -> list[str]:
        r = self.master.agent("GET", f"/api/v3/agent/instances/{self.id}/assignments",
                              params={"since": 0, "session": self.session, "waitMs": 0})
        assert r.status_code == 200, r.text
        return [str(t["taskId"]) for t in r.json()["tasks"] if not t.get("kill")]

    def report(self, updates: list[dict[str, Any]], running: list[str],
               usage: dict[str, Any] | None = None) -> None:
        body = {"sessionEpoch": self.session, "updates": updates, "runningTaskIds": running,
                "usage": usage or {}}
        r = self.master.agent("POST", f"/api/v3/agent/instances/{self.id}/status", json=body)
        assert r.status_code == 200, r.text

    def start(self, task_ids: list[str]) -> None:
        self.report([{"taskId": t, "state": "Started"} for t in task_ids], task_ids,
                    {t: {"cpuPct": 12.5, "rssMB": 30, "processes": 2} for t in task_ids})


def submit(master: RunningMaster, d: Message, print_defaults: bool = True) -> str:
    r = master.api("POST", "/api/v3/jobs", json=proto.to_json(d, print_defaults))
    job_id: Any = strict(r, "JobId", 202)
    return str(job_id.id)


def tasks_of(master: RunningMaster, job_id: str, states: str = "") -> list[dict[str, Any]]:
    params = {"jobIds": job_id, **({"taskStates": states} if states else {})}
    r = master.api("GET", "/api/v3/tasks", params=params)
    strict(r, "TaskQueryResult")
    items: list[dict[str, Any]] = r.json()["items"]
    return items


# ------------------------------------------------------------------------------- the harness is strict
@pytest.mark.parametrize(
    ("doc", "message", "why"),
    [
        ({"version": {"currentVersion": "1"}}, "Job", "has no field named"),
        ({"status": {"state": "Running"}}, "Task", "Running"),
        ({"batch": {"size": 1}, "service": {}}, "JobDescriptor", "oneof"),
        ({"container": {"resources": {"tpu": 1}}}, "JobDescriptor", "has no field named"),
    ],
    ids=["invented-field", "unknown-enum", "two-oneof-members", "unknown-nested-field"],
)
def test_the_proto_schemas_refuse_what_titus_does_not_define(doc: dict[str, Any], message: str,
                                                             why: str) -> None:
    with pytest.raises(json_format.ParseError, match=why):
        proto.parse_strict(doc, message)


def test_canonical_json_check_catches_numbers_for_64_bit_and_enum_numbers() -> None:
    problems = proto.check_proto3_json({"status": {"state": 2, "timestamp": 5}}, "Job")
    assert problems == ["status.state: enum not written by name",
                        "status.timestamp: 64-bit integer not written as a string"]


# ------------------------------------------------------------------------------------------- requests
@pytest.mark.parametrize("print_defaults", [True, False], ids=["all-defaults-printed", "defaults-omitted"])
@pytest.mark.parametrize("service", [False, True], ids=["batch", "service"])
def test_descriptor_round_trips_exactly(master: RunningMaster, print_defaults: bool, service: bool) -> None:
    sent = descriptor_message(service)
    job_id = submit(master, sent, print_defaults)
    job: Any = strict(master.api("GET", f"/api/v3/jobs/{job_id}"), "Job")
    assert job.jobDescriptor == sent, (proto.to_json(job.jobDescriptor), proto.to_json(sent))
    assert job.id == job_id and job.status.state == 0  # Accepted
    assert job.version.timestamp >= 1


def test_64_bit_fields_may_be_numbers(master: RunningMaster) -> None:
    sent = descriptor_message(service=True)
    doc = numbers_for_64_bit(proto.to_json(sent, print_defaults=True))
    assert doc["disruptionBudget"]["ratePerInterval"]["intervalMs"] == 60_000
    r = master.api("POST", "/api/v3/jobs", json=doc)
    job_id = str(strict(r, "JobId", 202).id)
    job: Any = strict(master.api("GET", f"/api/v3/jobs/{job_id}"), "Job")
    assert job.jobDescriptor == sent


def test_entry_point_and_command_are_optional(master: RunningMaster) -> None:
    """Titus runs the image's own ENTRYPOINT/CMD when the job gives none (the OCI and Docker runtimes)."""
    d: Any = descriptor_message()
    del d.container.command[:]
    job_id = submit(master, d)
    job: Any = strict(master.api("GET", f"/api/v3/jobs/{job_id}"), "Job")
    container = job.jobDescriptor.container
    assert list(container.entryPoint) == [] and list(container.command) == []


def test_a_minimal_descriptor_gets_titus_defaults(master: RunningMaster) -> None:
    """Zeros and empty strings are proto3's unset: the server applies its defaults, as Titus does."""
    d: Any = proto.new("JobDescriptor")
    d.owner.teamEmail = "team@example.com"
    d.applicationName = "minimal"
    d.container.resources.cpu = 1
    d.container.resources.memoryMB = 128
    d.container.image.name = IMAGE
    d.container.image.tag = "latest"
    d.batch.size = 1
    job_id = submit(master, d, print_defaults=True)
    got: Any = strict(master.api("GET", f"/api/v3/jobs/{job_id}"), "Job")
    desc = got.jobDescriptor
    assert (desc.capacityGroup, desc.container.resources.diskMB, desc.container.resources.networkMbps) == (
        "DEFAULT", 10_000, 128)
    assert desc.batch.runtimeLimitSec == 5 * 24 * 3600
    assert desc.batch.retryPolicy.WhichOneof("Policy") == "immediate"


@pytest.mark.parametrize("print_defaults", [True, False], ids=["all-defaults-printed", "defaults-omitted"])
def test_an_unset_enabled_is_proto3_false_however_it_is_printed(master: RunningMaster,
                                                                print_defaults: bool) -> None:
    """`enabled: false` printed and `enabled` left out are one message: both a disabled job, as in Titus."""
    sent: Any = descriptor_message(service=True)
    sent.service.enabled = False
    doc = proto.to_json(sent, print_defaults=print_defaults)
    assert ("enabled" in doc["service"]) is print_defaults
    job_id = submit(master, sent, print_defaults)
    job: Any = strict(master.api("GET", f"/api/v3/jobs/{job_id}"), "Job")
    assert job.jobDescriptor == sent and job.jobDescriptor.service.enabled is False


UNSUPPORTED: list[tuple[str, dict[str, Any]]] = [
    ("extraContainers", {"extraContainers": [{"name": "sidecar", "image": {"name": "busybox", "tag": "1"}}]}),
    ("volumes", {"volumes": [{"name": "v", "sharedContainerVolumeSource": {"sourceContainer": "main"}}]}),
    ("platformSidecars", {"platformSidecars": [{"name": "logger", "channel": "stable",
                                                "arguments": {"level": "debug"}}]}),
    ("container.resources.signedAddressAllocations",
     {"container": {"resources": {"signedAddressAllocations": [{"addressAllocation": {"uuid": "u1"}}]}}}),
    ("container.resources.pool", {"container": {"resources": {"pool": "static-pool"}}}),
    ("container.resources.staticIPAddressIDs",
     {"container": {"resources": {"staticIPAddressIDs": {"uuids": ["u1"]}}}}),
    ("container.resources.efsMounts",
     {"container": {"resources": {"efsMounts": [{"efsId": "fs-1", "mountPoint": "/efs",
                                                 "mountPerm": "RW"}]}}}),
    ("container.volumeMounts", {"container": {"volumeMounts": [{"mountPath": "/data", "volumeName": "v"}]}}),
    ("container.experimental",
     {"container": {"experimental": {"@type": "type.googleapis.com/google.protobuf.Empty"}}}),
    ("container.hardConstraints.expression", {"container": {"hardConstraints": {"expression": "zone == a"}}}),
    ("networkConfiguration.networkMode", {"networkConfiguration": {"networkMode": "Ipv6Only"}}),
]


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out


@pytest.mark.parametrize(("path", "extra"), UNSUPPORTED, ids=[p for p, _ in UNSUPPORTED])
def test_unimplemented_features_are_refused_as_not_supported(shared_master: RunningMaster, path: str,
                                                             extra: dict[str, Any]) -> None:
    doc = _merged(proto.to_json(descriptor_message(), print_defaults=True), extra)
    proto.parse_strict(doc, "JobDescriptor")  # a descriptor Titus itself accepts
    r = shared_master.api("POST", "/api/v3/jobs", json=doc)
    assert r.status_code == 400, r.text
    reasons = {f["path"]: f["reason"] for f in r.json()["fields"]}
    assert path in reasons, reasons
    assert "not supported" in reasons[path]
    stored = shared_master.api("GET", "/api/v3/jobs", params={"applicationName": "compat"}).json()
    assert stored["items"] == []


# -------------------------------------------------------------------------- every answer, every state
def test_every_answer_of_every_operation_is_a_titus_message(master: RunningMaster) -> None:
    agent = Agent(master)
    service_id = submit(master, descriptor_message(service=True))
    batch_id = submit(master, descriptor_message(service=False))
    pending = tasks_of(master, service_id)
    assert {t["status"]["state"] for t in pending} <= {"Accepted", "Launched"}

    wait_for(lambda: len(agent.assigned()) == 4, what="4 tasks placed on the agent")
    service_tasks = [t["id"] for t in tasks_of(master, service_id)]
    batch_tasks = [t["id"] for t in tasks_of(master, batch_id)]
    agent.start(service_tasks + batch_tasks)
    agent.report([{"taskId": batch_tasks[0], "state": "Finished", "reasonCode": "normal", "exitCode": 0}],
                 service_tasks + batch_tasks[1:])

    task: Any = strict(master.api("GET", f"/api/v3/tasks/{service_tasks[0]}"), "Task")
    assert task.status.state == 3 and task.jobId == service_id  # Started
    assert task.taskContext["agent.id"] == agent.id and task.taskContext["task.usage.processes"] == "2"
    assert task.logLocation.liveStream.url == f"/api/v3/tasks/{task.id}/logs"
    assert [s.state for s in task.statusHistory] == [0, 1]  # Accepted, Launched
    done: Any = strict(master.api("GET", f"/api/v3/tasks/{batch_tasks[0]}"), "Task")
    assert (done.status.state, done.taskContext["task.exitCode"]) == (6, "0")  # Finished

    strict(master.api("GET", "/api/v3/jobs"), "JobQueryResult")
    strict(master.api("GET", "/api/v3/tasks", params={"taskStates": "Finished"}), "TaskQueryResult")

    base = f"/api/v3/jobs/{service_id}"
    empty(master.api("PUT", f"{base}/instances", json=proto.to_json(
        proto.from_dict({"min": 1, "desired": 3, "max": 4}, "Capacity"))))
    empty(master.api("PUT", f"{base}/capacityAttributes", json={"desired": 2}))
    empty(master.api("PUT", f"{base}/jobprocesses", json={"disableIncreaseDesired": False}))
    empty(master.api("PUT", f"{base}/disruptionBudget", json={"relocationLimit": {"limit": 2},
                                                             "rateUnlimited": {}}))
    empty(master.api("PUT", f"{base}/attributes", json={"attributes": {"k": "v"}}))
    empty(master.api("DELETE", f"{base}/attributes", params={"keys": "k"}))
    empty(master.api("POST", f"{base}/disable"))
    empty(master.api("POST", f"{base}/enable"))
    empty(master.api("PUT", f"/api/v3/tasks/{service_tasks[0]}/attributes", json={"attributes": {"a": "b"}}))
    empty(master.api("DELETE", f"/api/v3/tasks/{service_tasks[0]}/attributes", params={"keys": "a"}))
    empty(master.api("DELETE", f"/api/v3/tasks/{service_tasks[1]}",
                     params={"shrink": "true", "preventMinSizeUpdate": "true"}))
    empty(master.api("DELETE", f"/api/v3/jobs/{batch_id}"))
    agent.report([{"taskId": t, "state": "Finished", "reasonCode": "killed"} for t in batch_tasks[1:]]
                 + [{"taskId": service_tasks[1], "state": "Finished", "reasonCode": "killed"}],
                 [service_tasks[0]])

    killed: Any = strict(master.api("GET", f"/api/v3/jobs/{batch_id}"), "Job")
    assert killed.status.state == 2  # Finished
    assert [s.state for s in killed.statusHistory] == [0, 1]  # Accepted, KillInitiated
    finished = master.api("GET", "/api/v3/jobs", params={"jobState": "Finished"})
    assert [j.id for j in strict(finished, "JobQueryResult").items] == [batch_id]
    after: Any = strict(master.api("GET", base), "Job")
    assert (after.jobDescriptor.service.capacity.desired, after.jobDescriptor.service.capacity.min) == (1, 1)
    assert after.jobDescriptor.disruptionBudget.WhichOneof("Policy") == "relocationLimit"
    assert after.version.timestamp > 1


# ------------------------------------------------------------------------------------------ operations
def _service(master: RunningMaster, **capacity: int) -> str:
    d: Any = descriptor_message(service=True)
    d.service.capacity.min = capacity.get("min", 0)
    d.service.capacity.desired = capacity.get("desired", 1)
    d.service.capacity.max = capacity.get("max", 5)
    return submit(master, d)


def _capacity(master: RunningMaster, job_id: str) -> dict[str, int]:
    job: Any = strict(master.api("GET", f"/api/v3/jobs/{job_id}"), "Job")
    cap = job.jobDescriptor.service.capacity
    return {"min": cap.min, "desired": cap.desired, "max": cap.max}


def test_instances_sets_the_whole_capacity_and_capacity_attributes_only_what_is_given(
    master: RunningMaster,
) -> None:
    job_id = _service(master, min=1, desired=2, max=5)
    # proto3 JSON of Capacity{desired: 3, max: 4}: min is 0 and therefore omitted, and means 0.
    empty(master.api("PUT", f"/api/v3/jobs/{job_id}/instances", json={"desired": 3, "max": 4}))
    assert _capacity(master, job_id) == {"min": 0, "desired": 3, "max": 4}
    empty(master.api("PUT", f"/api/v3/jobs/{job_id}/capacityAttributes", json={"min": 2}))
    assert _capacity(master, job_id) == {"min": 2, "desired": 3, "max": 4}
    r = master.api("PUT", f"/api/v3/jobs/{job_id}/capacityAttributes", json={"desired": 9})
    assert r.status_code == 400 and r.json()["fields"][0]["path"] == "desired"
    r = master.api("PUT", f"/api/v3/jobs/{job_id}/capacityAttributes", json={"desired": 1, "extra": 1})
    assert r.status_code == 400 and r.json()["fields"][0]["path"] == "extra"


def test_job_processes_are_enforced_on_every_capacity_change(master: RunningMaster) -> None:
    job_id = _service(master, min=0, desired=2, max=5)
    base = f"/api/v3/jobs/{job_id}"
    empty(master.api("PUT", f"{base}/jobprocesses", json={"disableIncreaseDesired": True}))
    job: Any = strict(master.api("GET", base), "Job")
    assert job.jobDescriptor.service.serviceJobProcesses.disableIncreaseDesired
    assert master.api("PUT", f"{base}/capacityAttributes", json={"desired": 3}).status_code == 409
    assert master.api("PUT", f"{base}/instances", json={"desired": 3, "max": 5}).status_code == 409
    empty(master.api("PUT", f"{base}/capacityAttributes", json={"desired": 1}))

    empty(master.api("PUT", f"{base}/jobprocesses", json={"disableDecreaseDesired": True}))
    assert master.api("PUT", f"{base}/capacityAttributes", json={"desired": 0}).status_code == 409
    task_id = tasks_of(master, job_id)[0]["id"]
    r = master.api("DELETE", f"/api/v3/tasks/{task_id}", params={"shrink": "true"})
    assert r.status_code == 409 and "decreasing desired" in r.json()["error"]
    empty(master.api("PUT", f"{base}/capacityAttributes", json={"desired": 3}))  # increase allowed again
    assert _capacity(master, job_id)["desired"] == 3

    r = master.api("PUT", f"{base}/jobprocesses", json={"disableIncreaseDesired": "yes"})
    assert r.status_code == 400 and r.json()["fields"][0]["path"] == "disableIncreaseDesired"
    batch_id = submit(master, descriptor_message(service=False))
    assert master.api("PUT", f"/api/v3/jobs/{batch_id}/jobprocesses", json={}).status_code == 409


def test_disruption_budget_is_validated_and_stored(master: RunningMaster) -> None:
    job_id = _service(master)
    base = f"/api/v3/jobs/{job_id}"
    r = master.api("PUT", f"{base}/disruptionBudget",
                   json={"selfManaged": {"relocationTimeMs": "1"}, "relocationLimit": {"limit": 1}})
    assert r.status_code == 400, r.text
    r = master.api("PUT", f"{base}/disruptionBudget",
                   json={"timeWindows": [{"days": ["Weekdays"]}]})
    assert r.status_code == 400 and r.json()["fields"][0]["path"].startswith("timeWindows.0.days")
    budget = {"selfManaged": {"relocationTimeMs": "60000"}, "ratePercentagePerHour":
              {"maxPercentageOfContainersRelocatedInHour": 10}}
    empty(master.api("PUT", f"{base}/disruptionBudget", json=budget))
    doc = master.api("GET", base).json()
    assert doc["jobDescriptor"]["disruptionBudget"]["selfManaged"] == {"relocationTimeMs": "60000"}
    strict(master.api("GET", base), "Job")


def test_job_and_task_attributes_put_and_delete(master: RunningMaster) -> None:
    job_id = _service(master)
    base = f"/api/v3/jobs/{job_id}"
    empty(master.api("PUT", f"{base}/attributes", json={"jobId": job_id, "attributes": {"a": "1", "b": "2"}}))
    empty(master.api("DELETE", f"{base}/attributes", params={"keys": "a,missing"}))
    job: Any = strict(master.api("GET", base), "Job")
    assert dict(job.jobDescriptor.attributes) == {"team.note": "hello", "b": "2"}
    for body, path in [({"jobId": "other", "attributes": {"x": "1"}}, "jobId"),
                       ({"attributes": {"titus.x": "1"}}, "attributes.titus.x"),
                       ({"attributes": {}}, "attributes"),
                       ({"attributes": {"x": 1}}, "attributes.x")]:
        r = master.api("PUT", f"{base}/attributes", json=body)
        assert r.status_code == 400 and path in [f["path"] for f in r.json()["fields"]], (body, r.text)
    assert master.api("DELETE", f"{base}/attributes").json()["fields"][0]["path"] == "keys"

    task_id = tasks_of(master, job_id)[0]["id"]
    tbase = f"/api/v3/tasks/{task_id}"
    empty(master.api("PUT", f"{tbase}/attributes", json={"attributes": {"x": "1", "y": "2"}}))
    empty(master.api("DELETE", f"{tbase}/attributes", params={"keys": "x"}))
    task: Any = strict(master.api("GET", tbase), "Task")
    assert dict(task.attributes) == {"y": "2"}
    assert master.api("PUT", f"{tbase}/attributes", json={"taskId": "t-other", "attributes": {"z": "1"}}
                      ).status_code == 400
    assert master.api("PUT", "/api/v3/tasks/no-such-task/attributes", json={"attributes": {"z": "1"}}
                      ).status_code == 404


def test_kill_with_shrink_lowers_min_unless_prevent_min_size_update(master: RunningMaster) -> None:
    job_id = _service(master, min=2, desired=2, max=5)
    first, second = (t["id"] for t in tasks_of(master, job_id))
    r = master.api("DELETE", f"/api/v3/tasks/{first}",
                   params={"shrink": "true", "preventMinSizeUpdate": "true"})
    assert r.status_code == 409 and "below min" in r.json()["error"]
    empty(master.api("DELETE", f"/api/v3/tasks/{first}", params={"shrink": "true"}))
    assert _capacity(master, job_id) == {"min": 1, "desired": 1, "max": 5}
    assert master.api("DELETE", f"/api/v3/tasks/{second}",
                      params={"preventMinSizeUpdate": "maybe"}).status_code == 400


def test_fields_projection_and_filters(master: RunningMaster) -> None:
    job_id = _service(master)
    other: Any = descriptor_message()
    other.container.image.tag = "1.36"
    other.attributes["tier"] = "gold"
    other_id = submit(master, other)

    r = master.api("GET", "/api/v3/jobs", params={"fields": "status.state,jobDescriptor.applicationName"})
    result: Any = strict(r, "JobQueryResult")
    assert {j["id"] for j in r.json()["items"]} == {job_id, other_id}
    for item in r.json()["items"]:
        assert item == {"id": item["id"], "status": {"state": "Accepted"},
                        "jobDescriptor": {"applicationName": "compat"}}
    assert result.pagination.totalItems == 2

    tr = master.api("GET", "/api/v3/tasks", params={"jobIds": job_id, "fields": "status.state,taskContext"})
    strict(tr, "TaskQueryResult")
    assert all(set(t) == {"id", "jobId", "status", "taskContext"} for t in tr.json()["items"])
    hist = master.api("GET", "/api/v3/tasks", params={"jobIds": job_id, "fields": "statusHistory.state"})
    strict(hist, "TaskQueryResult")

    def ids(**params: str) -> set[str]:
        resp = master.api("GET", "/api/v3/jobs", params=params)
        return {j.id for j in strict(resp, "JobQueryResult").items}

    assert ids(imageTag="1.36") == {other_id}
    assert ids(imageName=IMAGE) == {job_id, other_id}
    assert ids(attributes="tier:gold") == {other_id}
    assert ids(attributes="tier,team.note", **{"attributes.op": "or"}) == {job_id, other_id}
    assert ids(attributes="tier,team.note") == {other_id}
    assert ids(jobIds=f"{job_id},nope") == {job_id}
    assert ids(jobGroupStack="main", jobType="SERVICE") == {job_id}


def test_move_task_between_compatible_service_jobs(master: RunningMaster) -> None:
    agent = Agent(master)
    source = _service(master, min=0, desired=2, max=5)
    target_desc: Any = descriptor_message(service=True)
    target_desc.applicationName = "compat-target"  # names, owner, budget and capacity may differ
    target_desc.owner.teamEmail = "other@example.com"
    target_desc.service.capacity.min, target_desc.service.capacity.desired = 0, 1
    target = submit(master, target_desc)
    wait_for(lambda: len(agent.assigned()) == 3, what="3 tasks placed")
    moving, staying = (t["id"] for t in tasks_of(master, source))
    agent.start([moving, staying])

    r = master.api("POST", "/api/v3/tasks/move",
                   json={"sourceJobId": source, "targetJobId": target, "taskId": moving})
    empty(r)
    task: Any = strict(master.api("GET", f"/api/v3/tasks/{moving}"), "Task")
    assert (task.jobId, task.taskContext["task.movedFromJob"], task.status.state) == (target, source, 3)
    assert _capacity(master, source)["desired"] == 1 and _capacity(master, target)["desired"] == 2
    assert {t["id"] for t in tasks_of(master, target)} >= {moving}
    assert moving in agent.assigned()  # still on its agent: nothing was stopped

    other: Any = descriptor_message(service=True)
    other.container.image.tag = "1.36"
    incompatible = submit(master, other)
    r = master.api("POST", "/api/v3/tasks/move",
                   json={"sourceJobId": source, "targetJobId": incompatible, "taskId": staying})
    assert r.status_code == 409 and "container.image differs" in r.json()["error"]
    pending = next(t["id"] for t in tasks_of(master, target) if t["id"] != moving)
    r = master.api("POST", "/api/v3/tasks/move", json={"sourceJobId": target, "targetJobId": source,
                                                       "taskId": pending})
    assert r.status_code == 409 and "Started" in r.json()["error"]
    r = master.api("POST", "/api/v3/tasks/move", json={"sourceJobId": source, "taskId": staying})
    assert r.status_code == 400 and r.json()["fields"][0]["path"] == "targetJobId"


def test_scheduling_result_says_why_a_task_waits_in_titus_shape(master: RunningMaster) -> None:
    agent = Agent(master)
    big: Any = descriptor_message()
    big.container.resources.memoryMB = 100_000  # more than the agent's 65,536 MB
    big.batch.size = 1
    waiting = tasks_of(master, submit(master, big))[0]["id"]
    placed = tasks_of(master, submit(master, descriptor_message()))[0]["id"]
    wait_for(lambda: placed in agent.assigned(), what="the small task placed")

    def failures() -> Any:
        result: Any = strict(master.api("GET", f"/api/v3/scheduler/results/{waiting}"),
                             "SchedulingResultEvent")
        return result.failures.failures if result.WhichOneof("Status") == "failures" and \
            result.failures.failures[0].failureCount else None

    (failure,) = wait_for(failures, what="the engine's verdict on the big task")
    assert (failure.reason, failure.failureCount) == ("insufficient memory on 1 agent", 1)
    ok: Any = strict(master.api("GET", f"/api/v3/scheduler/results/{placed}"), "SchedulingResultEvent")
    assert ok.WhichOneof("Status") == "success" and ok.success.message == f"placed on {agent.id}"
    assert master.api("GET", "/api/v3/scheduler/results/no-such-task").status_code == 404
