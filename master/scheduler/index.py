"""Incremental index of agents by free resources, so one pass never rescans the cluster per task.

Agents sit in a table of buckets: the row is the agent's free cpu and the column its free memory, each
in quanta (250 millicores and 256 MB, or whole multiples of those that keep an index within 256 rows
and 512 columns, e.g. 512 MB for 128 GB agents). Both round down, so a task's own row and column bound
those of any agent it fits: an agent whose cpu or memory is spent is never looked at. (A single
combined fitness score cannot promise that: an agent with all its cpu gone but memory free sits in the
middle of a one-dimensional order and every task would check it.) Disk, network and gpus are checked
per agent; they rarely bind.

Cells are grouped by diagonal, the weighted free amount `row * wc + column * wm`, with a bitmap (a
Python int) of non-empty diagonals and, per diagonal, a bitmap of its non-empty cells. Bin packing walks the
diagonals above the task's own, fullest first; on each the cells that could fit are a contiguous range
of rows, so a diagonal holding only agents short of cpu or memory costs one mask operation. Spreading
walks them emptiest first. Moving an agent after a placement is two dict operations and a few bit
flips; nothing is ever re-sorted.

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
    """Agents (by table position) bucketed by cell (cpu row, memory column), cells grouped by fitness.

    A cell's fitness is its diagonal `row * wc + column * wm` (integer weights), the weighted free
    amount: lower is fuller. `diagonals` is a bitmap of non-empty diagonals and `cells_on[d]` a bitmap,
    over rows, of the non-empty cells on diagonal d. A task's cells form a quadrant (row and column at
    least the task's); on one diagonal that quadrant is a contiguous range of rows, so skipping every
    cell of a diagonal that is too short in cpu or in memory is one mask operation.
    """

    __slots__ = ("buckets", "cells_on", "columns", "diagonals", "n_rows", "size", "wc", "wm")

    def __init__(self, n_rows: int, n_columns: int, wc: int, wm: int) -> None:
        self.n_rows = n_rows
        self.columns = n_columns
        self.wc = wc
        self.wm = wm
        self.buckets: list[dict[int, None] | None] = [None] * (n_rows * n_columns)
        self.cells_on = [0] * ((n_rows - 1) * wc + (n_columns - 1) * wm + 1)
        self.diagonals = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, agent: int, c: int, r: int) -> None:
        cell = c * self.columns + r
        bucket = self.buckets[cell]
        if bucket is None:
            bucket = self.buckets[cell] = {}
        if not bucket:
            d = c * self.wc + r * self.wm
            if not self.cells_on[d]:
                self.diagonals |= 1 << d
            self.cells_on[d] |= 1 << c
        bucket[agent] = None
        self.size += 1

    def remove(self, agent: int, c: int, r: int) -> None:
        bucket = self.buckets[c * self.columns + r]
        assert bucket is not None
        del bucket[agent]
        if not bucket:
            d = c * self.wc + r * self.wm
            self.cells_on[d] &= ~(1 << c)
            if not self.cells_on[d]:
                self.diagonals &= ~(1 << d)
        self.size -= 1

    def ascending(self, need_c: int, need_r: int) -> Iterator[int]:
        """Agents in the task's quadrant, fullest diagonal first: the bin-packing order."""
        wc, wm, columns = self.wc, self.wm, self.columns
        buckets, cells_on = self.buckets, self.cells_on
        first = need_c * wc + need_r * wm
        pending = self.diagonals >> first
        from_row = -1 << need_c
        while pending:
            low = pending & -pending
            pending ^= low
            d = first + low.bit_length() - 1
            # Rows whose cell on this diagonal has a column of at least need_r.
            last_row = (d - need_r * wm) // wc
            rows = cells_on[d] & from_row & ((2 << last_row) - 1)
            while rows:
                bit = rows & -rows
                rows ^= bit
                c = bit.bit_length() - 1
                bucket = buckets[c * columns + (d - c * wc) // wm]
                assert bucket is not None
                yield from bucket

    def descending(self) -> Iterator[int]:
        """All agents, emptiest diagonal first: the spreading order."""
        wc, wm, columns = self.wc, self.wm, self.columns
        buckets, cells_on = self.buckets, self.cells_on
        pending = self.diagonals
        while pending:
            d = pending.bit_length() - 1
            pending ^= 1 << d
            rows = cells_on[d]
            while rows:
                c = rows.bit_length() - 1
                rows ^= 1 << c
                bucket = buckets[c * columns + (d - c * wc) // wm]
                assert bucket is not None
                yield from bucket


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
        self.wc, self.wm = _integer_weights(cpu_weight / self.n_rows, memory_weight / self.n_columns)

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


def _integer_weights(cpu: float, memory: float) -> tuple[int, int]:
    """Small whole weights in the ratio of the per-cell fitness weights (diagonals need integers).

    A weight of zero still counts a little (1 against up to 4): the order only breaks ties between
    agents then, and the diagonals stay well defined.
    """
    if cpu <= 0 or memory <= 0:
        return (1, 4) if cpu <= 0 else (4, 1)
    ratio = cpu / memory
    return min(
        ((a, b) for a in range(1, 5) for b in range(1, 5)),
        key=lambda ab: (abs(ab[0] / ab[1] - ratio) / ratio, ab[0] + ab[1]),
    )


def _quantum(base: int, largest: int, most: int) -> int:
    """`base`, or the smallest multiple of it that keeps `largest` within `most` steps."""
    steps = -(-largest // (base * (most - 1)))
    return base * max(steps, 1)
