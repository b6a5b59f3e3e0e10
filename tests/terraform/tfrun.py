"""Runs the real terraform binary on provider-free configurations, with no network access.

No AWS provider can be installed here, so `terraform validate` of the modules cannot run. What can:
a configuration made of a module's variables.tf alone (to exercise its validation blocks), the
bootstrap module (pure templating), and small roots using only the built-in terraform provider.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

INSTALLER = Path(__file__).resolve().parents[2] / "scripts" / "install-terraform.sh"


def terraform_bin() -> str:
    """The Terraform that scripts/install-terraform.sh pins and builds, never another one found on PATH.

    TITUS_TERRAFORM names another binary on purpose (a developer's own). Missing: the test fails with the
    command that installs it; it never skips.
    """
    explicit = os.environ.get("TITUS_TERRAFORM")
    if explicit:
        return explicit
    pinned = subprocess.run(["bash", str(INSTALLER), "--print"], capture_output=True, text=True, check=True)
    path = pinned.stdout.strip()
    if not os.access(path, os.X_OK):
        pytest.fail(f"Terraform is not installed at {path}: run scripts/install-terraform.sh (setup does)")
    return path


def offline_env(tmp_path: Path) -> dict[str, str]:
    """Terraform without the registry or the checkpoint service: providers only from an empty mirror."""
    mirror = tmp_path / "empty-mirror"
    mirror.mkdir(exist_ok=True)
    config = tmp_path / "offline.tfrc"
    config.write_text(f'provider_installation {{\n  filesystem_mirror {{\n    path = "{mirror}"\n  }}\n}}\n')
    env = dict(os.environ)
    # `titus cluster` finds terraform on PATH: put the pinned one first.
    env["PATH"] = f"{Path(terraform_bin()).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update({"TF_CLI_CONFIG_FILE": str(config), "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1"})
    env.pop("TF_DATA_DIR", None)
    return env


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [terraform_bin(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
