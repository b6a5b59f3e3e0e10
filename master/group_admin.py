"""Capacity groups (Titus ApplicationSLAs) and instance groups / agent lifecycles: CRUD through the store."""

from __future__ import annotations

import logging
from typing import Any

from master.api.models import (
    ApplicationSla,
)
from master.groups import DEFAULT_GROUP, CapacityGroup, InstanceGroup
from master.manager_base import Conflict, ManagerBase, NotFound
from master.store.base import Write

log = logging.getLogger("titus.master")


class GroupAdmin(ManagerBase):
    """One part of `JobManager` (master/job_manager.py); see the module docstring."""

    def list_capacity_groups(self) -> list[dict[str, Any]]:
        with self.lock:
            return [g.to_wire() for g in sorted(self.capacity_groups.values(), key=lambda g: g.name)]

    def get_capacity_group(self, name: str) -> dict[str, Any]:
        with self.lock:
            group = self.capacity_groups.get(name)
            if group is None:
                raise NotFound(f"capacity group {name} not found")
            return group.to_wire()

    def put_capacity_group(self, sla: ApplicationSla, create: bool) -> dict[str, Any]:
        with self.lock:
            existing = self.capacity_groups.get(sla.appName)
            if create and existing is not None:
                raise Conflict(f"capacity group {sla.appName} already exists")
            if not create and existing is None:
                raise NotFound(f"capacity group {sla.appName} not found")
            if existing is not None and existing.tier != sla.tier and self._group_in_use(sla.appName):
                raise Conflict(f"capacity group {sla.appName} has active jobs; its tier cannot change")
            group = CapacityGroup(sla, existing.version if existing else 0)
            write = Write("capacity_group", group.name, group.version, sla.to_json())
            group.version += 1
            self.capacity_groups[group.name] = group
            self._full_pass = True
            pending = self._queue([write])
        self._wait(pending)
        self.schedule_wanted.set()
        return group.to_wire()

    def delete_capacity_group(self, name: str) -> None:
        with self.lock:
            group = self.capacity_groups.get(name)
            if group is None:
                raise NotFound(f"capacity group {name} not found")
            if name == DEFAULT_GROUP:
                raise Conflict("the DEFAULT capacity group cannot be deleted")
            if self._group_in_use(name):
                raise Conflict(f"capacity group {name} has active jobs")
            write = Write("capacity_group", name, group.version, group.sla.to_json(), archived=True)
            del self.capacity_groups[name]
            pending = self._queue([write])
        self._wait(pending)

    def _group_in_use(self, name: str) -> bool:
        return any(j.descriptor.capacityGroup == name for j in self.jobs.values())

    def list_instance_groups(self) -> list[dict[str, Any]]:
        with self.lock:
            return [
                self._instance_group_wire(g)
                for g in sorted(self.instance_groups.values(), key=lambda g: g.id)
            ]

    def get_instance_group(self, group_id: str) -> dict[str, Any]:
        with self.lock:
            group = self.instance_groups.get(group_id)
            if group is None:
                raise NotFound(f"instance group {group_id} not found")
            return self._instance_group_wire(group)

    def _instance_group_wire(self, group: InstanceGroup) -> dict[str, Any]:
        members = [
            a.id for a in self.agents.values() if a.attributes.get("instanceGroup", "default") == group.id
        ]
        return {**group.to_record(), "agentIds": sorted(members)}

    def set_instance_group_lifecycle(self, group_id: str, state: str, detail: str) -> dict[str, Any]:
        with self.lock:
            group = self.instance_groups.get(group_id)
            if group is None:
                raise NotFound(f"instance group {group_id} not found")
            group.lifecycle, group.detail = state, detail
            write = Write("instance_group", group.id, group.version, group.to_record())
            group.version += 1
            self._full_pass = True
            pending = self._queue([write])
        self._wait(pending)
        self.schedule_wanted.set()
        return self.get_instance_group(group_id)

    def set_agent_lifecycle(self, agent_id: str, state: str, detail: str) -> dict[str, Any]:
        with self.lock:
            agent = self.agents.get(agent_id)
            if agent is None:
                raise NotFound(f"agent {agent_id} not found")
            agent.lifecycle, agent.lifecycle_detail = state, detail
            record = {"id": agent.id, "lifecycle": state, "detail": detail}
            write = Write("agent", agent.id, agent.record_version, record)
            agent.record_version += 1
            self._full_pass = True
            pending = self._queue([write])
        self._wait(pending)
        self.schedule_wanted.set()
        return next(a for a in self.agent_views() if a["id"] == agent_id)
