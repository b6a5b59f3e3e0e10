"""Runs the real terraform binary on provider-free configurations, with no network access.

No AWS provider can be installed here, so `terraform validate` of the modules cannot run. What can:
a configuration made of a module's variables.tf alone (to exercise its validation blocks), the
bootstrap module (pure templating), and small roots using only the built-in terraform provider.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def terraform_bin() -> str:
    found = shutil.which("terraform")
    if found is None:
        pytest.skip("terraform binary not on PATH (the machine image ships /usr/local/bin/terraform)")
    return found


def offline_env(tmp_path: Path) -> dict[str, str]:
    """Terraform without the registry or the checkpoint service: providers only from an empty mirror."""
    mirror = tmp_path / "empty-mirror"
    mirror.mkdir(exist_ok=True)
    config = tmp_path / "offline.tfrc"
    config.write_text(f'provider_installation {{\n  filesystem_mirror {{\n    path = "{mirror}"\n  }}\n}}\n')
    env = dict(os.environ)
    env.update({"TF_CLI_CONFIG_FILE": str(config), "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1"})
    env.pop("TF_DATA_DIR", None)
    return env


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [terraform_bin(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
