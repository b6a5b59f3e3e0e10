"""ansible-lint (production profile, offline) and ansible-playbook --syntax-check over ansible/."""

from __future__ import annotations

import subprocess

import pytest

from tests.ansible.harness import ANSIBLE_DIR, ansible_env, tool

PLAYBOOKS = sorted(p.name for p in ANSIBLE_DIR.glob("*.yml") if p.name not in {"requirements.yml"})


def test_every_role_has_the_standard_layout() -> None:
    roles = sorted(p.name for p in (ANSIBLE_DIR / "roles").iterdir() if p.is_dir())
    assert roles == ["cassandra", "common", "docker", "mesos", "titus_agent", "titus_capacity_controller",
                     "titus_master", "zookeeper"]
    for role in roles:
        for part in ("defaults/main.yml", "tasks/main.yml", "meta/main.yml", "handlers/main.yml"):
            assert (ANSIBLE_DIR / "roles" / role / part).is_file(), f"{role} lacks {part}"


def test_ansible_lint_production_profile_is_clean() -> None:
    result = subprocess.run(
        [tool("ansible-lint"), "--offline", "--profile", "production", "--nocolor"],
        cwd=ANSIBLE_DIR, env=ansible_env(), capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "Profile 'production' was required, and it passed" in result.stderr + result.stdout


@pytest.mark.parametrize("playbook", PLAYBOOKS)
@pytest.mark.parametrize("inventory", ["inventories/vagrant/hosts.yml", "localhost,"],
                         ids=["vagrant", "pull"])
def test_playbook_syntax(playbook: str, inventory: str) -> None:
    result = subprocess.run(
        [tool("ansible-playbook"), "--syntax-check", "-i", inventory, playbook],
        cwd=ANSIBLE_DIR, env=ansible_env(), capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"playbook: {playbook}" in result.stdout
