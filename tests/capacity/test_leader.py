"""Only one controller acts: leader election through a real ZooKeeper."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from capacity.cluster import MemoryCluster
from capacity.controller import Controller, StaticProvider
from capacity.model import Tier
from capacity.node_group import MemoryNodeGroup
from capacity.zk_leader import ZooKeeperLeaderElection
from tests.capacity.builders import M5, task


def wait_for(cond: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_one_leader_and_failover(zookeeper: str) -> None:
    path = f"/titus/test-{uuid.uuid4().hex[:6]}/capacity-controller/leader"
    first = ZooKeeperLeaderElection(zookeeper, path, "first", retry_interval_s=0.2)
    second = ZooKeeperLeaderElection(zookeeper, path, "second", retry_interval_s=0.2)
    first.start()
    assert wait_for(first.is_leader)
    second.start()
    try:
        groups = [MemoryNodeGroup("flex-a", Tier.FLEX, 0, 10, 0, M5)]
        standby = Controller(
            MemoryCluster(pending=[task(1, waited=60)]), StaticProvider(groups), leader=second
        )
        assert standby.run_once(time.time()) is None
        assert groups[0].target_size() == 0 and not second.is_leader()
        first.stop()
        assert wait_for(second.is_leader)
        assert standby.run_once(time.time()) is not None
        assert groups[0].target_size() == 1
    finally:
        second.stop()
