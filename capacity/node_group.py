"""The cloud seen by the controller: a node group per autoscaling group.

Shaped after cluster-autoscaler's `cloudprovider.NodeGroup` (TargetSize, IncreaseSize, DeleteNodes,
MinSize, MaxSize) so the controller never sees boto3 and tests can drive it with an in-memory group.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from capacity.model import NodeGroupState, Resources, Tier


class NodeGroupError(Exception):
    """A resize the group must refuse (outside min/max, unknown instance); the message says why."""


class NodeGroup(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def tier(self) -> Tier: ...

    def refresh(self) -> None:
        """Re-read the group's state from the cloud; the other readers answer from that read."""

    def min_size(self) -> int: ...

    def max_size(self) -> int: ...

    def target_size(self) -> int: ...

    def instance_ids(self) -> tuple[str, ...]: ...

    def instance_type(self) -> str: ...

    def instance_resources(self) -> Resources: ...

    def increase_size(self, delta: int) -> None:
        """Grow the desired size by `delta`; refuses to pass max_size."""

    def set_target_size(self, size: int) -> None:
        """Set the desired size; refuses anything outside [min_size, max_size]."""

    def delete_nodes(self, instance_ids: Sequence[str]) -> None:
        """Terminate exactly these instances and decrement the desired size; refuses to go below min."""


class NodeGroupProvider(Protocol):
    """Finds the node groups of a cluster (for AWS: by the Terraform tags)."""

    def node_groups(self) -> Sequence[NodeGroup]: ...


def snapshot(group: NodeGroup) -> NodeGroupState:
    """The planner's view of one group, from the group's last refresh."""
    return NodeGroupState(
        id=group.id,
        tier=group.tier,
        min_size=group.min_size(),
        max_size=group.max_size(),
        desired=group.target_size(),
        instance_type=group.instance_type(),
        instance_resources=group.instance_resources(),
        instance_ids=group.instance_ids(),
    )


class MemoryNodeGroup:
    """An in-memory node group for controller tests and the simulator; enforces the same rules as AWS's."""

    def __init__(
        self,
        gid: str,
        tier: Tier,
        min_size: int,
        max_size: int,
        desired: int,
        resources: Resources,
        instance_type: str = "m5.4xlarge",
    ) -> None:
        self._id = gid
        self._tier = tier
        self._min = min_size
        self._max = max_size
        self._resources = resources
        self._type = instance_type
        self._serial = 0
        self.instances: list[str] = []
        self.deleted: list[str] = []
        self._resize(desired)

    @property
    def id(self) -> str:
        return self._id

    @property
    def tier(self) -> Tier:
        return self._tier

    def refresh(self) -> None:
        return None

    def min_size(self) -> int:
        return self._min

    def max_size(self) -> int:
        return self._max

    def target_size(self) -> int:
        return len(self.instances)

    def instance_ids(self) -> tuple[str, ...]:
        return tuple(self.instances)

    def instance_type(self) -> str:
        return self._type

    def instance_resources(self) -> Resources:
        return self._resources

    def _resize(self, size: int) -> None:
        while len(self.instances) < size:
            self._serial += 1
            self.instances.append(f"i-{self._id}-{self._serial:05d}")

    def increase_size(self, delta: int) -> None:
        self.set_target_size(len(self.instances) + delta)

    def set_target_size(self, size: int) -> None:
        if not self._min <= size <= self._max:
            raise NodeGroupError(f"{self._id}: size {size} outside [{self._min}, {self._max}]")
        if size < len(self.instances):
            raise NodeGroupError(
                f"{self._id}: shrink with delete_nodes so the victims are chosen, not random"
            )
        self._resize(size)

    def delete_nodes(self, instance_ids: Sequence[str]) -> None:
        unknown = [i for i in instance_ids if i not in self.instances]
        if unknown:
            raise NodeGroupError(f"{self._id}: instances not in group: {unknown}")
        if len(self.instances) - len(instance_ids) < self._min:
            raise NodeGroupError(f"{self._id}: deleting {len(instance_ids)} would go below min {self._min}")
        for i in instance_ids:
            self.instances.remove(i)
            self.deleted.append(i)
