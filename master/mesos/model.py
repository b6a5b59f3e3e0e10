"""Pure translation between the Mesos v1 JSON shapes and ours: offers, TaskInfos, task states.

No pymesos and no I/O here, so the rules (which resources count, how states map) are testable as plain
functions. Field names follow the Mesos v1 protobufs in their JSON form (mesos/v1/mesos.proto).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from master.api.models import TaskUpdate
from master.core import states
from master.scheduler.model import Resources

#: Scalar resource name under which Mesos agents advertise network bandwidth in Mbps
#: (`--resources=...;network_bandwidth:1000`); Mesos has no built-in one.
NETWORK_RESOURCE: Final = "network_bandwidth"

#: Agent attributes the placement engine knows, by the spellings Mesos operators use.
_ATTRIBUTE_NAMES: Final = {
    "zone": "zone", "availability_zone": "zone", "az": "zone",
    "instancetype": "instanceType", "instance_type": "instanceType",
    "tier": "tier",
    "instancegroup": "instanceGroup", "instance_group": "instanceGroup", "asg": "instanceGroup",
}

#: Mesos TaskState -> (our state, reason code). None: nothing to record (we already are there).
STATE_MAP: Final[dict[str, tuple[str, str] | None]] = {
    "TASK_STAGING": None,  # = Launched, which the placement already recorded
    "TASK_STARTING": (states.START_INITIATED, states.REASON_NORMAL),
    "TASK_RUNNING": (states.STARTED, states.REASON_NORMAL),
    "TASK_FINISHED": (states.FINISHED, states.REASON_NORMAL),
    "TASK_FAILED": (states.FINISHED, states.REASON_FAILED),
    "TASK_KILLED": (states.FINISHED, states.REASON_KILLED),
    "TASK_KILLING": None,  # the kill is under way; KillInitiated already says so
    "TASK_LOST": (states.FINISHED, states.REASON_LOST),
    "TASK_GONE": (states.FINISHED, states.REASON_LOST),
    "TASK_GONE_BY_OPERATOR": (states.FINISHED, states.REASON_LOST),
    "TASK_UNREACHABLE": (states.FINISHED, states.REASON_LOST),
    "TASK_DROPPED": (states.FINISHED, states.REASON_LOST),
    "TASK_UNKNOWN": (states.FINISHED, states.REASON_LOST),
    "TASK_ERROR": (states.FINISHED, states.REASON_INVALID),
}
TERMINAL_MESOS_STATES: Final = frozenset(s for s, m in STATE_MAP.items() if m and m[0] == states.FINISHED)


@dataclass(frozen=True)
class Offer:
    """One offer as the backend holds it until it is accepted, declined or rescinded."""

    offer_id: str
    agent_id: str
    hostname: str
    resources: Resources
    ports: tuple[tuple[int, int], ...]
    attributes: Mapping[str, str]
    allocation_info: Mapping[str, Any] | None = None
    received_s: float = 0.0
    raw_resources: tuple[Mapping[str, Any], ...] = field(default=(), repr=False)


def _scalar(resource: Mapping[str, Any]) -> float:
    return float(resource.get("scalar", {}).get("value", 0.0))


def parse_offer(offer: Mapping[str, Any], role: str, now_s: float) -> Offer:
    """Sum the resources usable by our role (or unreserved) and read the agent's attributes."""
    cpu = mem = disk = net = 0.0
    ports: list[tuple[int, int]] = []
    allocation: Mapping[str, Any] | None = None
    for r in offer.get("resources", []):
        reserved_for = r.get("role", "*")
        reservations = r.get("reservations") or []
        if reservations:
            reserved_for = reservations[-1].get("role", reserved_for)
        if reserved_for not in ("*", role):
            continue
        allocation = allocation or r.get("allocation_info")
        name = r.get("name")
        if name == "cpus":
            cpu += _scalar(r)
        elif name == "mem":
            mem += _scalar(r)
        elif name == "disk" and "disk" not in r:  # a persistent volume is not free disk
            disk += _scalar(r)
        elif name == NETWORK_RESOURCE:
            net += _scalar(r)
        elif name == "ports":
            ports += [(int(x["begin"]), int(x["end"])) for x in r.get("ranges", {}).get("range", [])]
    attributes = parse_attributes(offer.get("attributes", []))
    attributes.setdefault("hostname", str(offer.get("hostname", "")))
    return Offer(
        offer_id=offer["id"]["value"], agent_id=offer["agent_id"]["value"],
        hostname=str(offer.get("hostname", "")),
        resources=Resources(round(cpu, 3), int(mem), int(disk), int(net)), ports=tuple(ports),
        attributes=attributes, allocation_info=allocation, received_s=now_s,
        raw_resources=tuple(offer.get("resources", [])))


