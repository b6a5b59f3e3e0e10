"""`titus cluster plan|apply|destroy`: bring a whole cluster up or down with one command.

Terraform (driven through python-terraform, as the design names it) builds the infrastructure from
terraform/examples/complete or any root module given with --dir; after an apply, the Ansible site
playbook runs against the new hosts with Terraform's outputs as extra vars, when that playbook exists.
Instances also configure themselves at boot (ansible-pull), so the playbook run is the operator's
"converge now" step rather than a requirement.

The checks for the terraform binary and for AWS credentials happen before Terraform runs, because
Terraform's own failures for both come late (after init) and say little about what to do.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from titus.cluster_tags import CLUSTER_TAG, ROLE_TAG

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ROOT_MODULE = REPO_ROOT / "terraform" / "examples" / "complete"
DEFAULT_PLAYBOOK = REPO_ROOT / "ansible" / "site.yml"

#: Terraform exits 2 from `plan -detailed-exitcode` when the plan has changes: that is success.
PLAN_CHANGES_EXIT = 2


class ClusterError(click.ClickException):
    """A failure the user can act on; click prints it and exits non-zero."""


def find_executable(name: str, explicit: str | None, path: str | None, hint: str) -> str:
    """Resolve a tool before anything runs, so a missing one fails first with the way to fix it."""
    if explicit:
        if os.path.isfile(explicit) and os.access(explicit, os.X_OK):
            return explicit
        raise ClusterError(f"{name} binary {explicit!r} does not exist or is not executable. {hint}")
    found = shutil.which(name, path=path)
    if found is None:
        raise ClusterError(f"{name} binary not found on PATH. {hint}")
    return found


def describe_aws_credentials() -> str:
    """Return where botocore finds credentials (the same chain the AWS provider follows), or fail.

    Only the source is reported, never a key.
    """
    try:
        import botocore.session
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ClusterError(
            "botocore is needed to check AWS credentials: pip install 'titus-py[aws]'"
        ) from exc
    credentials = botocore.session.get_session().get_credentials()
    if credentials is None:
        raise ClusterError(
            "No AWS credentials found. Set AWS_PROFILE (see `aws configure sso` / `aws configure`), or "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run on an instance with an IAM role."
        )
    return str(getattr(credentials, "method", "unknown"))


def extra_var_value(value: Any) -> Any:
    """A Terraform output as the roles expect it: a list of scalars is one comma-separated string.

    Extra vars outrank the facts a host got at boot, so they must have the facts' shape: Terraform
    writes `titus_cassandra_hosts = join(",", hosts)` into bootstrap.json, and an env-file template
    given a list would render Python's repr (`['10.42.0.10', ...]`). Maps stay maps.
    """
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return ",".join(str(v) for v in value)
    return value


def flatten_outputs(outputs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Turn `terraform output -json` into Ansible extra vars named like the roles' public variables."""
    return {f"titus_{name}": extra_var_value(entry.get("value")) for name, entry in outputs.items()}


def inventory_for(outputs: Mapping[str, Any]) -> dict[str, Any]:
    """An aws_ec2 dynamic inventory of the cluster's running instances, grouped by their role tag.

    The instances live in autoscaling groups, so Terraform cannot know their addresses; the tags it
    sets can find them. Groups come out as titus_role_master, titus_role_agent, titus_role_zookeeper ...
    """
    cluster_name = outputs.get("titus_cluster_name")
    region = outputs.get("titus_region")
    if not cluster_name or not region:
        raise ClusterError("Terraform outputs lack cluster_name and region; is --dir the Titus root module?")
    return {
        "plugin": "amazon.aws.aws_ec2",
        "regions": [region],
        "filters": {f"tag:{CLUSTER_TAG}": cluster_name, "instance-state-name": "running"},
        "keyed_groups": [{"key": f'tags["{ROLE_TAG}"]', "prefix": "titus_role"}],
        "hostnames": ["private-ip-address"],
        "compose": {"ansible_host": "private_ip_address"},
    }


def ansible_command(ansible_bin: str, playbook: Path, inventory: Path, extra_vars: Path) -> list[str]:
    """The site playbook run: extra vars from a file so lists and maps keep their types."""
    return [ansible_bin, "-i", str(inventory), str(playbook), "-e", f"@{extra_vars}"]


class ClusterRunner:
    """Runs one bring-up action; holds the resolved tools so each step reads as the user would do it."""

    def __init__(self, root_module: Path, var_file: Path, terraform_bin: str) -> None:
        from python_terraform import Terraform

        self.root_module = root_module
        self.var_file = var_file
        self.tf = Terraform(working_dir=str(root_module), terraform_bin_path=terraform_bin)

    def _run(self, step: str, code: int, ok: Sequence[int] = (0,)) -> int:
        if code not in ok:
            raise ClusterError(
                f"terraform {step} failed (exit {code}) in {self.root_module}; see its output above."
            )
        return code

    def init(self) -> None:
        code, _, _ = self.tf.init(capture_output=False)
        self._run("init", code)

    def plan(self) -> bool:
        """Return whether the plan has changes."""
        code, _, _ = self.tf.plan(var_file=str(self.var_file), capture_output=False)
        return self._run("plan", code, ok=(0, PLAN_CHANGES_EXIT)) == PLAN_CHANGES_EXIT

    def apply(self) -> None:
        code, _, _ = self.tf.apply(var_file=str(self.var_file), skip_plan=True, capture_output=False)
        self._run("apply", code)

    def destroy(self) -> None:
        # -force is gone since Terraform 0.15; -auto-approve replaces it (we asked the user already).
        from python_terraform import IsFlagged, IsNotFlagged

        code, _, _ = self.tf.destroy(
            var_file=str(self.var_file), force=IsNotFlagged, auto_approve=IsFlagged, capture_output=False
        )
        self._run("destroy", code)

    def outputs(self) -> dict[str, Any]:
        raw = self.tf.output()
        if raw is None:
            raise ClusterError(f"terraform output failed in {self.root_module}")
        return flatten_outputs(raw)


