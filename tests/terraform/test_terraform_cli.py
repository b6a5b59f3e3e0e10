"""The real terraform binary on the package: formatting, input validation, rendered user data."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.terraform.hcl import EXAMPLE, MODULES, TERRAFORM
from tests.terraform.tfrun import offline_env, run


def test_terraform_fmt_check_passes(tmp_path: Path) -> None:
    result = run(["fmt", "-check", "-recursive", "-diff", str(TERRAFORM)], TERRAFORM, offline_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


def plan_variables(tmp_path: Path, source: Path, values: dict[str, object]) -> tuple[int, str]:
    """Plan a root made of `source`'s variables.tf alone; Terraform then evaluates every validation."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(source / "variables.tf", root / "variables.tf")
    (root / "values.tfvars.json").write_text(json.dumps(values))
    env = offline_env(tmp_path)
    init = run(["init", "-input=false", "-no-color"], root, env)
    assert init.returncode == 0, init.stderr
    result = run(["plan", "-input=false", "-no-color", "-var-file=values.tfvars.json"], root, env)
    return result.returncode, re.sub(r"\s+", " ", result.stdout + result.stderr)


EXAMPLE_VALID = {"cluster_name": "titus-dev", "ansible_repo_url": "https://git.example.com/titus.git"}
AGENT_VALID = {
    "cluster_name": "titus-dev",
    "tier": "critical",
    "vpc_id": "vpc-0123456789abcdef0",
    "vpc_cidr_block": "10.42.0.0/16",
    "subnet_ids": ["subnet-0123456789abcdef0"],
    "ami_id": "ami-0123456789abcdef0",
    "kms_key_arn": "arn:aws:kms:us-east-1:123456789012:key/abc",
    "master_url": "http://internal-lb:7001",
    "agent_token_parameter_name": "/titus/titus-dev/agent-token",
    "ansible_repo_url": "https://git.example.com/titus.git",
    "ansible_version": "v1",
}


@pytest.mark.parametrize(
    ("source", "values"),
    [(EXAMPLE, EXAMPLE_VALID), (MODULES / "agent_tier", AGENT_VALID)],
    ids=["example", "agent_tier"],
)
def test_valid_inputs_plan_cleanly(tmp_path: Path, source: Path, values: dict[str, object]) -> None:
    code, output = plan_variables(tmp_path, source, values)
    assert code == 0, output


@pytest.mark.parametrize(
    ("source", "base", "change", "message"),
    [
        (EXAMPLE, EXAMPLE_VALID, {"cluster_name": "Titus_Prod"}, "cluster_name must be 3-28 characters"),
        (EXAMPLE, EXAMPLE_VALID, {"bastion_cidr_blocks": ["0.0.0.0/0"]}, "0.0.0.0/0 is not allowed"),
        (EXAMPLE, EXAMPLE_VALID, {"api_ingress_cidr_blocks": ["10.0.0.300/8"]}, "valid IPv4 CIDRs"),
        (
            EXAMPLE,
            EXAMPLE_VALID,
            {"api_internet_facing": True},
            "An internet-facing API needs api_certificate_arn",
        ),
        (EXAMPLE, EXAMPLE_VALID, {"ansible_repo_url": "git://example.com/x"}, "must be an https:// git URL"),
        (EXAMPLE, EXAMPLE_VALID, {"master_count": 2}, "master_count must be 1, 3 or 5"),
        (
            EXAMPLE,
            EXAMPLE_VALID,
            {
                "agent_tiers": {
                    "critical": {
                        "instance_types": ["m5.xlarge"],
                        "min_size": 1,
                        "max_size": 3,
                        "desired_capacity": 1,
                        "on_demand_percentage_above_base_capacity": 100,
                        "docker_volume_size": 100,
                    }
                }
            },
            'exactly the keys "critical" and "flex"',
        ),
        (MODULES / "agent_tier", AGENT_VALID, {"tier": "gold"}, 'tier must be "critical" or "flex"'),
        (
            MODULES / "agent_tier",
            AGENT_VALID,
            {"min_size": 5, "max_size": 2, "desired_capacity": 3},
            "at least min_size",
        ),
        (MODULES / "agent_tier", AGENT_VALID, {"instance_types": ["huge"]}, "instance_types must list"),
        (
            MODULES / "agent_tier",
            AGENT_VALID,
            {"ssh_ingress_cidr_blocks": ["0.0.0.0/0"]},
            "0.0.0.0/0 is not allowed",
        ),
    ],
    ids=[
        "bad-cluster-name",
        "bastion-anywhere",
        "bad-api-cidr",
        "public-api-without-tls",
        "non-https-repo",
        "even-masters",
        "missing-flex-tier",
        "unknown-tier",
        "max-below-min",
        "bad-instance-type",
        "agent-ssh-anywhere",
    ],
)
def test_invalid_inputs_are_refused_with_a_clear_message(
    tmp_path: Path, source: Path, base: dict[str, object], change: dict[str, object], message: str
) -> None:
    code, output = plan_variables(tmp_path, source, {**base, **change})
    assert code != 0
    assert message in output, output


def test_bootstrap_renders_facts_and_ansible_pull_without_secrets(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "main.tf").write_text(
        f"""
module "bootstrap" {{
  source           = "{MODULES / "bootstrap"}"
  cluster_name     = "titus-dev"
  role             = "agent"
  region           = "us-east-1"
  ansible_repo_url = "https://git.example.com/titus.git"
  ansible_version  = "v1.2.3"
  facts = {{
    titus_master_url            = "http://lb:7001"
    titus_agent_token_parameter = "/titus/titus-dev/agent-token"
  }}
}}
output "user_data" {{
  value = module.bootstrap.user_data
}}
"""
    )
    env = offline_env(tmp_path)
    assert run(["init", "-input=false", "-no-color"], root, env).returncode == 0
    applied = run(["apply", "-input=false", "-no-color", "-auto-approve"], root, env)
    assert applied.returncode == 0, applied.stderr
    out = run(["output", "-raw", "user_data"], root, env)
    script = out.stdout
    facts = json.loads(script.split("<<'TITUS_FACTS'\n", 1)[1].split("\nTITUS_FACTS", 1)[0])
    assert facts == {
        "titus_master_url": "http://lb:7001",
        "titus_agent_token_parameter": "/titus/titus-dev/agent-token",
        "titus_cluster_name": "titus-dev",
        "titus_role": "agent",
        "titus_aws_region": "us-east-1",
    }
    assert "--url 'https://git.example.com/titus.git'" in script
    assert "--checkout 'v1.2.3'" in script
    assert "ansible/site.yml" in script
    # ansible-core alone has none of the collections the roles use: the pinned ones come first.
    galaxy = "ansible-galaxy collection install -p /opt/titus-bootstrap/collections"
    assert f"{galaxy} 'amazon.aws:==8.2.1' 'ansible.posix:==1.6.2' 'community.general:==9.5.2'" in script
    assert script.index(galaxy) < script.index("ansible-pull")


def test_bootstrap_refuses_a_token_in_the_facts(tmp_path: Path) -> None:
    code, output = plan_variables(
        tmp_path,
        MODULES / "bootstrap",
        {
            "cluster_name": "titus-dev",
            "role": "master",
            "region": "us-east-1",
            "ansible_repo_url": "https://git.example.com/titus.git",
            "ansible_version": "v1",
            "facts": {"titus_api_token": "hunter2"},
        },
    )
    assert code != 0
    assert "must not hold a token" in output
