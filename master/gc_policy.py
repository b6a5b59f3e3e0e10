"""Garbage collector settings for a process that holds a master's state (`titus master`, `titus dev`).

Why: CPython's defaults (700, 10, 10) run a young collection every 700 net allocations and a full one
whenever enough has survived. A master holds hundreds of thousands of long-lived objects (jobs, tasks,
their histories), and every full collection walks all of them: in bench.observe's burst phase (20,000
tasks created and killed in 10 s) nine full collections stopped the whole process for up to 151 ms each,
and they were its p99 delivery latency. Nearly all of the master's garbage is freed by reference
counting the moment it is dropped; the collector is only there for reference cycles, which are rare here.
So what is alive when the master starts serving is frozen out of the collector's walks (gc.freeze), and
the thresholds are raised: young collections every 50,000 allocations, full ones a hundred times rarer
than that. Cycles are still collected, only later.

Only processes that run a master call `tune()`: MasterServer itself does not, since tests run masters
inside their own process.
"""

from __future__ import annotations

import gc

#: (young, middle, old) generation thresholds; see the module doc for why not CPython's (700, 10, 10).
THRESHOLDS = (50_000, 20, 100)


def tune() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
