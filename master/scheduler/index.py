"""Incremental index of agents by free resources, so one pass never rescans the cluster per task.

Agents sit in a table of buckets: the row is the agent's free cpu and the column its free memory, each
in quanta (250 millicores and 256 MB, coarser only for very large agents). Both are exact lower bounds
in the units tasks ask for, so a task's own row and column bound those of any agent it fits: an agent
whose cpu or memory is spent is never looked at. (A single combined fitness score cannot promise that:
an agent with all its cpu gone but memory free sits in the middle of a one-dimensional order and every
task would check it.) Disk, network and gpus are checked per agent; they rarely bind.

Each row keeps a Python int as a bitmap of its non-empty columns, so the fullest non-empty bucket of a
row above a bound is a mask and a lowest-set-bit away. Bin packing visits buckets in order of the
weighted fitness (fuller first) and stops as soon as no later row can beat the best bucket found;
spreading visits them emptiest first. Moving an agent after a placement is two dict operations and two
bit flips.

A sorted container (sortedcontainers.SortedList) would give exact order in one dimension at
O(log n) per update; it would still need the second dimension to skip spent agents, and the bitmaps
keep the master free of a third-party dependency.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

#: Most rows (cpu quanta) and columns (memory quanta) an index has; quanta grow for agents beyond them.
MAX_ROWS: Final = 256
MAX_COLUMNS: Final = 512
CPU_QUANTUM: Final = 250  # millicores
MEMORY_QUANTUM: Final = 256  # MB


class FreeIndex:
    """Agents (by table position) bucketed by (cpu level, rest level)."""

    __slots__ = ("buckets", "columns", "n_rows", "rows", "size", "wc", "wr")

    def __init__(self, n_rows: int, n_columns: int, cpu_weight: float, memory_weight: float) -> None:
        self.n_rows = n_rows
        self.columns = n_columns
        self.buckets: list[dict[int, None] | None] = [None] * (n_rows * n_columns)
        self.rows = [0] * n_rows
        self.size = 0
        # Fitness of a bucket: weighted free fraction of the largest agent, as cheap products.
        self.wc = cpu_weight / n_rows
        self.wr = memory_weight / n_columns

    def __len__(self) -> int:
        return self.size

    def add(self, agent: int, c: int, r: int) -> None:
        cell = c * self.columns + r
        bucket = self.buckets[cell]
        if bucket is None:
            bucket = self.buckets[cell] = {}
        if not bucket:
            self.rows[c] |= 1 << r
        bucket[agent] = None
        self.size += 1

    def remove(self, agent: int, c: int, r: int) -> None:
        bucket = self.buckets[c * self.columns + r]
        assert bucket is not None
        del bucket[agent]
        if not bucket:
            self.rows[c] &= ~(1 << r)
        self.size -= 1

    def ascending(self, need_c: int, need_r: int) -> Iterator[int]:
        """Agents whose levels are at least the task's, fullest bucket first: the bin-packing order."""
        wc, wr = self.wc, self.wr
        rows = self.rows
        buckets = self.buckets
        columns = self.columns
        above = -1 << need_r  # columns need_r and up
        visited: dict[int, int] = {}
        while True:
            best_c = -1
            best_r = 0
            best_score = float("inf")
            for c in range(need_c, self.n_rows):
                if wc * c >= best_score:
                    break
                mask = rows[c] & above
                if mask and visited:
                    mask &= ~visited.get(c, 0)
                if mask:
                    r = (mask & -mask).bit_length() - 1
                    score = wc * c + wr * r
                    if score < best_score:
                        best_c, best_r, best_score = c, r, score
            if best_c < 0:
                return
            bucket = buckets[best_c * columns + best_r]
            assert bucket is not None
            yield from bucket
            visited[best_c] = visited.get(best_c, 0) | (1 << best_r)

    def descending(self) -> Iterator[int]:
        """All agents, emptiest bucket first: the spreading order."""
        wc, wr = self.wc, self.wr
        rows = self.rows
        buckets = self.buckets
        columns = self.columns
        visited: dict[int, int] = {}
        while True:
            best_c = -1
            best_r = 0
            best_score = -1.0
            for c in range(self.n_rows - 1, -1, -1):
                if wc * c + wr * columns <= best_score:
                    break
                mask = rows[c]
                if mask and visited:
                    mask &= ~visited.get(c, 0)
                if mask:
                    r = mask.bit_length() - 1
                    score = wc * c + wr * r
                    if score > best_score:
                        best_c, best_r, best_score = c, r, score
            if best_c < 0:
                return
            bucket = buckets[best_c * columns + best_r]
            assert bucket is not None
            yield from bucket
            visited[best_c] = visited.get(best_c, 0) | (1 << best_r)


class LevelScale:
    """Turns free (or demanded) resources into (row, column) for one tier's indexes.

    Both round down, so an agent that fits a task is never in a row or column below the task's.
    """

    __slots__ = ("cpu_q", "memory_q", "n_columns", "n_rows", "wc", "wm")

    def __init__(self, cpu_weight: float, memory_weight: float, max_cpu: int, max_memory: int) -> None:
        self.cpu_q = _quantum(CPU_QUANTUM, max_cpu, MAX_ROWS)
        self.memory_q = _quantum(MEMORY_QUANTUM, max_memory, MAX_COLUMNS)
        self.n_rows = max_cpu // self.cpu_q + 1
        self.n_columns = max_memory // self.memory_q + 1
        self.wc = cpu_weight
        self.wm = memory_weight

    def index(self) -> FreeIndex:
        return FreeIndex(self.n_rows, self.n_columns, self.wc, self.wm)

    def free_cell(self, cpu: int, memory: int) -> tuple[int, int]:
        c = cpu // self.cpu_q
        m = memory // self.memory_q
        return (
            0 if c < 0 else min(c, self.n_rows - 1),
            0 if m < 0 else min(m, self.n_columns - 1),
        )

    def need_cell(self, cpu: int, memory: int) -> tuple[int, int]:
        """The smallest cell that can hold an agent with `cpu` and `memory` free; (n_rows, 0) if none.

        For demands in whole quanta every agent from this cell on fits in cpu and memory; for others
        the first row or column holds some that fall short, which the per-agent check catches.
        """
        c = max(cpu // self.cpu_q, 0)
        m = max(memory // self.memory_q, 0)
        if c >= self.n_rows or m >= self.n_columns:
            return (self.n_rows, 0)
        return (c, m)


def _quantum(base: int, largest: int, most: int) -> int:
    """`base`, or the smallest multiple of it that keeps `largest` within `most` steps."""
    steps = -(-largest // (base * (most - 1)))
    return base * max(steps, 1)
