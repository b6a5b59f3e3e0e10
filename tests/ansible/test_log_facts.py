"""The bring-up's log bucket reaches masters and agents: the bootstrap facts Terraform writes (modules/master,
modules/agent_tier: titus_log_s3_*) rendered by the roles' own defaults and env templates, with the same
`--extra-vars @bootstrap.json` ansible-pull uses, then read by the code that builds the archive."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from shared.config import load_env_file
from shared.log_archive import from_settings
from tests.ansible.harness import ANSIBLE_DIR, VENV, ansible_env, tool

PLAY = """
- name: Render {role}'s env file from its defaults and the bootstrap facts
  hosts: localhost
  connection: local
  gather_facts: true
  vars_files:
    - {defaults}
  vars:
    __titus_master_api_token: api-token-of-sixteen-chars
    __titus_master_agent_token: agent-token-of-sixteen-chars
    __titus_agent_token: agent-token-of-sixteen-chars
  tasks:
    - name: Render
      ansible.builtin.template:
        src: {template}
        dest: {dest}
        mode: "0600"
"""


def render(tmp_path: Path, role: str, template: str, facts: dict[str, str]) -> dict[str, str]:
    (tmp_path / "bootstrap.json").write_text(json.dumps(facts))
    dest = tmp_path / f"{role}.env"
    play = tmp_path / f"{role}.yml"
    play.write_text(PLAY.format(role=role, defaults=ANSIBLE_DIR / "roles" / role / "defaults" / "main.yml",
                                template=ANSIBLE_DIR / "roles" / role / "templates" / template, dest=dest))
    result = subprocess.run(
        [tool("ansible-playbook"), "-i", "localhost,", str(play),
         "--extra-vars", f"@{tmp_path / 'bootstrap.json'}",
         "--extra-vars", f"ansible_python_interpreter={VENV / 'bin' / 'python'}"],
        cwd=ANSIBLE_DIR, env=ansible_env(), capture_output=True, text=True, check=False, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return load_env_file(dest)


CLUSTER_FACTS = {
    "titus_cluster_name": "prod",
    "titus_aws_region": "eu-west-1",
    "titus_log_s3_bucket": "titus-prod-logs-20261202",
    "titus_log_s3_prefix": "task-logs",
}


@pytest.mark.parametrize(("role", "template", "extra"), [
    ("titus_master", "master.env.j2", {"titus_log_retention_days": "0"}),
    ("titus_agent", "agent.env.j2", {}),
])
def test_terraforms_log_bucket_facts_configure_the_archive(tmp_path: Path, role: str, template: str,
                                                           extra: dict[str, str]) -> None:
    env = render(tmp_path, role, template, {**CLUSTER_FACTS, **extra})
    assert env["TITUS_LOG_S3_BUCKET"] == "titus-prod-logs-20261202"
    assert env["TITUS_LOG_S3_PREFIX"] == "task-logs"
    assert env["TITUS_LOG_S3_REGION"] == "eu-west-1"
    archive = from_settings(env)
    assert archive is not None
    assert (archive.bucket, archive.prefix, archive.s3.meta.region_name) == (
        "titus-prod-logs-20261202", "task-logs", "eu-west-1")
    if role == "titus_master":
        # The bucket's lifecycle is Terraform's: the master is told to leave it (and holds no right to it).
        assert env["TITUS_LOG_RETENTION_DAYS"] == "0" and archive.retention_days == 0


@pytest.mark.parametrize(("role", "template"), [("titus_master", "master.env.j2"),
                                                 ("titus_agent", "agent.env.j2")])
def test_no_bucket_no_archive(tmp_path: Path, role: str, template: str) -> None:
    """Terraform with create_log_bucket = false writes empty facts; a hand-made inventory writes none."""
    for facts in ({**CLUSTER_FACTS, "titus_log_s3_bucket": "", "titus_log_s3_prefix": ""},
                  {"titus_aws_region": "eu-west-1"}):
        env = render(tmp_path, role, template, facts)
        assert not any(k.startswith("TITUS_LOG_S3") for k in env), env
        assert from_settings(env) is None
