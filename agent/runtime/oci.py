"""The OCI runtime, the default: every task is a container made from its image and run by runc.

Built on the process runtime's machinery (ProcessRuntime): the same fork server, the same per-task
supervisor that records the exact exit status on disk, the same cgroups made by agent/cgroups.py before the
container starts, so limits, OOM reports, kill escalation and restart recovery behave identically. What
this runtime adds, per task:

1. the image from the host's ImageCache (images.py: skopeo pull, verified, extracted layers shared by all
   tasks);
2. a writable layer on a tmpfs of `diskMB` (the disk limit: a full layer means ENOSPC for the task, and the
   agent ends it with reason "failed" and a disk message), and an overlayfs of the read-only image layers
   under it as the root filesystem;
3. a config.json from oci_spec.py (namespaces, user namespace, capabilities, seccomp, masked paths: the
   isolation.py table) and `runc run --detach`, whose container init the supervisor adopts as subreaper.

Why runc, not crun: crun 1.8.1 (Debian 12) refuses to run at all on a host whose cgroup v2 mount is
empty beside v1 controllers ("cgroups in hybrid mode not supported"), which is this host's layout and a
common one; runc handles it. runc's start costs ~45 ms here against crun's ~15 ms elsewhere: both inside the
60 ms goal. `runc run --detach` (not `create` + `start`) is one process start instead of two.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from agent import cgroups
from agent.runtime import mounts
from agent.runtime.base import LaunchError, Runtime, TaskSpec, task_identity
from agent.runtime.images import IdMap, ImageCache, ImageError
from agent.runtime.oci_spec import SpecError, oci_config, parse_user
from agent.runtime.process import ProcessRuntime, _read_json, _write_json_atomic

log = logging.getLogger(__name__)

RUNC = "runc"
#: Where task root filesystems are mounted: a world-traversable (not listable) tmpfs path.
RUN_DIR = Path("/run/titus/oci")


def _read_in_rootfs(rootfs: Path, path: str) -> str:
    """Read a small file of the image (/etc/passwd) without following symlinks out of the rootfs: the
    host's root reads it, and an image may point /etc/passwd at a host file."""
    current = rootfs
    for part in [p for p in path.split("/") if p]:
        current = current / part
        if current.is_symlink():
            return ""
    try:
        with open(current, errors="replace") as f:
            return f.read(1 << 20)
    except OSError:
        return ""


