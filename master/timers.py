"""Deadlines of tasks, in heaps, so the timer pass looks only at what came due instead of every task.

Three kinds, each in its own heap so one setting orders it:

- `launched` / `start_initiated`: keyed by the time the task entered that state; due once
  `launch_timeout_ms` passed (the setting is read at the check, so changing it applies at once);
- `runtime`: a Started batch task's own limit, keyed by its deadline.

Entries are never removed when a task moves on; a popped entry is checked against the task as it is now
(same state, same timestamp) and dropped when it no longer applies (lazy deletion). A task that is written
several times in one state pushes duplicates; the first that acts changes the state, the rest drop.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from typing import Literal

from master.core import states
from master.core.entities import Task

Kind = Literal["launched", "start_initiated", "runtime"]


class TaskTimers:
    def __init__(self) -> None:
        self._heaps: dict[Kind, list[tuple[int, str]]] = {
            "launched": [],
            "start_initiated": [],
            "runtime": [],
        }

    def observe(self, task: Task, runtime_limit_ms: int | None) -> None:
        """Called with every task write (under the manager's lock): push the deadline its state implies."""
        state = task.state
        if state == states.LAUNCHED:
            heapq.heappush(self._heaps["launched"], (task.machine.status.timestamp_ms, task.id))
        elif state == states.START_INITIATED and not task.kill_reason:
            heapq.heappush(self._heaps["start_initiated"], (task.machine.status.timestamp_ms, task.id))
        elif (
            state == states.STARTED
            and runtime_limit_ms is not None
            and task.started_ms is not None
            and not task.kill_reason
        ):
            heapq.heappush(self._heaps["runtime"], (task.started_ms + runtime_limit_ms, task.id))

    def due(
        self, kind: Kind, now: int, timeout_ms: int, still_applies: Callable[[int, str], bool]
    ) -> Iterator[str]:
        """Task ids whose `kind` deadline passed: key + timeout < now (strictly, as the old scan had it).

        `still_applies(key, task_id)` says whether the entry still describes the task; stale ones drop.
        """
        heap = self._heaps[kind]
        while heap and now - heap[0][0] > timeout_ms:
            key, task_id = heapq.heappop(heap)
            if still_applies(key, task_id):
                yield task_id

    def size(self) -> int:
        return sum(len(h) for h in self._heaps.values())
