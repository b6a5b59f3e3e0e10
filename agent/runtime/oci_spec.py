"""Pure translation of a task and its image config into an OCI runtime config.json: no I/O.

The isolation comes from the table in isolation.py; this module only arranges it into the OCI runtime
spec's shape (https://github.com/opencontainers/runtime-spec, config.md and config-linux.md) and decides
what the task runs: the job's entryPoint/command where given, else the image's ENTRYPOINT/CMD, as Docker
and Titus do (a job's entryPoint replaces the image's ENTRYPOINT *and* CMD; a job's command alone replaces
only CMD).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.runtime import isolation
from agent.runtime.base import TaskSpec
from agent.runtime.images import IdMap, ImageConfig

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class SpecError(Exception):
    """The task cannot be expressed (nothing to run, bad user); message is user-facing."""


_CLEARED = ("",)


def task_argv(spec: TaskSpec, image: ImageConfig) -> list[str]:
    """Titus's rules (titus_job_api.proto, Container.entryPoint/command): a job's entryPoint replaces the
    image's ENTRYPOINT and drops its CMD; a job's command alone replaces only CMD; neither runs the image's
    own. A single empty string ([""]) clears the image's value instead of replacing it."""
    command = [] if spec.command == _CLEARED else list(spec.command)
    if spec.entry_point:
        argv = [] if spec.entry_point == _CLEARED else list(spec.entry_point)
        argv += command
    elif spec.command:
        argv = [*image.entrypoint, *command]
    else:
        argv = [*image.entrypoint, *image.cmd]
    if not argv:
        raise SpecError("nothing to run: the job gives no entryPoint or command and the image has none")
    return argv


def task_env(spec: TaskSpec, image: ImageConfig, identity: Mapping[str, str]) -> list[str]:
    """Image Env first, then the Titus identity, then the job's env: the job wins every clash."""
    env: dict[str, str] = {"PATH": DEFAULT_PATH}
    for item in image.env:
        key, sep, value = item.partition("=")
        if sep and key:
            env[key] = value
    env.update(identity)
    env.update(spec.env)
    return [f"{k}={v}" for k, v in env.items()]


def parse_user(user: str, passwd: str, group: str) -> tuple[int, int]:
    """The image's `User` ("name", "uid", "uid:gid", "name:group") as numeric ids, looked up in the
    image's own /etc/passwd and /etc/group texts as runc and Docker do: a numeric uid takes its primary
    group from passwd when listed there, else group 0. Empty means root (inside the user namespace)."""
    if not user:
        return 0, 0
    name, _, grp = user.partition(":")
    users = _entries(passwd)
    if name.isdigit():
        uid = int(name)
        gid = next((g for n, u, g in users if u == uid), 0)
    else:
        found = next(((u, g) for n, u, g in users if n == name), None)
        if found is None:
            raise SpecError(f"the image's user {name!r} is not in its /etc/passwd")
        uid, gid = found
    if grp.isdigit():
        gid = int(grp)
    elif grp:
        gids = [u for n, u, _ in _entries(group, min_fields=3) if n == grp]
        if not gids:
            raise SpecError(f"the image's group {grp!r} is not in its /etc/group")
        gid = gids[0]
    return uid, gid


def _entries(text: str, min_fields: int = 4) -> list[tuple[str, int, int]]:
    """(name, id, primary gid) per well-formed line of a passwd or group file; gid 0 for group files."""
    out = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= min_fields and fields[2].isdigit():
            gid = int(fields[3]) if min_fields >= 4 and fields[3].isdigit() else 0
            out.append((fields[0], int(fields[2]), gid))
    return out


def _mounts() -> list[dict[str, Any]]:
    """The kernel filesystems every container has (moby's DefaultLinuxSpec); /sys and cgroups read-only."""
    return [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ]


def _seccomp() -> dict[str, Any]:
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64"],
        "syscalls": [{"names": list(isolation.SECCOMP_DENIED), "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    }


def oci_config(
    spec: TaskSpec,
    image: ImageConfig,
    *,
    rootfs: str,
    identity: Mapping[str, str],
    uid: int,
    gid: int,
    id_map: IdMap,
    hostname: str,
) -> dict[str, Any]:
    caps = [f"CAP_{c}" for c in isolation.TASK_CAPS]
    return {
        "ociVersion": "1.0.2",
        "root": {"path": rootfs, "readonly": False},
        "hostname": hostname,
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": gid, "additionalGids": [gid]},
            "args": task_argv(spec, image),
            "env": task_env(spec, image, identity),
            "cwd": image.working_dir or "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps, "inheritable": []},
            "rlimits": [{"type": t, "soft": s, "hard": h} for t, s, h in isolation.RLIMITS],
            "noNewPrivileges": True,
        },
        "mounts": _mounts(),
        "linux": {
            "namespaces": [{"type": ns} for ns in isolation.NAMESPACES],
            "uidMappings": [{"containerID": 0, "hostID": id_map.host_base, "size": id_map.size}],
            "gidMappings": [{"containerID": 0, "hostID": id_map.host_base, "size": id_map.size}],
            "maskedPaths": list(isolation.MASKED_PATHS),
            "readonlyPaths": list(isolation.READONLY_PATHS),
            "seccomp": _seccomp(),
        },
    }
