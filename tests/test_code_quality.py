"""The code base stays ruff-clean and mypy-clean (strict), as the style guide asks; CI enforces it here."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["master", "agent", "titus", "capacity", "bench", "shared"]


@pytest.mark.parametrize("tool", [
    [sys.executable, "-m", "ruff", "check", *PACKAGES, "tests"],
    [sys.executable, "-m", "mypy", *PACKAGES],
], ids=["ruff", "mypy"])
def test_clean(tool: list[str]) -> None:
    result = subprocess.run(tool, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
