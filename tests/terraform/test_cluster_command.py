"""`titus cluster` run as a real process against the real terraform binary (built-in provider only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.terraform.hcl import REPO
from tests.terraform.tfrun import offline_env, terraform_bin
from titus.cluster import flatten_outputs, inventory_for
from titus.cluster_tags import CLUSTER_TAG, ROLE_TAG

# Stands in for a cluster: same outputs the complete example has, built from terraform_data only.
FAKE_ROOT = """
variable "cluster_name" {
  type = string
}
resource "terraform_data" "cluster" {
  input = var.cluster_name
}
output "cluster_name" {
  value = terraform_data.cluster.output
}
output "region" {
  value = "us-east-1"
}
output "cassandra_hosts" {
  value = ["10.42.0.10", "10.42.16.10"]
}
"""

# Records how it was called, so the test sees the inventory and extra vars the command handed over.
RECORDING_PLAYBOOK = """#!{python}
import json, pathlib, sys
args = sys.argv[1:]
inventory = pathlib.Path(args[args.index("-i") + 1]).read_text()
extra = pathlib.Path(args[args.index("-e") + 1].lstrip("@")).read_text()
pathlib.Path({record!r}).write_text(json.dumps({{"args": args, "inventory": inventory, "extra": extra}}))
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    environment = offline_env(tmp_path)
    environment.update(
        {
            "PYTHONPATH": str(REPO),
            # Credentials only from these variables: no ~/.aws, no instance metadata lookups.
            "AWS_ACCESS_KEY_ID": "AKIDTITUSTEST",
            "AWS_SECRET_ACCESS_KEY": "not-a-real-secret",
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
            "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    for name in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ):
        environment.pop(name, None)
    return environment


@pytest.fixture
def root(tmp_path: Path) -> Path:
    directory = tmp_path / "root"
    directory.mkdir()
    (directory / "main.tf").write_text(FAKE_ROOT)
    return directory


@pytest.fixture
def var_file(tmp_path: Path) -> Path:
    path = tmp_path / "dev.tfvars"
    path.write_text('cluster_name = "titus-dev"\n')
    return path


def titus_cluster(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "titus.cluster", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=REPO,
    )


def test_missing_terraform_binary_fails_before_anything_runs(
    env: dict[str, str], root: Path, var_file: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    env["PATH"] = str(empty)
    env.pop("TITUS_TERRAFORM_BIN", None)
    result = titus_cluster(["plan", "--dir", str(root), "--var-file", str(var_file)], env)
    assert result.returncode != 0
    assert "terraform binary not found on PATH" in result.stderr
    assert not (root / ".terraform").exists()


def test_explicit_terraform_path_that_does_not_exist_is_named(
    env: dict[str, str], root: Path, var_file: Path
) -> None:
    result = titus_cluster(
        [
            "plan",
            "--dir",
            str(root),
            "--var-file",
            str(var_file),
            "--terraform-bin",
            "/nonexistent/terraform",
        ],
        env,
    )
    assert result.returncode != 0
    assert "'/nonexistent/terraform' does not exist" in result.stderr


def test_missing_aws_credentials_fail_before_terraform_runs(
    env: dict[str, str], root: Path, var_file: Path
) -> None:
    terraform_bin()
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    result = titus_cluster(["plan", "--dir", str(root), "--var-file", str(var_file)], env)
    assert result.returncode != 0
    assert "No AWS credentials found" in result.stderr
    assert not (root / ".terraform").exists()


def test_failed_init_is_reported_with_non_zero_exit(
    env: dict[str, str], tmp_path: Path, var_file: Path
) -> None:
    terraform_bin()
    needs_aws = tmp_path / "needs-aws"
    needs_aws.mkdir()
    (needs_aws / "main.tf").write_text(
        'terraform {\n  required_providers {\n    aws = {\n      source = "hashicorp/aws"\n    }\n  }\n}\n'
    )
    result = titus_cluster(["plan", "--dir", str(needs_aws), "--var-file", str(var_file)], env)
    assert result.returncode != 0
    assert "terraform init failed" in result.stderr


def test_plan_apply_and_destroy_drive_terraform_and_the_playbook(
    env: dict[str, str], root: Path, var_file: Path, tmp_path: Path
) -> None:
    terraform_bin()
    plan = titus_cluster(["plan", "--dir", str(root), "--var-file", str(var_file)], env)
    assert plan.returncode == 0, plan.stderr
    assert "Plan has changes." in plan.stdout

    bindir = tmp_path / "bin"
    bindir.mkdir()
    record = tmp_path / "ansible-call.json"
    fake = bindir / "ansible-playbook"
    fake.write_text(RECORDING_PLAYBOOK.format(python=sys.executable, record=str(record)))
    fake.chmod(0o755)
    env["PATH"] = f"{bindir}{os.pathsep}{env['PATH']}"
    playbook = tmp_path / "ansible" / "site.yml"
    playbook.parent.mkdir()
    playbook.write_text("- hosts: all\n  tasks: []\n")

    applied = titus_cluster(
        [
            "apply",
            "--dir",
            str(root),
            "--var-file",
            str(var_file),
            "--auto-approve",
            "--playbook",
            str(playbook),
        ],
        env,
    )
    assert applied.returncode == 0, applied.stderr
    state = json.loads((root / "terraform.tfstate").read_text())
    assert [r["type"] for r in state["resources"]] == ["terraform_data"]

    call = json.loads(record.read_text())
    assert call["args"][2] == str(playbook)
    assert json.loads(call["extra"]) == {
        "titus_cluster_name": "titus-dev",
        "titus_region": "us-east-1",
        # A list output comes out as the comma-separated string the roles' env files need (and the
        # boot-time facts carry), never as Python's repr of a list.
        "titus_cassandra_hosts": "10.42.0.10,10.42.16.10",
    }
    inventory = json.loads(call["inventory"])
    assert inventory["filters"][f"tag:{CLUSTER_TAG}"] == "titus-dev"

    again = titus_cluster(["plan", "--dir", str(root), "--var-file", str(var_file)], env)
    assert "No changes" in again.stdout, again.stdout + again.stderr

    destroyed = titus_cluster(
        ["destroy", "--dir", str(root), "--var-file", str(var_file), "--auto-approve"], env
    )
    assert destroyed.returncode == 0, destroyed.stderr
    assert json.loads((root / "terraform.tfstate").read_text())["resources"] == []


def test_apply_fails_clearly_when_the_playbook_exists_but_ansible_does_not(
    env: dict[str, str], root: Path, var_file: Path, tmp_path: Path
) -> None:
    playbook = tmp_path / "site.yml"
    playbook.write_text("- hosts: all\n")
    env["PATH"] = str(Path(terraform_bin()).parent)
    result = titus_cluster(
        [
            "apply",
            "--dir",
            str(root),
            "--var-file",
            str(var_file),
            "--auto-approve",
            "--playbook",
            str(playbook),
        ],
        env,
    )
    assert result.returncode != 0
    assert "ansible-playbook binary not found" in result.stderr
    assert not (root / "terraform.tfstate").exists()


def test_destroy_without_approval_aborts_on_no(env: dict[str, str], root: Path, var_file: Path) -> None:
    terraform_bin()
    result = subprocess.run(
        [sys.executable, "-m", "titus.cluster", "destroy", "--dir", str(root), "--var-file", str(var_file)],
        env=env,
        input="n\n",
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=REPO,
    )
    assert result.returncode != 0
    assert "Aborted" in result.stderr


def test_inventory_groups_cluster_hosts_by_role_tag() -> None:
    outputs = flatten_outputs({"cluster_name": {"value": "prod"}, "region": {"value": "eu-west-1"}})
    inventory = inventory_for(outputs)
    assert inventory["regions"] == ["eu-west-1"]
    assert inventory["filters"] == {f"tag:{CLUSTER_TAG}": "prod", "instance-state-name": "running"}
    assert inventory["keyed_groups"] == [{"key": f'tags["{ROLE_TAG}"]', "prefix": "titus_role"}]


def test_inventory_refuses_outputs_of_another_root_module() -> None:
    import click

    with pytest.raises(click.ClickException, match="lack cluster_name and region"):
        inventory_for(flatten_outputs({"something": {"value": 1}}))