class OciRuntime(ProcessRuntime):
    """Runtime for containers from images, under runc, in the process runtime's cgroups and supervisors."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        agent_id: str,
        *,
        images: ImageCache | None = None,
        cgroup_root: str | os.PathLike[str] = "/sys/fs/cgroup",
        runc: str = RUNC,
        id_map: IdMap | None = None,
        run_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(data_dir, agent_id, cgroup_root=cgroup_root)
        # Only the rootfs mount points must be reachable by the tasks' uids (runc's init mounts them
        # from inside the user namespace); the agent's data, image layers and writable layers are
        # reached through overlayfs with the agent's credentials and stay 0700.
        self.run_dir = Path(run_dir) if run_dir is not None else RUN_DIR / agent_id
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for d in (self.run_dir, *[p for p in self.run_dir.parents if p.is_relative_to(RUN_DIR)]):
            os.chmod(d, 0o711)
        self.id_map = id_map or IdMap()
        self.images = images or ImageCache(self.data_dir / "images", id_map=self.id_map)
        self.runc = shutil.which(runc) or runc
        self.gc_interval_s = 60.0
        self._last_gc = time.monotonic()
        self.state_dir = self.data_dir / "runc"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        os.chmod(self.data_dir, 0o700)
        os.chmod(self.tasks_dir, 0o700)

    def container_id(self, task_id: str) -> str:
        return f"titus-{self.agent_id}-{task_id}"

    # --- hooks -------------------------------------------------------------------------------------

    task_dir_mode = 0o700

    def _check_spec(self, spec: TaskSpec) -> None:
        if not spec.image:
            raise LaunchError("the job names no image")

    def _prepare(self, spec: TaskSpec, task_dir: Path) -> dict[str, Any]:
        try:
            image = self.images.get(spec.image)
        except ImageError as e:
            raise LaunchError(str(e)) from e
        _write_json_atomic(task_dir / "image.json", {"reference": image.reference,
                                                     "digest": image.manifest_digest,
                                                     "layers": list(image.layers)})
        disk, rootfs = self._disk_dir(spec.task_id), self.run_dir / spec.task_id
        disk.mkdir(exist_ok=True)
        rootfs.mkdir(exist_ok=True)
        root_id = self.id_map.shift(0)
        size_mb = max(1, spec.disk_mb)
        try:
            mounts.mount_tmpfs(disk, size_mb, mode=0o711)
            (disk / "upper").mkdir()
            (disk / "work").mkdir()
            os.chown(disk / "upper", root_id, root_id)
            lower = ":".join(str(d) for d in reversed(image.layer_dirs))
            mounts.mount("overlay", rootfs, "overlay",
                   f"lowerdir={lower},upperdir={disk / 'upper'},workdir={disk / 'work'}")
        except OSError as e:
            raise LaunchError(f"cannot set up the task's root filesystem: {e}") from e
        try:
            uid, gid = parse_user(image.config.user, _read_in_rootfs(rootfs, "/etc/passwd"),
                                  _read_in_rootfs(rootfs, "/etc/group"))
            identity = task_identity(spec)
            if image.source_digest and not identity["TITUS_IMAGE_DIGEST"]:
                identity["TITUS_IMAGE_DIGEST"] = image.source_digest
            config = oci_config(spec, image.config, rootfs=str(rootfs), identity=identity, uid=uid, gid=gid,
                                id_map=self.id_map, hostname=spec.task_id[:63])
        except SpecError as e:
            raise LaunchError(str(e)) from e
        config["linux"]["cgroupsPath"] = f"/{cgroups.TITUS_DIR}/{self.agent_id}/{spec.task_id}"  # ours
        _write_json_atomic(task_dir / "config.json", config)
        cid = self.container_id(spec.task_id)
        argv = [self.runc, "--root", str(self.state_dir), "--log", str(task_dir / "runc.log"),
                "--log-format", "json", "run", "--detach", "--bundle", str(task_dir),
                "--pid-file", str(task_dir / "container.pid"), cid]
        return {"argv": argv, "env": {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, "cwd": str(task_dir),
                "pid_file": str(task_dir / "container.pid"), "runtime_log": str(task_dir / "runc.log")}

    def cleanup(self, task_id: str) -> None:
        """Also keeps the image cache within its bound: at most once per gc_interval_s, layers no task
        holds go, least recently used first (ImageCache.gc)."""
        super().cleanup(task_id)
        now = time.monotonic()
        if now - self._last_gc >= self.gc_interval_s:
            self._last_gc = now
            try:
                self.images.gc(self.in_use_layers())
            except Exception:  # a failed collection must not fail the task's cleanup
                log.exception("image cache garbage collection failed")

    def _release(self, task_id: str) -> None:
        task_dir = self._task_dir(task_id)
        for name in ("config.json", "container.pid", "runc.log", "image.json"):
            with contextlib.suppress(FileNotFoundError):
                (task_dir / name).unlink()
        subprocess.run([self.runc, "--root", str(self.state_dir), "delete", "--force",
                        self.container_id(task_id)], capture_output=True, check=False)
        for mount_point in (self.run_dir / task_id, task_dir / "disk"):
            mounts.release(mount_point, task_id)

    def _disk_dir(self, task_id: str) -> Path:
        return self._task_dir(task_id) / "disk"

    def _signal(self, pid: int, sig: int) -> None:
        os.kill(pid, sig)  # the container's init: it forwards or handles it, as under Docker

    def in_use_layers(self) -> set[str]:
        """Layers of tasks still holding a root filesystem: never garbage-collected."""
        used: set[str] = set()
        for task_id in self.list_tasks():
            info = _read_json(self._task_dir(task_id) / "image.json") or {}
            used.update(info.get("layers", []))
        return used


_IMPLEMENTS_RUNTIME: type[Runtime] = OciRuntime
