"""agent/task_logs.py on real files: ranges, negative offsets, rotation by punching holes (ext4 and tmpfs
support it; the test machine's /tmp is one of them), and refusal to follow a symlink."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from agent import task_logs


def test_ranges_and_offsets_from_the_end(tmp_path: Path) -> None:
    path = tmp_path / "stdout"
    path.write_bytes(b"0123456789")
    chunk = task_logs.read_range(path, 2, 3)
    assert chunk == task_logs.LogChunk(b"234", 2, 10, 0)
    assert task_logs.read_range(path, -4, 100) == task_logs.LogChunk(b"6789", 6, 10, 0)
    assert task_logs.read_range(path, 50, 10) == task_logs.LogChunk(b"", 10, 10, 0)
    assert task_logs.read_range(path, -50, 2) == task_logs.LogChunk(b"01", 0, 10, 0)
    assert task_logs.read_range(tmp_path / "stderr", 0, 10) is None


def test_rotation_punches_the_oldest_bytes_and_readers_skip_them(tmp_path: Path) -> None:
    path = tmp_path / "stdout"
    data = os.urandom(1_000_000)
    with open(path, "ab") as writer:  # an O_APPEND writer, as a task's supervisor opens it
        writer.write(data)
        writer.flush()
        assert task_logs.rotate(path, 1_200_000) is False  # within the bound
        assert task_logs.rotate(path, 200_000) is True
        start = task_logs.kept_start(path)
        assert start % 4096 == 0 and 1_000_000 - 100_000 - 4096 < start <= 1_000_000 - 100_000
        st = path.stat()
        assert st.st_size == 1_000_000 and st.st_blocks * 512 <= 120_000
        writer.write(b"more")  # the writer carries on at the end, undisturbed
        writer.flush()
    chunk = task_logs.read_range(path, 0, 2_000_000)
    assert chunk is not None
    assert chunk.offset == start and chunk.start == start and chunk.data == data[start:] + b"more"
    assert task_logs.rotate(path, 200_000) is False  # nothing new past the bound


def test_wait_for_growth_returns_when_written_or_done(tmp_path: Path) -> None:
    path = tmp_path / "stdout"
    path.write_bytes(b"abc")
    began = time.monotonic()
    task_logs.wait_for_growth(path, 1, 5, lambda: False)  # already longer
    timer = threading.Timer(0.3, lambda: path.write_bytes(b"abcdef"))
    timer.start()
    task_logs.wait_for_growth(path, 3, 5, lambda: False)
    assert 0.25 < time.monotonic() - began < 3
    began = time.monotonic()
    task_logs.wait_for_growth(path, 100, 5, lambda: True)  # the task ended: no waiting
    assert time.monotonic() - began < 0.5


def test_a_symlink_in_place_of_a_stream_is_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("host secret")
    (tmp_path / "task").mkdir()
    link = tmp_path / "task" / "stdout"
    link.symlink_to(secret)
    assert task_logs.read_range(link, 0, 100) is None
    assert task_logs.rotate(link, 1) is False
    assert secret.read_text() == "host secret"
