"""Fixtures for runtime tests: a ProcessRuntime on real cgroups, torn down completely after each test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent import cgroups
from agent.runtime.process import ProcessRuntime

CGROUP_ROOT = os.environ.get("TITUS_TEST_CGROUP_ROOT", "/sys/fs/cgroup")


def _cgroups_usable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create cgroups"
    try:
        cgroups.detect(CGROUP_ROOT)
    except cgroups.CgroupError as e:
        return str(e)
    return None


@pytest.fixture
def agent_id() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def runtimes(tmp_path: Path, agent_id: str) -> Iterator[Callable[[], ProcessRuntime]]:
    """Factory of runtimes sharing one data dir and agent id; every cgroup they made is removed after."""
    reason = _cgroups_usable()
    if reason:
        pytest.skip(reason)
    made: list[ProcessRuntime] = []

    def make() -> ProcessRuntime:
        rt = ProcessRuntime(tmp_path / "data", agent_id, cgroup_root=CGROUP_ROOT)
        made.append(rt)
        return rt

    yield make
    hierarchy = cgroups.detect(CGROUP_ROOT)
    for task_id in hierarchy.list_tasks(agent_id):
        group = hierarchy.task_group(agent_id, task_id)
        group.kill_all()
        group.remove()
    hierarchy.remove_agent(agent_id)
    for rt in made:
        rt.close()


@pytest.fixture
def runtime(runtimes: Callable[[], ProcessRuntime]) -> ProcessRuntime:
    return runtimes()


@pytest.fixture
def new_runtime(runtimes: Callable[[], ProcessRuntime]) -> Callable[[], ProcessRuntime]:
    return runtimes
