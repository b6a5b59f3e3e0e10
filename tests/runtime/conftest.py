"""Fixtures for runtime tests: a ProcessRuntime on real cgroups, torn down completely after each test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent import cgroups
from agent.runtime.images import ImageCache
from agent.runtime.oci import OciRuntime
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
    traversable(tmp_path)

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


BUSYBOX_IMAGE = "127.0.0.1:5000/titus/busybox:latest"


def traversable(path: Path) -> None:
    """pytest's base temp dir is 0700; the tasks' uid range must pass through it to reach their rootfs
    (only traversal: o+x, no listing), as it passes through /var/lib on a real host."""
    for p in [path, *path.parents]:
        mode = p.stat().st_mode
        if not mode & 0o001:
            p.chmod((mode & 0o7777) | 0o001)


@pytest.fixture(scope="session")
def registry_busybox() -> str:
    """The local registry's busybox (scripts/test.sh starts the registry and pushes it)."""
    from tests.runtime.docker_fixtures import BUSYBOX, run_script

    run_script(BUSYBOX, env={"TITUS_BUSYBOX_IMAGE": BUSYBOX_IMAGE})
    return BUSYBOX_IMAGE


@pytest.fixture(scope="session")
def image_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One image cache for the session's OCI runtimes, as one host shares it among its agents' tasks."""
    return tmp_path_factory.mktemp("images")


@pytest.fixture
def oci_runtimes(
    tmp_path: Path, agent_id: str, image_cache_dir: Path, registry_busybox: str
) -> Iterator[Callable[[], OciRuntime]]:
    """Factory of OCI runtimes on one data dir; every cgroup, mount and container is removed after."""
    reason = _cgroups_usable()
    if reason:
        pytest.skip(reason)
    made: list[OciRuntime] = []
    cache = ImageCache(image_cache_dir)

    def make() -> OciRuntime:
        rt = OciRuntime(tmp_path / "data", agent_id, images=cache, cgroup_root=CGROUP_ROOT)
        made.append(rt)
        return rt

    yield make
    if made:
        for task_id in made[0].list_tasks():
            made[0].cleanup(task_id)
    hierarchy = cgroups.detect(CGROUP_ROOT)
    hierarchy.remove_agent(agent_id)
    for rt in made:
        rt.close()
