"""`titus agent list|get|lifecycle`, `titus instance-group ...`, `titus capacity-group ...`.

All over the existing management API (`/api/v3/agent/...`, `/api/v3/management/applications`). Figures the
API does not serve directly (free resources of a group, a capacity group's use) are summed here from what it
does serve (agents' resources and use; active tasks with their resources and capacity group).
"""

from __future__ import annotations

import json
from typing import Any

import click

from titus.cli_common import (
    EXIT_BAD_INPUT,
    EXIT_NOT_FOUND,
    CliError,
    api_call,
    api_options,
    complete_ids,
    emit,
    make_client,
    table,
)

LIFECYCLES = click.Choice(["Active", "PhasedOut", "Removable"])
DIMENSIONS = ("cpu", "memoryMB", "diskMB", "networkMbps", "gpu")


def _res(r: dict[str, Any]) -> str:
    return (
        f"cpu {r.get('cpu', 0):g}, mem {r.get('memoryMB', 0)} MB, disk {r.get('diskMB', 0)} MB, "
        f"net {r.get('networkMbps', 0)} Mbps" + (f", gpu {r['gpu']}" if r.get("gpu") else "")
    )


def _free(a: dict[str, Any]) -> dict[str, Any]:
    return {k: a["resources"].get(k, 0) - a["used"].get(k, 0) for k in DIMENSIONS}


