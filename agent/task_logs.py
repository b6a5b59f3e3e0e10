"""A task's stdout and stderr files on the agent: byte-range reads, waiting for growth (follow), and rotation
with a size bound per task.

Tasks write their output themselves (O_APPEND file descriptors their supervisor opened), and they outlive
agent restarts, so the agent cannot sit in the pipe. Rotation therefore happens in place: once a stream holds
more than its bound on disk, the agent punches a hole over its oldest bytes (fallocate PUNCH_HOLE with
KEEP_SIZE). The writers are not disturbed, offsets never change meaning (the file's length is the stream's
length, for ever), and the disk use stays bounded; the first offset still kept is recorded beside the file
(`<stream>.start`) so readers skip the hole instead of reading zeros. ext4, xfs, btrfs and tmpfs support
it; on a file system that does not, the bound is not enforced and the agent says so once.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger("titus.agent")

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_BLOCK = 4096
_unsupported_warned: set[str] = set()


class LogArchiveWriter(Protocol):
    """Where a finished task's logs go so they outlive the agent (shared/log_archive.py: S3)."""

    def put(self, task_id: str, stream: str, data: bytes, start: int) -> None: ...


@dataclass(frozen=True)
class LogChunk:
    data: bytes
    offset: int  # the stream offset of data[0]
    size: int  # the stream's length now
    start: int  # the first offset still kept (bytes before it were rotated away)


def _start_file(path: Path) -> Path:
    return path.with_name(path.name + ".start")


def kept_start(path: Path) -> int:
    """The first offset of the stream still on disk (0 until the first rotation)."""
    try:
        return max(0, int(_start_file(path).read_text().strip() or 0))
    except (OSError, ValueError):
        return 0


def read_range(path: Path, offset: int, limit: int) -> LogChunk | None:
    """At most `limit` bytes from `offset` (negative: that far from the end), never from the rotated-away
    part: an offset before it starts at the first byte kept. None if the stream file does not exist."""
    try:
        # O_NOFOLLOW: the agent (root) never reads a host file a symlink in a task's directory points at.
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            start = min(kept_start(path), size)
            begin = size + offset if offset < 0 else offset
            begin = min(max(begin, start), size)
            f.seek(begin)
            data = f.read(max(0, min(limit, size - begin)))  # never a buffer of `limit` for a huge limit
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return None  # no such stream, or a symlink where the stream should be
        raise
    return LogChunk(data, begin, max(size, begin + len(data)), start)


def wait_for_growth(path: Path, offset: int, timeout_s: float, done: Callable[[], bool],
                    interval_s: float = 0.05) -> None:
    """Return once the stream is longer than `offset` (negative offsets never wait), `done()` says the task
    ended, or `timeout_s` passed. A stat every `interval_s`: cheap, and well inside the follow latency
    goal."""
    if offset < 0:
        return
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if path.stat().st_size > offset:
                return
        except FileNotFoundError:
            pass
        if done() or time.monotonic() >= deadline:
            return
        time.sleep(interval_s)


def _punch(fd: int, offset: int, length: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    if libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def rotate(path: Path, max_bytes: int) -> bool:
    """Keep the stream's disk use within `max_bytes`: once it holds more, drop its oldest bytes so that about
    half the bound is kept (block-aligned). Returns whether it dropped anything."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    start = kept_start(path)
    if st.st_size - start <= max_bytes:
        return False
    keep = max(max_bytes // 2, _BLOCK)
    new_start = (st.st_size - keep) // _BLOCK * _BLOCK
    if new_start <= start:
        return False
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            _punch(fd, 0, new_start)
        finally:
            os.close(fd)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOSYS) and str(path.parent) not in _unsupported_warned:
            _unsupported_warned.add(str(path.parent))
            log.warning("cannot bound the logs in %s (no hole punching there: %s)", path.parent, exc)
        elif exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.ENOENT):
            log.warning("rotating %s failed: %s", path, exc)
        return False
    tmp = path.with_name(path.name + ".start.tmp")
    tmp.write_text(str(new_start))
    os.replace(tmp, _start_file(path))
    return True
