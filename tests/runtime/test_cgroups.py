"""cgroup adapter checks that need no root: v2 writes against a directory tree made in a tmp dir.

This machine's cgroup2 mount has no controllers, so the v2 code is checked by the files it writes; the v1
code runs for real in the runtime tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import cgroups


def _v2_root(tmp_path: Path, controllers: str = "cpuset cpu io memory hugetlb pids") -> Path:
    root = tmp_path / "unified"
    root.mkdir()
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "cgroup.subtree_control").write_text("")
    return root


@pytest.mark.parametrize(
    ("cpu", "quota", "weight"),
    [(0.25, 25_000, 25), (0.5, 50_000, 50), (1.0, 100_000, 100), (2.0, 200_000, 200), (0.001, 1000, 1)],
    ids=["quarter", "half", "one", "two", "tiny-clamped"],
)
def test_v2_limits_are_written(tmp_path: Path, cpu: float, quota: int, weight: int) -> None:
    root = _v2_root(tmp_path)
    hierarchy = cgroups.detect(root)
    assert hierarchy.version == 2
    group = hierarchy.task_group("agent-1", "task-1")
    group.create(cgroups.Limits(cpu=cpu, memory_mb=64, pids=50))
    task = root / "titus" / "agent-1" / "task-1"
    assert (task / "memory.max").read_text() == str(64 * 2**20)
    assert (task / "memory.swap.max").read_text() == "0"
    assert (task / "cpu.max").read_text() == f"{quota} 100000"
    assert (task / "cpu.weight").read_text() == str(weight)
    assert (task / "pids.max").read_text() == "50"
    for parent in (root, root / "titus", root / "titus" / "agent-1"):
        assert (parent / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert group.procs_files == [task / "cgroup.procs"]
    group.set_cpu_quota(1.0)  # the quota alone changes (a start's allowance), the weight stays
    assert (task / "cpu.max").read_text() == "100000 100000"
    assert (task / "cpu.weight").read_text() == str(weight)


def test_v2_membership_usage_and_oom_are_read_from_the_group(tmp_path: Path) -> None:
    root = _v2_root(tmp_path)
    hierarchy = cgroups.detect(root)
    group = hierarchy.task_group("agent-1", "task-1")
    group.create(cgroups.Limits(cpu=1, memory_mb=32, pids=10))
    task = root / "titus" / "agent-1" / "task-1"
    group.add_pid(4242)
    assert (task / "cgroup.procs").read_text() == "4242"
    (task / "memory.events").write_text("low 0\nhigh 0\nmax 7\noom 2\noom_kill 1\noom_group_kill 0\n")
    (task / "cpu.stat").write_text("usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n")
    (task / "memory.current").write_text("1048576\n")
    stats = group.stats()
    assert (stats.oom_kills, stats.cpu_ns, stats.memory_bytes, stats.pids) == (1, 1_500_000, 2**20, 1)
    assert hierarchy.list_tasks("agent-1") == ["task-1"]


def test_v2_remove_deletes_the_task_directory(tmp_path: Path) -> None:
    root = _v2_root(tmp_path)
    hierarchy = cgroups.detect(root)
    group = hierarchy.task_group("agent-1", "task-1")
    group.create(cgroups.Limits(cpu=1, memory_mb=32, pids=10))
    task = root / "titus" / "agent-1" / "task-1"
    for f in task.iterdir():  # the kernel's interface files vanish with the directory; plain files do not
        f.unlink()
    group.remove(timeout_s=0.1)
    assert not task.exists()
    assert hierarchy.list_tasks("agent-1") == []


def test_v2_without_the_memory_controller_is_refused(tmp_path: Path) -> None:
    root = _v2_root(tmp_path, controllers="hugetlb")
    with pytest.raises(cgroups.CgroupError, match="cpu, memory, pids"):
        cgroups.detect(root)


def test_no_hierarchy_is_refused(tmp_path: Path) -> None:
    with pytest.raises(cgroups.CgroupError, match="no cgroup hierarchy"):
        cgroups.detect(tmp_path)


def test_v1_is_detected_from_per_controller_directories(tmp_path: Path) -> None:
    for controller in ("memory", "cpu", "cpuacct", "pids"):
        (tmp_path / controller).mkdir()
    hierarchy = cgroups.detect(tmp_path)
    assert hierarchy.version == 1
    group = hierarchy.task_group("agent-1", "task-1")
    assert sorted(str(p.relative_to(tmp_path)) for p in group.procs_files) == [
        f"{c}/titus/agent-1/task-1/cgroup.procs" for c in ("cpu", "cpuacct", "memory", "pids")
    ]


def test_v1_comounted_cpu_and_cpuacct_are_joined_once(tmp_path: Path) -> None:
    (tmp_path / "cpu,cpuacct").mkdir()
    (tmp_path / "cpu").symlink_to("cpu,cpuacct")
    (tmp_path / "cpuacct").symlink_to("cpu,cpuacct")
    (tmp_path / "memory").mkdir()
    (tmp_path / "pids").mkdir()
    group = cgroups.detect(tmp_path).task_group("agent-1", "task-1")
    assert len(group.procs_files) == 3


@pytest.mark.parametrize("bad", ["", "..", "../etc", "a/b", ".hidden", "x" * 129, "tab\tid", "nul\0id"])
def test_unsafe_ids_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="safe identifier"):
        cgroups.validate_id(bad)


@pytest.mark.parametrize("good", ["a", "task-1", "0b5c1e5e-8c1a-4d6f-9a3e-2f0e6e9c1a77", "A_b-9"])
def test_uuid_like_ids_are_accepted(good: str) -> None:
    assert cgroups.validate_id(good) == good