def _sum(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {k: sum(i.get(k, 0) for i in items) for k in DIMENSIONS}


def _agent_state(a: dict[str, Any]) -> str:
    """Registration state, and why the agent takes no work when it does not."""
    why = a.get("unavailableReason") or ""
    if not a.get("acceptingWork") and why:
        return f"{a['state']} (not accepting work: {why})"
    return str(a["state"])


# ========================================================================================= agents
@click.command("list")
@api_options
def agent_list(url: str | None, token: str | None, as_json: bool) -> None:
    """List the agents with their lifecycle, tier, group, tasks and free resources."""
    client = make_client(url, token)
    agents = api_call(client.agents)
    rows = []
    for a in agents:
        free = _free(a)
        rows.append(
            [
                a["id"],
                a["state"] if a.get("acceptingWork") or not a.get("unavailableReason") else f"{a['state']}*",
                a.get("lifecycle", ""),
                a.get("tier", ""),
                a.get("instanceGroupId", ""),
                str(len(a.get("taskIds", []))),
                f"{free['cpu']:g}",
                str(free["memoryMB"]),
            ]
        )
    human = (
        table(rows, ["ID", "STATE", "LIFECYCLE", "TIER", "GROUP", "TASKS", "FREE CPU", "FREE MEM MB"])
        if rows
        else "no agents"
    )
    if any(r[1].endswith("*") for r in rows):
        human += "\n* not accepting work: see `titus agent get ID`"
    emit(agents, as_json, human)


def _one_agent(client: Any, agent_id: str) -> dict[str, Any]:
    agents: list[dict[str, Any]] = api_call(client.agents)
    found = next((a for a in agents if a["id"] == agent_id), None)
    if found is None:
        raise CliError(f"agent {agent_id} not found", EXIT_NOT_FOUND, 404)
    return found


@click.command("get")
@click.argument("agent_id", shell_complete=complete_ids("agent"))
@api_options
def agent_get(agent_id: str, url: str | None, token: str | None, as_json: bool) -> None:
    """Show one agent: state, lifecycle and why, resources, use, tasks."""
    client = make_client(url, token)
    a = _one_agent(client, agent_id)
    detail = f" ({a['lifecycleDetail']})" if a.get("lifecycleDetail") else ""
    lines = [
        f"agent {a['id']}",
        f"  state:      {_agent_state(a)}",
        f"  lifecycle:  {a.get('lifecycle', '')}{detail}",
        f"  tier:       {a.get('tier', '')}   instance group: {a.get('instanceGroupId', '')}",
        f"  resources:  {_res(a['resources'])}",
        f"  used:       {_res(a['used'])}",
        f"  free:       {_res(_free(a))}",
        f"  tasks:      {len(a.get('taskIds', []))}",
        *[f"    {t}" for t in a.get("taskIds", [])],
    ]
    if a.get("staleTaskIds"):
        lines.append(f"  stale (to be killed): {', '.join(a['staleTaskIds'])}")
    attrs = a.get("attributes") or {}
    if attrs:
        lines.append("  attributes: " + ", ".join(f"{k}={v}" for k, v in sorted(attrs.items())))
    emit(a, as_json, "\n".join(lines))


@click.command("lifecycle")
@click.argument("agent_id", shell_complete=complete_ids("agent"))
@click.argument("state", type=LIFECYCLES)
@click.option("--detail", default="", help="Why (kept with the agent, shown by `agent get`).")
@api_options
def agent_lifecycle(
    agent_id: str, state: str, detail: str, url: str | None, token: str | None, as_json: bool
) -> None:
    """Set an agent's lifecycle: PhasedOut takes no new tasks and drains service tasks elsewhere."""
    client = make_client(url, token)
    result = api_call(lambda: client.set_agent_lifecycle(agent_id, state, detail))
    emit(result, as_json, f"agent {agent_id}: lifecycle {state}")


# ================================================================================ instance groups
@click.group("instance-group")
def instance_group() -> None:
    """Agent pools (one per autoscaling group): list, get, lifecycle."""


def _group_view(group: dict[str, Any], agents: list[dict[str, Any]]) -> dict[str, Any]:
    members = [a for a in agents if a.get("instanceGroupId") == group["id"]]
    return {
        **group,
        "resources": _sum([a["resources"] for a in members]),
        "free": _sum([_free(a) for a in members]),
    }


@instance_group.command("list")
@api_options
def instance_group_list(url: str | None, token: str | None, as_json: bool) -> None:
    """List instance groups with their tier, lifecycle, agents and free resources."""
    client = make_client(url, token)
    groups = api_call(client.instance_groups)
    agents = api_call(client.agents)
    views = [_group_view(g, agents) for g in groups]
    rows = [
        [
            g["id"],
            g.get("tier", ""),
            g.get("lifecycleState", ""),
            str(len(g.get("agentIds", []))),
            f"{g['free']['cpu']:g}",
            str(g["free"]["memoryMB"]),
            g.get("detail", ""),
        ]
        for g in views
    ]
    emit(
        views,
        as_json,
        table(rows, ["ID", "TIER", "LIFECYCLE", "AGENTS", "FREE CPU", "FREE MEM MB", "DETAIL"])
        if rows
        else "no instance groups",
    )


@instance_group.command("get")
@click.argument("group_id", shell_complete=complete_ids("instance-group"))
@api_options
def instance_group_get(group_id: str, url: str | None, token: str | None, as_json: bool) -> None:
    """Show one instance group: lifecycle, agents, resources and free resources."""
    client = make_client(url, token)
    group = api_call(lambda: client.instance_group(group_id))
    view = _group_view(group, api_call(client.agents))
    detail = f" ({view['detail']})" if view.get("detail") else ""
    lines = [
        f"instance group {view['id']}",
        f"  tier:       {view.get('tier', '')}",
        f"  lifecycle:  {view.get('lifecycleState', '')}{detail}",
        f"  resources:  {_res(view['resources'])}",
        f"  free:       {_res(view['free'])}",
        f"  agents:     {len(view.get('agentIds', []))}",
        *[f"    {a}" for a in view.get("agentIds", [])],
    ]
    emit(view, as_json, "\n".join(lines))


@instance_group.command("lifecycle")
@click.argument("group_id", shell_complete=complete_ids("instance-group"))
@click.argument("state", type=LIFECYCLES)
@click.option("--detail", default="", help="Why (kept with the group).")
@api_options
def instance_group_lifecycle(
    group_id: str, state: str, detail: str, url: str | None, token: str | None, as_json: bool
) -> None:
    """Set a group's lifecycle (PhasedOut: its agents take no new tasks and are drained)."""
    client = make_client(url, token)
    result = api_call(lambda: client.set_instance_group_lifecycle(group_id, state, detail))
    emit(result, as_json, f"instance group {group_id}: lifecycle {state}")


# ================================================================================ capacity groups
@click.group("capacity-group")
def capacity_group() -> None:
    """Capacity groups (Titus's ApplicationSLA): reservations per tier, and what they use."""


def _with_use(
    group: dict[str, Any], tasks: list[dict[str, Any]], jobs: list[dict[str, Any]]
) -> dict[str, Any]:
    """The reservation (instanceCount x resourceDimension) and the use (active tasks of the group's jobs
    that hold resources on an agent; a task's resources are its job's, as in Titus's Task)."""
    resources = {
        j["id"]: j.get("jobDescriptor", {}).get("container", {}).get("resources") for j in jobs
    }
    tasks = [{**t, "resources": resources.get(t["jobId"])} for t in tasks]
    dims = group.get("resourceDimension", {})
    count = int(group.get("instanceCount", 0))
    reserved = {k: dims.get(k, 0) * count for k in DIMENSIONS}
    placed = [
        t
        for t in tasks
        if t.get("taskContext", {}).get("task.capacityGroup", "DEFAULT") == group["appName"]
        and t["status"]["state"] != "Accepted"
        and t.get("resources")
    ]
    return {
        **group,
        "reserved": reserved,
        "used": _sum([t["resources"] for t in placed]),
        "tasks": len(placed),
    }


@capacity_group.command("list")
@api_options
def capacity_group_list(url: str | None, token: str | None, as_json: bool) -> None:
    """List capacity groups: tier, reservation and use."""
    client = make_client(url, token)
    groups = api_call(client.capacity_groups)
    tasks = api_call(lambda: client.tasks())
    jobs = api_call(lambda: client.jobs())
    views = [_with_use(g, tasks, jobs) for g in groups]
    rows = [
        [
            g["appName"],
            g.get("tier", ""),
            str(g.get("instanceCount", 0)),
            f"{g['used']['cpu']:g}/{g['reserved']['cpu']:g}",
            f"{g['used']['memoryMB']}/{g['reserved']['memoryMB']}",
            str(g["tasks"]),
        ]
        for g in views
    ]
    emit(
        views,
        as_json,
        table(rows, ["NAME", "TIER", "INSTANCES", "CPU USED/RESERVED", "MEM MB USED/RESERVED", "TASKS"])
        if rows
        else "no capacity groups",
    )


@capacity_group.command("get")
@click.argument("name", shell_complete=complete_ids("capacity-group"))
@api_options
def capacity_group_get(name: str, url: str | None, token: str | None, as_json: bool) -> None:
    """Show one capacity group: tier, reservation vs use."""
    client = make_client(url, token)
    view = _with_use(
        api_call(lambda: client.capacity_group(name)),
        api_call(lambda: client.tasks()),
        api_call(lambda: client.jobs()),
    )
    lines = [
        f"capacity group {view['appName']}",
        f"  tier:        {view.get('tier', '')}",
        f"  reservation: {view.get('instanceCount', 0)} x ({_res(view.get('resourceDimension', {}))})",
        f"  reserved:    {_res(view['reserved'])}",
        f"  used:        {_res(view['used'])} by {view['tasks']} tasks",
    ]
    emit(view, as_json, "\n".join(lines))


def _sla_options(f: Any) -> Any:
    for opt in reversed(
        [
            click.option("--tier", type=click.Choice(["critical", "flex"], case_sensitive=False)),
            click.option(
                "--instances", "instance_count", type=int, help="How many instances of the dimension."
            ),
            click.option("--cpu", type=float),
            click.option("--memory-mb", type=int),
            click.option("--disk-mb", type=int),
            click.option("--network-mbps", type=int),
            click.option("--gpu", type=int),
            click.option("--file", "sla_file", type=click.File("r"), help="An ApplicationSLA JSON document."),
        ]
    ):
        f = opt(f)
    return f


def _sla(
    name: str,
    base: dict[str, Any] | None,
    sla_file: Any,
    tier: str | None,
    instance_count: int | None,
    dims: dict[str, Any],
) -> dict[str, Any]:
    """The ApplicationSLA to send: the file (or the group as it is, for update), then the flags on top."""
    if sla_file is not None:
        try:
            sla = json.load(sla_file)
        except json.JSONDecodeError as exc:
            raise CliError(
                f"{getattr(sla_file, 'name', 'input')} is not valid JSON: {exc}", EXIT_BAD_INPUT
            ) from exc
        if not isinstance(sla, dict):
            raise CliError("the ApplicationSLA file must hold a JSON object", EXIT_BAD_INPUT)
    else:
        sla = {
            k: v
            for k, v in (base or {}).items()
            if k
            in (
                "appName",
                "tier",
                "resourceDimension",
                "instanceCount",
                "cellId",
                "schedulerName",
                "resourcePool",
            )
        }
    sla["appName"] = name
    if tier:
        sla["tier"] = tier.lower()
    if instance_count is not None:
        sla["instanceCount"] = instance_count
    given = {k: v for k, v in dims.items() if v is not None}
    if given:
        sla["resourceDimension"] = {**sla.get("resourceDimension", {}), **given}
    return sla


@capacity_group.command("create")
@click.argument("name", shell_complete=complete_ids("capacity-group"))
@_sla_options
@api_options
def capacity_group_create(
    name: str,
    tier: str | None,
    instance_count: int | None,
    cpu: float | None,
    memory_mb: int | None,
    disk_mb: int | None,
    network_mbps: int | None,
    gpu: int | None,
    sla_file: Any,
    url: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """Create a capacity group (flags, or --file with an ApplicationSLA; flags win)."""
    client = make_client(url, token)
    sla = _sla(
        name,
        None,
        sla_file,
        tier,
        instance_count,
        {"cpu": cpu, "memoryMB": memory_mb, "diskMB": disk_mb, "networkMbps": network_mbps, "gpu": gpu},
    )
    result = api_call(lambda: client.create_capacity_group(sla))
    emit(result, as_json, f"capacity group {name} created")


@capacity_group.command("update")
@click.argument("name", shell_complete=complete_ids("capacity-group"))
@_sla_options
@api_options
def capacity_group_update(
    name: str,
    tier: str | None,
    instance_count: int | None,
    cpu: float | None,
    memory_mb: int | None,
    disk_mb: int | None,
    network_mbps: int | None,
    gpu: int | None,
    sla_file: Any,
    url: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """Change a capacity group: the flags given change those fields, the rest stays."""
    client = make_client(url, token)
    current = None if sla_file is not None else api_call(lambda: client.capacity_group(name))
    sla = _sla(
        name,
        current,
        sla_file,
        tier,
        instance_count,
        {"cpu": cpu, "memoryMB": memory_mb, "diskMB": disk_mb, "networkMbps": network_mbps, "gpu": gpu},
    )
    result = api_call(lambda: client.update_capacity_group(sla))
    emit(result, as_json, f"capacity group {name} updated")


@capacity_group.command("delete")
@click.argument("name", shell_complete=complete_ids("capacity-group"))
@api_options
def capacity_group_delete(name: str, url: str | None, token: str | None, as_json: bool) -> None:
    """Delete a capacity group (refused while jobs use it)."""
    client = make_client(url, token)
    api_call(lambda: client.delete_capacity_group(name))
    emit({"appName": name, "deleted": True}, as_json, f"capacity group {name} deleted")
