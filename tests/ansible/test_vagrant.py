"""The Vagrantfile: `vagrant validate` passes, and its machines match ansible/inventories/vagrant."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from tests.ansible.harness import ANSIBLE_DIR, REPO

VAGRANTFILE = REPO / "Vagrantfile"


def vagrant_machines() -> dict[str, str]:
    text = VAGRANTFILE.read_text()
    return dict(re.findall(r'"(\w+)"\s*=>\s*\{\s*ip:\s*"([\d.]+)"', text))


def inventory_hosts() -> dict[str, str]:
    inventory = yaml.safe_load((ANSIBLE_DIR / "inventories" / "vagrant" / "hosts.yml").read_text())
    hosts: dict[str, str] = {}
    for group in inventory["all"]["children"].values():
        for name, host_vars in group["hosts"].items():
            hosts[name] = host_vars["ansible_host"]
    return hosts


def test_vagrantfile_validates() -> None:
    vagrant = shutil.which("vagrant")
    if vagrant is None:
        pytest.fail("vagrant not installed: apt-get install vagrant (scripts/setup.sh --test does)")
    result = subprocess.run([vagrant, "validate", "--ignore-provider"], cwd=REPO, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Vagrantfile validated successfully" in result.stdout


def test_vagrant_machines_are_the_inventory_hosts() -> None:
    machines = vagrant_machines()
    assert machines == inventory_hosts()
    roles = {name.rstrip("0123456789") for name in machines}
    assert roles == {"zk", "cass", "master", "agent"}
    assert sum(name.startswith("master") for name in machines) == 2
    assert sum(name.startswith("agent") for name in machines) == 2


def test_vagrantfile_provisions_with_site_playbook_and_vagrant_inventory() -> None:
    text = VAGRANTFILE.read_text()
    playbook = re.search(r'ansible\.playbook\s*=\s*"([^"]+)"', text)
    inventory = re.search(r'ansible\.inventory_path\s*=\s*"([^"]+)"', text)
    assert playbook is not None and playbook[1] == "ansible/site.yml"
    assert inventory is not None and (REPO / inventory[1]).is_file()
    assert (REPO / playbook[1]).is_file()