def parse_attributes(attributes: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for a in attributes:
        name = str(a.get("name", ""))
        kind = a.get("type", "TEXT")
        if kind == "TEXT":
            value = str(a.get("text", {}).get("value", ""))
        elif kind == "SCALAR":
            number = float(a.get("scalar", {}).get("value", 0.0))
            value = str(int(number)) if number.is_integer() else str(number)
        elif kind == "SET":
            value = ",".join(a.get("set", {}).get("item", []))
        else:
            value = ",".join(f"{x['begin']}-{x['end']}" for x in a.get("ranges", {}).get("range", []))
        out[_ATTRIBUTE_NAMES.get(name.lower(), name)] = value
    return out


def total(offers: Iterable[Offer]) -> Resources:
    out = Resources()
    for o in offers:
        out = out.add(o.resources)
    return out


def _scalar_resource(name: str, value: float, allocation: Mapping[str, Any] | None) -> dict[str, Any]:
    r: dict[str, Any] = {"name": name, "type": "SCALAR", "scalar": {"value": value}}
    if allocation:
        r["allocation_info"] = dict(allocation)
    return r


def task_info(entry: Mapping[str, Any], agent_id: str, framework_id: str, executor_command: str,
              allocation: Mapping[str, Any] | None) -> dict[str, Any]:
    """A TaskInfo that runs `entry` (a desired-set entry, as our agents get it) under titus-executor.

    One executor per task, named after it: a task's end is its executor's end, and Mesos accounts the
    task's resources to it. The entry travels as `data` so the executor builds the very TaskSpec our
    agent would (agent.agent._spec).
    """
    res = entry["resources"]
    resources = [_scalar_resource("cpus", float(res["cpu"]), allocation),
                 _scalar_resource("mem", float(res["memoryMB"]), allocation)]
    if int(res.get("diskMB", 0)) > 0:
        resources.append(_scalar_resource("disk", float(res["diskMB"]), allocation))
    if int(res.get("networkMbps", 0)) > 0:
        resources.append(_scalar_resource(NETWORK_RESOURCE, float(res["networkMbps"]), allocation))
    task_id = str(entry["taskId"])
    return {
        "name": f"{entry.get('applicationName', 'titus')}-{task_id}",
        "task_id": {"value": task_id},
        "agent_id": {"value": agent_id},
        "resources": resources,
        "executor": {
            "type": "CUSTOM",
            "executor_id": {"value": task_id},
            "framework_id": {"value": framework_id},
            "name": "titus-executor",
            "command": {"value": executor_command, "shell": True},
        },
        "data": encode(entry),
    }


def encode(value: Mapping[str, Any]) -> str:
    return base64.b64encode(json.dumps(value, separators=(",", ":")).encode()).decode()


def decode(data: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(base64.b64decode(data))
    return value


def to_update(status: Mapping[str, Any]) -> TaskUpdate | None:
    """A Mesos TaskStatus as our agents' TaskUpdate; None for states that change nothing here."""
    mapped = STATE_MAP.get(str(status.get("state")))
    if mapped is None:
        return None
    state, reason = mapped
    message = str(status.get("message", "")) or str(status.get("reason", "")) or str(status.get("state"))
    extra: dict[str, Any] = {}
    if status.get("data"):
        try:
            extra = decode(str(status["data"]))
        except ValueError:
            extra = {}
    return TaskUpdate(
        taskId=status["task_id"]["value"], state=state,  # type: ignore[arg-type]
        reasonCode=reason if state == states.FINISHED else "", reasonMessage=message[:4096],
        exitCode=extra.get("exitCode") if isinstance(extra.get("exitCode"), int) else None,
        stdoutTail=extra.get("stdoutTail") if isinstance(extra.get("stdoutTail"), str) else None,
        stderrTail=extra.get("stderrTail") if isinstance(extra.get("stderrTail"), str) else None)
