"""The import-linter contracts in pyproject.toml hold (pure core, adapters apart), as kopf enforces its own.

The contracts: the core (master/core, scheduler, state, snapshot, timers, events, reconcile, the capacity
planner) imports no API, store, adapter or I/O library; adapters do not import each other; only adapter
modules import third-party I/O libraries. A new edge that breaks one fails here with the import chain.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken." in result.stdout, result.stdout[-3000:]