def run_playbook(ansible_bin: str, playbook: Path, outputs: Mapping[str, Any]) -> None:
    with tempfile.TemporaryDirectory(prefix="titus-cluster-") as tmp:
        # The aws_ec2 plugin only accepts inventory files whose names end in aws_ec2.yml.
        inventory = Path(tmp) / "titus.aws_ec2.yml"
        inventory.write_text(json.dumps(inventory_for(outputs), indent=2))
        extra_vars = Path(tmp) / "terraform-outputs.json"
        extra_vars.write_text(json.dumps(dict(outputs), indent=2))
        command = ansible_command(ansible_bin, playbook, inventory, extra_vars)
        click.echo(f"Running {' '.join(command)}")
        code = subprocess.run(command, cwd=playbook.parent.parent, check=False).returncode
    if code != 0:
        raise ClusterError(f"ansible-playbook {playbook} failed (exit {code}); see its output above.")


def _common_options(func: Any) -> Any:
    options = [
        click.option(
            "--var-file",
            required=True,
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="Terraform variables file (start from terraform.tfvars.example in the root module).",
        ),
        click.option(
            "--dir",
            "root_module",
            default=DEFAULT_ROOT_MODULE,
            show_default=True,
            type=click.Path(exists=True, file_okay=False, path_type=Path),
            help="Terraform root module to run.",
        ),
        click.option(
            "--terraform-bin",
            default=None,
            envvar="TITUS_TERRAFORM_BIN",
            help="Path of the terraform binary (default: the one on PATH).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _prepare(var_file: Path, root_module: Path, terraform_bin: str | None) -> ClusterRunner:
    binary = find_executable(
        "terraform",
        terraform_bin,
        None,
        "Install Terraform >= 1.9 (developer.hashicorp.com/terraform/install) or pass --terraform-bin.",
    )
    source = describe_aws_credentials()
    click.echo(f"Using {binary}; AWS credentials from {source}")
    # Providers from a filesystem mirror on this machine when there is one (registry otherwise).
    from titus.cluster_providers import terraform_env

    provider_env = terraform_env(Path.home() / ".titus")
    if provider_env:
        os.environ.update(provider_env)
        click.echo(f"Terraform providers from the mirror in {provider_env['TF_CLI_CONFIG_FILE']}")
    runner = ClusterRunner(root_module.resolve(), var_file.resolve(), binary)
    runner.init()
    return runner


@click.group(name="cluster")
def cluster() -> None:
    """Create, change or tear down a Titus cluster on AWS with Terraform (and Ansible)."""


@cluster.command()
@_common_options
def plan(var_file: Path, root_module: Path, terraform_bin: str | None) -> None:
    """Show what apply would change."""
    runner = _prepare(var_file, root_module, terraform_bin)
    changes = runner.plan()
    click.echo("Plan has changes." if changes else "No changes: the cluster matches the configuration.")


@cluster.command()
@_common_options
@click.option("--auto-approve", is_flag=True, help="Apply without asking.")
@click.option(
    "--playbook",
    default=DEFAULT_PLAYBOOK,
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Ansible site playbook run after the apply when it exists.",
)
@click.option(
    "--skip-ansible", is_flag=True, help="Do not run the playbook (instances still self-configure)."
)
def apply(
    var_file: Path,
    root_module: Path,
    terraform_bin: str | None,
    auto_approve: bool,
    playbook: Path,
    skip_ansible: bool,
) -> None:
    """Create or update the cluster, then converge its hosts with the site playbook."""
    ansible_bin = None
    if not skip_ansible and playbook.exists():
        ansible_bin = find_executable(
            "ansible-playbook",
            None,
            None,
            "Install Ansible (pip install ansible-core) or pass --skip-ansible.",
        )
    runner = _prepare(var_file, root_module, terraform_bin)
    if not auto_approve:
        click.confirm(f"Apply {root_module} with {var_file}?", abort=True)
    runner.apply()
    outputs = runner.outputs()
    click.echo(json.dumps(outputs, indent=2, sort_keys=True))
    if ansible_bin is not None:
        run_playbook(ansible_bin, playbook.resolve(), outputs)
    elif not skip_ansible:
        click.echo(f"{playbook} not found: skipping Ansible (the instances run ansible-pull at boot).")


@cluster.command()
@_common_options
@click.option("--auto-approve", is_flag=True, help="Destroy without asking.")
def destroy(var_file: Path, root_module: Path, terraform_bin: str | None, auto_approve: bool) -> None:
    """Tear the whole cluster down."""
    runner = _prepare(var_file, root_module, terraform_bin)
    if not auto_approve:
        click.confirm(f"Destroy every resource of {root_module}?", abort=True)
    runner.destroy()
    click.echo("Cluster destroyed.")


if __name__ == "__main__":
    cluster()
