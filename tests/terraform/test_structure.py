"""Structural rules of the Terraform package, read from the HCL itself with python-hcl2."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.terraform.hcl import (
    EXAMPLE,
    MODULES,
    REPO,
    TERRAFORM,
    all_resources,
    first,
    load_dir,
    locals_of,
    modules_of,
    resources,
    root_dirs,
    variables,
)
from titus import cluster_tags

REQUIRED_MODULES = {"network", "agent_tier", "master", "zookeeper", "cassandra", "mesos"}

# AWS resource types that take no tags argument; every other resource must carry the cluster tags.
NOT_TAGGABLE = {
    "aws_autoscaling_group",  # tagged with tag blocks, checked separately
    "aws_default_security_group_rule",
    "aws_iam_role_policy",
    "aws_iam_role_policy_attachment",
    "aws_kms_alias",
    "aws_route",
    "aws_route_table_association",
    # A bucket's settings are sub-resources of the bucket (tagged itself): S3 tags none of them.
    "aws_s3_bucket_lifecycle_configuration",
    "aws_s3_bucket_ownership_controls",
    "aws_s3_bucket_policy",
    "aws_s3_bucket_public_access_block",
    "aws_s3_bucket_server_side_encryption_configuration",
    "aws_s3_bucket_versioning",
    "aws_volume_attachment",
    "random_password",
}

# Locals that every tag map must be derived from: they start from local.tags, which holds the cluster tag.
TAG_LOCAL = re.compile(r"local\.(tags|instance_tags|asg_tags)\b")


def ids(items: list[object]) -> list[str]:
    return [getattr(i, "address", str(i)) for i in items]


def test_every_required_module_exists_in_module_layout() -> None:
    present = {p.name for p in MODULES.iterdir() if p.is_dir()}
    assert present >= REQUIRED_MODULES
    for module in present:
        for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md"):
            assert (MODULES / module / name).is_file(), f"{module} lacks {name}"


@pytest.mark.parametrize("directory", root_dirs(), ids=lambda p: str(p.relative_to(TERRAFORM)))
def test_every_variable_is_typed_and_described(directory: Path) -> None:
    found = variables(directory)
    assert found, f"{directory} declares no variables"
    for name, body in found.items():
        assert body.get("type"), f"{directory.name}: variable {name} has no type"
        description = body.get("description", "")
        assert isinstance(description, str) and len(description) > 10, f"{directory.name}: {name} undescribed"


@pytest.mark.parametrize("directory", root_dirs(), ids=lambda p: str(p.relative_to(TERRAFORM)))
def test_every_output_is_described(directory: Path) -> None:
    for block in load_dir(directory).get("output", []):
        for name, body in block.items():
            assert body.get("description"), f"{directory.name}: output {name} undescribed"


def test_modules_hold_no_provider_block_and_the_example_does() -> None:
    for module in MODULES.iterdir():
        assert "provider" not in load_dir(module), f"module {module.name} configures a provider"
    providers = [next(iter(p)) for p in load_dir(EXAMPLE)["provider"]]
    assert providers == ["aws"]


def test_provider_versions_are_lower_bounds_only() -> None:
    for directory in root_dirs():
        for block in load_dir(directory).get("terraform", []):
            for providers in block.get("required_providers", []):
                for name, spec in providers.items():
                    assert spec["version"].startswith(">="), (
                        f"{directory.name}: {name} pins {spec['version']}"
                    )


def test_each_module_tag_local_carries_the_cluster_tag() -> None:
    for directory in root_dirs():
        if directory.name == "bootstrap":
            continue
        tags = locals_of(directory)["tags"]
        assert f'"{cluster_tags.CLUSTER_TAG}" = var.cluster_name' in tags, directory.name


@pytest.mark.parametrize(
    "resource",
    [r for r in all_resources() if r.type not in NOT_TAGGABLE],
    ids=ids([r for r in all_resources() if r.type not in NOT_TAGGABLE]),
)
def test_every_taggable_resource_gets_the_cluster_tags(resource: object) -> None:
    body = resource.body  # type: ignore[attr-defined]
    assert "tags" in body, f"{resource} has no tags"
    assert TAG_LOCAL.search(body["tags"]), f"{resource} tags do not derive from local.tags: {body['tags']}"


def test_derived_tag_locals_start_from_the_cluster_tags() -> None:
    for directory in root_dirs():
        for name, value in locals_of(directory).items():
            if name in {"instance_tags", "asg_tags"}:
                assert "local.tags" in value, f"{directory.name}: local.{name} drops the cluster tags"


def test_launch_templates_tag_instances_and_volumes() -> None:
    for r in all_resources():
        if r.type == "aws_launch_template":
            kinds = {first(spec)["resource_type"] for spec in r.body["tag_specifications"]}
            assert "volume" in kinds, r.address
            for spec in r.body["tag_specifications"]:
                assert TAG_LOCAL.search(spec["tags"]), r.address


def test_autoscaling_groups_propagate_the_cluster_tags() -> None:
    groups = [r for r in all_resources() if r.type == "aws_autoscaling_group"]
    assert {r.directory.name for r in groups} == {"agent_tier", "master", "mesos"}
    for r in groups:
        (tag,) = [d["tag"] for d in r.body["dynamic"] if "tag" in d]
        assert TAG_LOCAL.search(tag["for_each"]), r.address
        content = first(tag["content"])
        assert content["propagate_at_launch"] is True, r.address


def test_agent_groups_carry_exactly_the_tags_the_capacity_controller_looks_for() -> None:
    agent = MODULES / "agent_tier"
    asg_tags = locals_of(agent)["asg_tags"]
    assert f'"{cluster_tags.TIER_TAG}" = var.tier' in asg_tags
    assert f'"{cluster_tags.ROLE_TAG}" = "agent"' in asg_tags
    assert f'"{cluster_tags.CLUSTER_TAG}" = var.cluster_name' in locals_of(agent)["tags"]
    tier = variables(agent)["tier"]["validation"][0]["condition"]
    assert set(re.findall(r'"(\w+)"', tier)) == set(cluster_tags.TIERS)


def test_only_shared_tag_keys_are_used() -> None:
    known = {cluster_tags.CLUSTER_TAG, cluster_tags.TIER_TAG, cluster_tags.ROLE_TAG}
    used: set[str] = set()
    for path in TERRAFORM.rglob("*.tf"):
        used |= set(re.findall(r'"(titus:[a-z_]+)"', path.read_text()))
        used |= set(re.findall(r"ResourceTag/(titus:[a-z_]+)", path.read_text()))
    assert used == known


def test_both_tiers_come_from_one_module_instance() -> None:
    agent_modules = {
        name: body
        for name, body in modules_of(EXAMPLE).items()
        if body["source"] == "../../modules/agent_tier"
    }
    assert list(agent_modules) == ["agent_tier"]
    body = agent_modules["agent_tier"]
    assert body["for_each"] == "${var.agent_tiers}"
    assert body["tier"] == "${each.key}"
    tiers = variables(EXAMPLE)["agent_tiers"]
    assert set(tiers["default"]) == set(cluster_tags.TIERS)
    key_check = tiers["validation"][0]["condition"]
    assert set(re.findall(r'"(\w+)"', key_check)) == set(cluster_tags.TIERS)


def test_agent_groups_ignore_desired_capacity() -> None:
    (asg,) = [r for r in resources(MODULES / "agent_tier") if r.type == "aws_autoscaling_group"]
    assert "desired_capacity" in first(asg.body["lifecycle"])["ignore_changes"]


@pytest.mark.parametrize(
    "resource",
    [r for r in all_resources() if r.type in {"aws_launch_template", "aws_instance"}],
    ids=ids([r for r in all_resources() if r.type in {"aws_launch_template", "aws_instance"}]),
)
def test_imdsv2_is_required(resource: object) -> None:
    metadata = first(resource.body["metadata_options"])  # type: ignore[attr-defined]
    assert metadata["http_tokens"] == "required"
    assert metadata["http_put_response_hop_limit"] == 1


def test_every_volume_is_encrypted_with_the_cluster_key() -> None:
    for r in all_resources():
        blocks = []
        if r.type == "aws_launch_template":
            blocks = [first(b["ebs"]) for b in r.body["block_device_mappings"]]
        elif r.type == "aws_instance":
            blocks = [first(r.body["root_block_device"])]
        elif r.type == "aws_ebs_volume":
            blocks = [r.body]
        for ebs in blocks:
            assert ebs["encrypted"] is True, r.address
            assert ebs["kms_key_id"] == "${var.kms_key_arn}", r.address


def _ingress_rules() -> list[object]:
    return [r for r in all_resources() if r.type == "aws_vpc_security_group_ingress_rule"]


def test_security_groups_use_separate_rules_only() -> None:
    for r in all_resources():
        if r.type == "aws_security_group":
            assert "ingress" not in r.body and "egress" not in r.body, r.address
        assert r.type != "aws_security_group_rule", r.address


@pytest.mark.parametrize("rule", _ingress_rules(), ids=ids(_ingress_rules()))
def test_no_ingress_from_anywhere_except_the_api_when_asked(rule: object) -> None:
    body = rule.body  # type: ignore[attr-defined]
    assert body.get("description")
    cidr = body.get("cidr_ipv4")
    if cidr is None:
        assert "referenced_security_group_id" in body
        return
    assert "0.0.0.0/0" not in cidr
    source = body["for_each"]
    if source == "${toset(var.api_ingress_cidr_blocks)}":
        assert body["from_port"] == body["to_port"] == "${var.api_port}"
        return
    # Any other CIDR source is the bastion list, whose validation refuses 0.0.0.0/0.
    match = re.search(r"var\.(\w+)", source)
    assert match, source
    validation = variables(rule.directory)[match.group(1)]["validation"][0]["condition"]  # type: ignore[attr-defined]
    assert '!= "0.0.0.0/0"' in validation
    assert body["from_port"] == body["to_port"] == 22


def test_api_cidrs_default_to_closed() -> None:
    assert variables(MODULES / "master")["api_ingress_cidr_blocks"]["default"] == []
    assert variables(EXAMPLE)["api_ingress_cidr_blocks"]["default"] == []
    assert variables(EXAMPLE)["api_internet_facing"]["default"] is False


def test_agents_accept_nothing_but_bastion_ssh_and_mesos() -> None:
    rules = [r for r in resources(MODULES / "agent_tier") if r.type == "aws_vpc_security_group_ingress_rule"]
    assert {(r.name, r.body["from_port"]) for r in rules} == {("ssh", 22), ("mesos_agent", 5051)}


@pytest.mark.parametrize(
    ("module", "ports"),
    [("zookeeper", {2181, 2888, 3888}), ("cassandra", {9042, 7000}), ("mesos", {5050})],
)
def test_data_services_open_only_their_ports_to_security_groups(module: str, ports: set[int]) -> None:
    rules = [r for r in resources(MODULES / module) if r.type == "aws_vpc_security_group_ingress_rule"]
    opened: set[int] = set()
    for r in rules:
        if r.name == "ssh":
            continue
        assert "cidr_ipv4" not in r.body, r.address
        port = r.body["from_port"]
        if port == "${each.value}":
            opened |= set(r.body["for_each"].values()) if isinstance(r.body["for_each"], dict) else set()
        else:
            opened.add(port)
    assert opened == ports


def _policy_statements(directory: Path, name: str) -> dict[str, dict[str, object]]:
    for block in load_dir(directory).get("data", []):
        docs = block.get("aws_iam_policy_document", {})
        if name in docs:
            return {s["sid"]: s for s in docs[name]["statement"]}
    raise AssertionError(f"no policy document {name} in {directory}")


def test_only_masters_resize_and_only_this_clusters_agent_groups() -> None:
    statements = _policy_statements(MODULES / "master", "this")
    write_actions = {
        sid
        for sid, s in statements.items()
        if any(a.startswith("autoscaling:S") or "Terminate" in a for a in s["actions"])
    }
    assert write_actions == {"ResizeAgentGroups"}
    resize = statements["ResizeAgentGroups"]
    conditions = {c["variable"]: c["values"] for c in resize["condition"]}
    assert conditions == {
        f"autoscaling:ResourceTag/{cluster_tags.CLUSTER_TAG}": ["${var.cluster_name}"],
        f"autoscaling:ResourceTag/{cluster_tags.ROLE_TAG}": ["agent"],
    }


def test_agents_may_write_nothing_but_their_tasks_logs() -> None:
    text = (MODULES / "agent_tier" / "main.tf").read_text()
    actions = set(re.findall(r'"((?:autoscaling|ec2|iam|s3|ssm|kms|ecr):\w+)"', text)) - {"kms:ViaService"}
    assert actions == {
        "ssm:GetParameter",
        "kms:Decrypt",
        "ecr:GetAuthorizationToken",
        "ecr:BatchGetImage",
        "ecr:GetDownloadUrlForLayer",
        "ecr:BatchCheckLayerAvailability",
        "s3:PutObject",
        "kms:GenerateDataKey",
    }
    doc = next(b["aws_iam_policy_document"]["this"] for b in load_dir(MODULES / "agent_tier")["data"]
               if "this" in b.get("aws_iam_policy_document", {}))
    contents = [c for d in doc["dynamic"] for c in d["statement"]["content"]]
    (put,) = [c for c in contents if c["sid"] == "WriteTaskLogs"]
    assert put["resources"] == ["${statement.value.arn}/${statement.value.prefix}/*"]


def test_tokens_are_secure_parameters_and_never_user_data() -> None:
    params = [r for r in resources(MODULES / "master") if r.type == "aws_ssm_parameter"]
    assert {p.name for p in params} == {"api_token", "agent_token"}
    for p in params:
        assert p.body["type"] == "SecureString"
        assert p.body["key_id"] == "${var.kms_key_arn}"
    for directory in root_dirs():
        for block in load_dir(directory).get("module", []):
            for body in block.values():
                for key in body.get("facts", {}) if isinstance(body.get("facts"), dict) else {}:
                    assert not key.endswith("token"), f"{directory.name} hands {key} to user data"


def test_mesos_switch_empties_the_module() -> None:
    assert variables(EXAMPLE)["create_mesos"]["type"] in {"bool", "${bool}"}
    assert modules_of(EXAMPLE)["mesos"]["create"] == "${var.create_mesos}"
    for r in resources(MODULES / "mesos"):
        guard = r.body.get("count", r.body.get("for_each", ""))
        assert "local.create" in str(guard), f"{r.address} is created even with create = false"


def test_outputs_cover_every_endpoint_and_group() -> None:
    names = {name for block in load_dir(EXAMPLE)["output"] for name in block}
    assert names >= {
        "api_url",
        "zookeeper_connect_string",
        "cassandra_hosts",
        "mesos_zk_url",
        "master_autoscaling_group_name",
        "agent_autoscaling_group_names",
        "mesos_autoscaling_group_name",
        "cluster_name",
        "region",
    }


def test_readme_tables_match_the_hcl() -> None:
    """The inputs/outputs tables are generated (scripts/terraform_docs.py); a stale one fails here."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "terraform_docs", TERRAFORM.parent / "scripts" / "terraform_docs.py"
    )
    assert spec is not None and spec.loader is not None
    docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(docs)
    targets = [(d, d / "README.md") for d in root_dirs()] + [(EXAMPLE, TERRAFORM / "README.md")]
    for directory, readme in targets:
        assert docs.tables(directory) in readme.read_text(), (
            f"{readme} is stale: run scripts/terraform_docs.py"
        )


def test_boot_installs_exactly_the_pinned_collections_the_roles_use() -> None:
    import yaml

    requirements = yaml.safe_load((REPO / "ansible" / "requirements.yml").read_text())
    pinned = {c["name"]: c["version"] for c in requirements["collections"]}
    boot = variables(MODULES / "bootstrap")["ansible_collections"]["default"]
    assert boot == pinned
    text = _ansible_sources()
    fqcn = r"([a-z0-9_]+\.[a-z0-9_]+)\.[a-z0-9_]+"
    used = set(re.findall(rf"^\s*(?:- )?{fqcn}:\s*$", text, re.M))  # modules (task keys)
    used |= set(re.findall(rf"lookup\('{fqcn}'", text))  # lookups
    used |= set(re.findall(rf"^plugin:\s*{fqcn}\s*$", text, re.M))  # inventory plugins
    assert used - {"ansible.builtin"} == set(pinned), used


def _ansible_sources() -> str:
    ansible = REPO / "ansible"
    paths = [*(ansible / "roles").rglob("*.yml"), *(ansible / "inventories").rglob("*.yml")]
    paths += ansible.glob("*.yml")
    return "\n".join(p.read_text() for p in paths if p.name != "requirements.yml")
