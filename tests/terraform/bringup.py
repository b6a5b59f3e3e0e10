"""One apply of examples/complete against moto_server, shared by every bring-up and IAM test.

The example is copied with the modules into a scratch tree and given a `moto_override.tf` (Terraform's
override files merge into the example's own provider block) that points every AWS endpoint at the local
moto_server; nothing else of the example changes. Providers come from a filesystem mirror found on this
machine (titus/cluster_providers.py) or, where there is none, from the public registry.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.terraform.tfrun import terraform_bin
from titus.cluster_providers import find_mirrors, write_cli_config

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "terraform"
REGION = "us-east-1"
CLUSTER = "titus-moto"
#: An image moto knows; the example's AMI lookup (Debian's owner id) has nothing to find in moto.
AMI = "ami-12c6146b"
ENDPOINT_SERVICES = ("autoscaling", "ec2", "elbv2", "iam", "kms", "s3", "ssm", "sts", "cloudwatchlogs")
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MotoServer:
    """moto_server (with tests/terraform/moto_server.py's fixes) on a free local port, over TLS.

    TLS because AWS is only ever spoken to over TLS, and the cluster's buckets refuse anything else (a
    Deny on aws:SecureTransport = false): the certificate is a throwaway CA's (titus/dev_tls.py) for
    127.0.0.1, which Terraform and boto3 trust through AWS_CA_BUNDLE or `verify`.
    """

    def __init__(self, log_path: Path) -> None:
        from titus.dev_tls import ensure_dev_certificates

        tls = ensure_dev_certificates(log_path.parent / f"{log_path.stem}-tls")
        self.ca_file = str(tls.ca_file)
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self._log = log_path.open("wb")
        env = {**os.environ, **CREDENTIALS, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.terraform.moto_server", "-H", "127.0.0.1", "-p", str(self.port),
             "--ssl-cert", str(tls.cert_file), "--ssl-key", str(tls.key_file)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto_server did not start; see {log_path}") from None
                time.sleep(0.1)

    def set_auth(self, enforced: bool) -> None:
        """moto's IAM enforcement: on, every request is checked against its caller's policies."""
        import requests

        body = "0" if enforced else "inf"
        requests.post(
            f"{self.url}/moto-api/reset-auth", data=body, timeout=10, verify=self.ca_file
        ).raise_for_status()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def provider_override(url: str) -> str:
    endpoints = "\n".join(f'    {s} = "{url}"' for s in ENDPOINT_SERVICES)
    return f"""# Written by tests/terraform/bringup.py: the example's provider, pointed at moto_server.
provider "aws" {{
  access_key                  = "testing"
  secret_key                  = "testing"
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  # moto_server answers on one host: bucket names go in the path, not in a virtual host name.
  s3_use_path_style = true
  endpoints {{
{endpoints}
  }}
}}
"""


@dataclass
class Terraform:
    """The terraform binary in one root module, with this machine's provider mirror when it has one."""

    root: Path
    env: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)

    def run(self, step: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        result = subprocess.run(
            [terraform_bin(), *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        self.timings[step] = round(time.monotonic() - started, 1)
        return result

    def json(self, *args: str) -> Any:
        result = self.run("json", *args)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


def terraform_for(root: Path, scratch: Path, moto: MotoServer) -> Terraform:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    env.update(CREDENTIALS)
    env.update({
        "CHECKPOINT_DISABLE": "1",
        "TF_IN_AUTOMATION": "1",
        "AWS_ENDPOINT_URL": moto.url,
        "AWS_CA_BUNDLE": moto.ca_file,
    })
    mirrors = find_mirrors()
    if not mirrors:
        # The suite never reaches outside this machine, so Terraform may not fall back to HashiCorp's
        # registry here: without a mirror these tests fail, saying how to get one (never a skip).
        raise RuntimeError(
            "no filesystem mirror of hashicorp/aws on this machine: run "
            "scripts/install-terraform-providers.sh (TITUS_TF_PROVIDER_SOURCE=registry fills one from "
            "HashiCorp's registry, =build from the Go module proxy)"
        )
    env["TF_CLI_CONFIG_FILE"] = str(write_cli_config(scratch / "providers.tfrc", mirrors, False))
    return Terraform(root, env)


def example_copy(scratch: Path, moto_url: str, variables: dict[str, Any]) -> Path:
    """The terraform/ tree copied (modules are referenced by relative path), the override added."""
    tree = scratch / "terraform"
    shutil.copytree(TERRAFORM, tree, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*"))
    root = tree / "examples" / "complete"
    (root / "moto_override.tf").write_text(provider_override(moto_url))
    (root / "moto.auto.tfvars.json").write_text(json.dumps(variables))
    return root


EXAMPLE_VARS: dict[str, Any] = {
    "cluster_name": CLUSTER,
    "region": REGION,
    "ami_id": AMI,
    "ansible_repo_url": "https://git.example.com/titus.git",
    "ansible_version": "v1.0.0",
    # The IAM tests put task logs into the bucket; destroy must still end with nothing left.
    "log_bucket_force_destroy": True,
}
