"""What every benchmark result records beside its figures: the commit, the machine and how loaded it was."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def run_facts(**settings: Any) -> dict[str, Any]:
    """`settings` are the durability and load settings of the run (e.g. sqlite_synchronous="FULL")."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.splitlines()
        dirty = any(not line[3:].startswith("bench/results/") for line in changed)  # results are outputs
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "unknown", False
    return {
        "commit": commit + ("+dirty" if dirty else ""),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "platform": platform.platform(),
            "python": sys.version.split()[0],
        },
        "settings": settings,
    }


def load_now() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]
