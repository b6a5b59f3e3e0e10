"""master/gc_policy.py, in a process of its own (it changes the collector for the whole process)."""

from __future__ import annotations

import json
import subprocess
import sys

from master.gc_policy import THRESHOLDS

PROBE = """
import gc, json
from master import gc_policy
state = [{"task": i, "history": [i]} for i in range(10_000)]  # what a master loaded before serving
gc_policy.tune()
cycle = []
cycle.append(cycle)
del cycle
print(json.dumps({"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count(),
                  "collected": gc.collect()}))
"""


def test_tune_freezes_what_is_loaded_raises_thresholds_and_still_collects_cycles() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         timeout=60)
    probe = json.loads(out.stdout)
    assert tuple(probe["threshold"]) == THRESHOLDS and THRESHOLDS[0] > 700
    assert probe["frozen"] >= 20_000  # the loaded state is out of the collector's walks
    assert probe["collected"] >= 1  # a cycle made afterwards is still found
