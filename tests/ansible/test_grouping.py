"""group-hosts.yml puts every host in titus_<role>, whichever way the role arrives: the bootstrap facts that
ansible-pull passes as extra vars, a titus_role inventory variable, or a titus_role_<role> group as the
aws_ec2 inventories key it on the titus:role tag. Runs the real play on local connections."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.ansible.harness import ANSIBLE_DIR, VENV, ansible_env, tool

REPORT = """
- name: Group the hosts by their Titus role
  ansible.builtin.import_playbook: {group_hosts}

- name: Report the groups
  hosts: all
  gather_facts: false
  tasks:
    - name: Write this host's titus groups
      ansible.builtin.copy:
        content: "{{{{ group_names | select('match', '^titus_[a-z]+$') | list | to_json }}}}"
        dest: "{out}/{{{{ inventory_hostname }}}}.json"
        mode: "0644"
      delegate_to: localhost
"""


def groups_after_play(tmp_path: Path, inventory: dict[str, object] | str, *extra: str) -> dict[str, Any]:
    out = tmp_path / "groups"
    out.mkdir()
    playbook = tmp_path / "report.yml"
    playbook.write_text(REPORT.format(group_hosts=ANSIBLE_DIR / "group-hosts.yml", out=out))
    if isinstance(inventory, dict):
        path = tmp_path / "inventory.json"
        path.write_text(json.dumps(inventory))
        inventory = str(path)
    result = subprocess.run(
        [tool("ansible-playbook"), "-i", inventory, "-c", "local", str(playbook), *extra,
         "-e", f"ansible_python_interpreter={VENV / 'bin' / 'python'}"],
        cwd=ANSIBLE_DIR, env=ansible_env(), capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}


def test_role_from_inventory_variable_or_tag_group(tmp_path: Path) -> None:
    inventory = {"all": {
        "hosts": {"m1": {"titus_role": "master"}},
        "children": {
            "titus_role_agent": {"hosts": {"a1": {}}},
            "titus_role_zookeeper": {"hosts": {"z1": {}}},
        },
    }}
    groups = groups_after_play(tmp_path, inventory)
    assert groups == {"m1": ["titus_master"], "a1": ["titus_agent"], "z1": ["titus_zookeeper"]}


def test_role_from_bootstrap_facts_as_ansible_pull_passes_them(tmp_path: Path) -> None:
    facts = tmp_path / "bootstrap.json"
    facts.write_text(json.dumps({"titus_role": "agent", "titus_cluster_name": "c", "titus_aws_region": "r",
                                 "titus_tier": "flex", "titus_master_url": "http://m:7001"}))
    groups = groups_after_play(tmp_path, "localhost,", "-e", f"@{facts}")
    assert groups == {"localhost": ["titus_agent"]}


@pytest.mark.parametrize("role", ["cassandra", "mesos"])
def test_each_role_name_maps_to_its_group(tmp_path: Path, role: str) -> None:
    groups = groups_after_play(tmp_path, {"all": {"hosts": {"h": {"titus_role": role}}}})
    assert groups == {"h": [f"titus_{role}"]}
