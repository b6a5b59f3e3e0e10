"""Small helpers every benchmark shares: one percentile rule, and waiting for a task to end."""

from __future__ import annotations

import time

from agent.runtime.base import Runtime


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank from below; NaN for no values, so an empty run never passes."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def wait_ended(rt: Runtime, task_id: str, timeout_s: float) -> None:
    """Poll the runtime until it reports the task ended; a task that never ends is an error, not a figure."""
    deadline = time.monotonic() + timeout_s
    while rt.poll(task_id) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"task {task_id} did not end")
        time.sleep(0.002)
