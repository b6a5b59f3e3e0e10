"""mount(2) and umount2(2) through libc: a `mount` process per task would cost more than the rest of a
task's setup (the OCI runtime's start budget is 60 ms)."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

_libc = ctypes.CDLL(None, use_errno=True)
_MNT_DETACH = 2
MS_NOSUID = 2
MS_NODEV = 4


def mount(source: str, target: Path, fstype: str, options: str, flags: int = 0) -> None:
    if _libc.mount(source.encode(), str(target).encode(), fstype.encode(), flags, options.encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype} on {target}: {os.strerror(err)}")


def mount_tmpfs(target: Path, size_mb: int, mode: int) -> None:
    """A size-limited filesystem: the disk limit of a task's writable space (ENOSPC when full)."""
    mount("tmpfs", target, "tmpfs", f"size={max(1, size_mb)}m,mode={mode:o}", MS_NOSUID | MS_NODEV)


def umount(target: Path) -> None:
    """Lazy: a process still holding a file open does not keep the mount (and the task's data) alive."""
    if _libc.umount2(str(target).encode(), _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"umount {target}: {os.strerror(err)}")


def release(mount_point: Path, task_id: str) -> None:
    """A task's clean-up: unmount (lazily) what is mounted there, then remove the empty mount point.

    Never raises: one mount that will not go must not stop the rest of the clean-up; it is logged."""
    if os.path.ismount(mount_point):
        try:
            umount(mount_point)
        except OSError as e:
            log.warning("task %s: %s", task_id, e)
    with contextlib.suppress(OSError):
        mount_point.rmdir()
