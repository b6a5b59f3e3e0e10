"""`terraform init/validate/plan/apply/destroy` of examples/complete against a real moto_server.

One moto_server and one apply serve every test here (the module fixture); the tests then read what
was created back through the AWS APIs, as an operator would, and the last test destroys it all.
The IAM tests (test_iam.py style, here so they share the apply) run the capacity controller and the
roles' token reads with moto's IAM enforcement on, as the principals Terraform's policies describe.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.terraform.bringup import (
    CLUSTER,
    EXAMPLE_VARS,
    REGION,
    MotoServer,
    Terraform,
    example_copy,
    terraform_for,
)
from titus.cluster_tags import CLUSTER_TAG, ROLE_TAG, TIER_TAG

# The apply takes about 2 minutes here when the machine is quiet; the budget covers a loaded one.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


@dataclass
class Bringup:
    moto: MotoServer
    tf: Terraform
    outputs: dict[str, Any]

    def client(self, service: str, **credentials: str) -> Any:
        keys = credentials or {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        return boto3.client(
            service, region_name=REGION, endpoint_url=self.moto.url, verify=self.moto.ca_file, **keys
        )


@pytest.fixture(scope="module")
def bringup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bringup]:
    scratch = tmp_path_factory.mktemp("bringup")
    moto = MotoServer(scratch / "moto.log")
    try:
        root = example_copy(scratch, moto.url, EXAMPLE_VARS)
        tf = terraform_for(root, scratch, moto)
        for step, args in [
            ("init", ["init", "-input=false", "-no-color"]),
            ("validate", ["validate", "-no-color"]),
            ("plan", ["plan", "-input=false", "-no-color", "-out=titus.tfplan"]),
            ("apply", ["apply", "-input=false", "-no-color", "-auto-approve", "titus.tfplan"]),
        ]:
            result = tf.run(step, *args)
            assert result.returncode == 0, (
                f"terraform {step} failed:\n{result.stdout[-4000:]}\n{result.stderr}"
            )
        outputs = {k: v["value"] for k, v in tf.json("output", "-json").items()}
        (scratch / "timings.json").write_text(json.dumps(tf.timings))
        print(f"\nterraform timings against moto_server (s): {tf.timings}")
        yield Bringup(moto, tf, outputs)
    finally:
        moto.stop()


def asgs(b: Bringup) -> dict[str, dict[str, Any]]:
    pages = b.client("autoscaling").get_paginator("describe_auto_scaling_groups").paginate()
    return {g["AutoScalingGroupName"]: g for p in pages for g in p["AutoScalingGroups"]}


def tags_of(group: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in group.get("Tags", [])}


def test_a_second_plan_is_empty(bringup: Bringup) -> None:
    result = bringup.tf.run("plan2", "plan", "-input=false", "-no-color", "-detailed-exitcode")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr
    assert "No changes." in result.stdout


def test_autoscaling_groups_have_their_sizes_and_tags(bringup: Bringup) -> None:
    groups = asgs(bringup)
    names = bringup.outputs["agent_autoscaling_group_names"]
    assert names == {"critical": f"{CLUSTER}-agent-critical", "flex": f"{CLUSTER}-agent-flex"}
    master = groups[bringup.outputs["master_autoscaling_group_name"]]
    assert (master["MinSize"], master["MaxSize"], master["DesiredCapacity"]) == (3, 3, 3)
    assert tags_of(master)[ROLE_TAG] == "master"
    expected = {"critical": (2, 20, 2), "flex": (1, 50, 1)}
    for tier, name in names.items():
        group = groups[name]
        assert (group["MinSize"], group["MaxSize"], group["DesiredCapacity"]) == expected[tier]
        tags = tags_of(group)
        assert {k: tags[k] for k in (CLUSTER_TAG, TIER_TAG, ROLE_TAG)} == {
            CLUSTER_TAG: CLUSTER,
            TIER_TAG: tier,
            ROLE_TAG: "agent",
        }
        assert all(t["PropagateAtLaunch"] for t in group["Tags"])
        # Scale-in is the controller's alone: new instances are protected from the group's own.
        assert group["NewInstancesProtectedFromScaleIn"] is True
    flex = groups[names["flex"]]["MixedInstancesPolicy"]
    overrides = [o["InstanceType"] for o in flex["LaunchTemplate"]["Overrides"]]
    assert overrides == ["m5.xlarge", "m5a.xlarge", "m6i.xlarge"]
    assert flex["InstancesDistribution"]["OnDemandPercentageAboveBaseCapacity"] == 0


def test_every_launch_template_requires_imdsv2_and_encrypts_its_volumes(bringup: Bringup) -> None:
    ec2 = bringup.client("ec2")
    templates = ec2.describe_launch_templates()["LaunchTemplates"]
    ours = [t for t in templates if t["LaunchTemplateName"].startswith(f"{CLUSTER}-")]
    assert {t["LaunchTemplateName"].rsplit("-", 1)[0] for t in ours} == {
        f"{CLUSTER}-master",
        f"{CLUSTER}-agent-critical",
        f"{CLUSTER}-agent-flex",
        f"{CLUSTER}-zookeeper",
        f"{CLUSTER}-cassandra",
    }
    kms = bringup.outputs["kms_key_arn"]
    for t in ours:
        data = ec2.describe_launch_template_versions(
            LaunchTemplateId=t["LaunchTemplateId"], Versions=["$Latest"]
        )["LaunchTemplateVersions"][0]["LaunchTemplateData"]
        meta = data["MetadataOptions"]
        assert (meta["HttpTokens"], meta["HttpPutResponseHopLimit"], meta["HttpEndpoint"]) == (
            "required",
            1,
            "enabled",
        ), t["LaunchTemplateName"]
        for mapping in data["BlockDeviceMappings"]:
            assert mapping["Ebs"]["Encrypted"] is True
            assert mapping["Ebs"]["KmsKeyId"] == kms


def test_security_groups_open_nothing_to_the_world(bringup: Bringup) -> None:
    ec2 = bringup.client("ec2")
    vpc = bringup.outputs["vpc_id"]
    groups = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["SecurityGroups"]
    by_name = {g["GroupName"]: g for g in groups}
    for g in groups:
        for perm in g["IpPermissions"]:
            assert all(r["CidrIp"] != "0.0.0.0/0" for r in perm.get("IpRanges", [])), g["GroupName"]
    agent_groups = [g for n, g in by_name.items() if n.startswith(f"{CLUSTER}-agent-")]
    assert len(agent_groups) == 2
    assert all(g["IpPermissions"] == [] for g in agent_groups)  # no bastion, no Mesos: nothing dials in
    zk = next(g for n, g in by_name.items() if n.startswith(f"{CLUSTER}-zookeeper-"))
    assert sorted({p["FromPort"] for p in zk["IpPermissions"]}) == [2181, 2888, 3888]


def test_data_services_run_on_their_pinned_interfaces_with_data_volumes(bringup: Bringup) -> None:
    ec2 = bringup.client("ec2")
    hosts = bringup.outputs["cassandra_hosts"]
    assert len(hosts) == 3
    reservations = ec2.describe_instances(
        Filters=[
            {"Name": f"tag:{ROLE_TAG}", "Values": ["cassandra"]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
    )["Reservations"]
    instances = [i for r in reservations for i in r["Instances"]]
    assert sorted(i["PrivateIpAddress"] for i in instances) == sorted(hosts)
    for i in instances:
        volumes = ec2.describe_volumes(
            Filters=[{"Name": "attachment.instance-id", "Values": [i["InstanceId"]]}]
        )["Volumes"]
        data = [v for v in volumes if v["Attachments"][0]["Device"] == "/dev/xvdf"]
        assert len(data) == 1 and data[0]["Encrypted"] and data[0]["Size"] == 200
        # The volume is in the zone of the node's subnet (its pinned interface's), where AWS places the
        # instance; moto reports the instance itself in the region's first zone, so the subnet decides.
        subnet = ec2.describe_subnets(SubnetIds=[i["NetworkInterfaces"][0]["SubnetId"]])["Subnets"][0]
        assert data[0]["AvailabilityZone"] == subnet["AvailabilityZone"]
    zk = bringup.outputs["zookeeper_connect_string"].split(",")
    assert len(zk) == 3 and all(h.endswith(":2181") for h in zk)


def test_tokens_are_generated_secure_strings(bringup: Bringup) -> None:
    ssm = bringup.client("ssm")
    values = []
    for name in (bringup.outputs["api_token_parameter_name"], bringup.outputs["agent_token_parameter_name"]):
        param = ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]
        assert param["Type"] == "SecureString"
        values.append(param["Value"])
    assert all(len(v) == 64 and int(v, 16) >= 0 for v in values)
    assert values[0] != values[1]


# --------------------------------------------------------------------------------------------------
# IAM, enforced: the principals of Terraform's policies make the calls the code makes.
# --------------------------------------------------------------------------------------------------


def role_policy(b: Bringup, role_prefix: str) -> dict[str, Any]:
    iam = b.client("iam")
    role = next(r for r in iam.list_roles()["Roles"] if r["RoleName"].startswith(role_prefix))
    names = iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]
    assert len(names) == 1, names
    doc = iam.get_role_policy(RoleName=role["RoleName"], PolicyName=names[0])["PolicyDocument"]
    return json.loads(doc) if isinstance(doc, str) else dict(doc)


def as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


#: The task log statements, exercised by their own test (the log archive's calls, not the controller's).
LOG_SIDS = {"ReadTaskLogs", "DecryptTaskLogs", "WriteTaskLogs", "EncryptTaskLogs"}


def granted_actions(policy: dict[str, Any], sids: set[str] | None = None) -> set[str]:
    """What `policy` allows: of every statement, or (sids given) of those statements only."""
    return {
        a
        for s in policy["Statement"]
        if s["Effect"] == "Allow" and (sids is None or s.get("Sid") in sids)
        for a in as_list(s["Action"])
    }


def granted_outside_logs(policy: dict[str, Any]) -> set[str]:
    return granted_actions(policy, {s.get("Sid", "") for s in policy["Statement"]} - LOG_SIDS)


def allows(policy: dict[str, Any], action: str, resource: str, context: dict[str, str]) -> bool:
    """AWS's evaluation for Allow statements with Resource globs and StringEquals/ArnLike conditions.

    moto checks the action of every request but not its resource or conditions (it authorises against
    "*"), so the resource half of each grant is checked here, on the same calls.
    """
    for s in policy["Statement"]:
        if s["Effect"] != "Allow" or action not in as_list(s["Action"]):
            continue
        if not any(fnmatch.fnmatchcase(resource, r) for r in as_list(s["Resource"])):
            continue
        conditions = s.get("Condition", {})
        if all(
            context.get(key) in as_list(values)
            for test, pairs in conditions.items()
            for key, values in pairs.items()
            if test == "StringEquals"
        ):
            return True
    return False


@dataclass
class Principal:
    keys: dict[str, str]
    calls: list[tuple[str, dict[str, Any]]]

    def client(self, b: Bringup, service: str) -> Any:
        client = boto3.client(
            service, region_name=REGION, endpoint_url=b.moto.url, verify=b.moto.ca_file, **self.keys
        )
        prefix = client.meta.service_model.signing_name

        def record(params: dict[str, Any], model: Any, **_: Any) -> None:
            self.calls.append((f"{prefix}:{model.name}", dict(params)))

        # The API parameters as the caller passed them (before-call sees the serialized request).
        client.meta.events.register("before-parameter-build", record)
        return client


def user_for(b: Bringup, name: str, policy: dict[str, Any]) -> Principal:
    """An IAM user holding `policy` with every Resource widened to "*" (moto matches resources as "*")."""
    iam = b.client("iam")
    iam.create_user(UserName=name)
    widened = {
        "Version": "2012-10-17",
        "Statement": [{**s, "Resource": "*"} for s in policy["Statement"]],
    }
    iam.put_user_policy(UserName=name, PolicyName="terraform", PolicyDocument=json.dumps(widened))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return Principal(
        {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}, []
    )


def denied(call: Any, **kwargs: Any) -> bool:
    """True when moto refuses the call for want of permission (its JSON services answer in XML: code 403)."""
    try:
        call(**kwargs)
    except ClientError as e:
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return status == 403 and "is not authorized to perform" in str(e.response["Error"])
    return False


@pytest.fixture(scope="module")
def principals(bringup: Bringup) -> dict[str, Any]:
    master = role_policy(bringup, f"{CLUSTER}-master-")
    agent = role_policy(bringup, f"{CLUSTER}-agent-flex-")
    return {
        "master_policy": master,
        "agent_policy": agent,
        "master": user_for(bringup, "titus-test-master", master),
        "agent": user_for(bringup, "titus-test-agent", agent),
        "admin": user_for(bringup, "titus-test-admin", {"Statement": [{"Effect": "Allow", "Action": "*"}]}),
    }


@pytest.fixture
def enforced(bringup: Bringup, principals: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """IAM enforcement on for one test only: Terraform itself (destroy) runs with it off."""
    bringup.moto.set_auth(True)
    try:
        yield principals
    finally:
        bringup.moto.set_auth(False)


def test_iam_enforcement_is_really_on(bringup: Bringup, enforced: dict[str, Any]) -> None:
    anonymous = bringup.client("autoscaling")  # the "testing" keys belong to no IAM user
    with pytest.raises(ClientError):
        anonymous.describe_auto_scaling_groups()


def test_master_and_capacity_controller_calls_are_allowed_and_nothing_more(
    bringup: Bringup, enforced: dict[str, Any]
) -> None:
    from capacity.aws import AsgDiscovery
    from capacity.cluster import MemoryCluster
    from capacity.controller import Controller
    from capacity.model import Agent, AgentState, Lifecycle, PendingTask, Resources, Tier, TierConfig

    me: Principal = enforced["master"]
    admin: Principal = enforced["admin"]
    policy = enforced["master_policy"]
    asg, ec2, ssm = (me.client(bringup, s) for s in ("autoscaling", "ec2", "ssm"))
    admin_asg = admin.client(bringup, "autoscaling")

    # The roles read both tokens at boot (amazon.aws.ssm_parameter: GetParameter, WithDecryption).
    for name in (bringup.outputs["api_token_parameter_name"], bringup.outputs["agent_token_parameter_name"]):
        ssm.get_parameter(Name=name, WithDecryption=True)

    flex_name = bringup.outputs["agent_autoscaling_group_names"]["flex"]
    tiers = {
        Tier.CRITICAL: TierConfig.default(Tier.CRITICAL),
        Tier.FLEX: TierConfig(
            Tier.FLEX, pending_threshold_s=30, idle_threshold_s=300, scale_up_cooldown_s=30
        ),
    }
    now = 1_700_000_000.0

    def flex_instances() -> list[str]:
        group = admin_asg.describe_auto_scaling_groups(AutoScalingGroupNames=[flex_name])[
            "AutoScalingGroups"
        ][0]
        return sorted(
            i["InstanceId"] for i in group["Instances"] if not i["LifecycleState"].startswith("Termin")
        )

    def agent(iid: str, busy: bool) -> Agent:
        return Agent(
            id=iid,
            instance_id=iid,
            node_group_id=flex_name,
            tier=Tier.FLEX,
            lifecycle=Lifecycle.ACTIVE,
            state=AgentState.REGISTERED,
            resources=Resources(4, 16384, 102400, 10000),
            used=Resources(cpu=4) if busy else Resources(),
            task_ids=("t",) if busy else (),
            critical_task_count=0,
            idle_since=None if busy else now - 900,
        )

    # Scale up: overdue flex work -> SetDesiredCapacity on the flex group.
    first = flex_instances()
    pending = [PendingTask(f"p{k}", Tier.FLEX, Resources(4, 1024, 100, 10), now - 60) for k in range(2)]
    cluster = MemoryCluster([agent(i, busy=True) for i in first], pending)
    ctl = Controller(cluster, AsgDiscovery(asg, ec2, CLUSTER), tiers)
    ctl.run_once(now)
    grown = flex_instances()
    assert len(grown) > len(first), ctl.recent_actions()

    # Scale in: the new instances stay idle -> phased out, then terminated (exactly those).
    cluster = MemoryCluster([agent(i, busy=i in first) for i in grown])
    ctl = Controller(cluster, AsgDiscovery(asg, ec2, CLUSTER), tiers)
    ctl.run_once(now + 600)
    ctl.run_once(now + 605)
    assert flex_instances() == first, ctl.recent_actions()
    assert all(a.ok for a in ctl.recent_actions()), ctl.recent_actions()

    called = {action for action, _ in me.calls}
    # kms:Decrypt is the one grant no client call shows: SSM makes it on the role's behalf (kms:ViaService).
    assert granted_outside_logs(policy) == called | {"kms:Decrypt"}, sorted(called)

    # Resources and conditions, as AWS evaluates them, for every call that names one.
    groups = {
        g["AutoScalingGroupName"]: g for g in admin_asg.describe_auto_scaling_groups()["AutoScalingGroups"]
    }
    account_arn = groups[flex_name]["AutoScalingGroupARN"]
    arn_prefix = f"arn:aws:ssm:{REGION}:{account_arn.split(':')[4]}:parameter"
    for action, params in me.calls:
        if action == "ssm:GetParameter":
            assert allows(policy, action, arn_prefix + params["Name"], {})
        if action in {"autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"}:
            group = groups[flex_name]
            context = {f"autoscaling:ResourceTag/{k}": v for k, v in tags_of(group).items()}
            assert allows(policy, action, group["AutoScalingGroupARN"], context)
    master_group = groups[bringup.outputs["master_autoscaling_group_name"]]
    master_context = {f"autoscaling:ResourceTag/{k}": v for k, v in tags_of(master_group).items()}
    assert not allows(
        policy, "autoscaling:SetDesiredCapacity", master_group["AutoScalingGroupARN"], master_context
    )

    # And what the policy does not grant is refused by moto.
    assert denied(asg.update_auto_scaling_group, AutoScalingGroupName=flex_name, MaxSize=1000)
    assert denied(ec2.terminate_instances, InstanceIds=first)
    assert denied(
        ssm.put_parameter, Name=bringup.outputs["api_token_parameter_name"], Value="x" * 20, Overwrite=True
    )


def test_agents_may_read_their_token_and_nothing_else(bringup: Bringup, enforced: dict[str, Any]) -> None:
    me: Principal = enforced["agent"]
    policy = enforced["agent_policy"]
    ssm, asg = me.client(bringup, "ssm"), me.client(bringup, "autoscaling")
    agent_param = bringup.outputs["agent_token_parameter_name"]
    assert len(ssm.get_parameter(Name=agent_param, WithDecryption=True)["Parameter"]["Value"]) == 64
    assert granted_outside_logs(policy) == {a for a, _ in me.calls} | {"kms:Decrypt"}

    account = bringup.outputs["kms_key_arn"].split(":")[4]
    prefix = f"arn:aws:ssm:{REGION}:{account}:parameter"
    assert allows(policy, "ssm:GetParameter", prefix + agent_param, {})
    assert not allows(policy, "ssm:GetParameter", prefix + bringup.outputs["api_token_parameter_name"], {})
    assert denied(asg.describe_auto_scaling_groups)
    assert denied(ssm.put_parameter, Name=agent_param, Value="y" * 20, Overwrite=True)


# --------------------------------------------------------------------------------------------------
# The task log bucket: agents put finished tasks' logs, masters read them back, nobody else anything.
# --------------------------------------------------------------------------------------------------


def test_the_log_bucket_is_private_encrypted_and_expires_the_logs(bringup: Bringup) -> None:
    from shared.log_archive import RULE_ID

    s3 = bringup.client("s3")
    bucket = bringup.outputs["log_bucket_name"]
    assert bucket.startswith(f"titus-{CLUSTER}-logs-")
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert block == dict.fromkeys(
        ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"), True
    )
    (rule,) = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": bringup.outputs["kms_key_arn"],
    }
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    ownership = s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"]
    assert ownership == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert set(rules) == {RULE_ID, "abort-incomplete-uploads"}
    expiry = rules[RULE_ID]
    assert expiry["Status"] == "Enabled"
    assert expiry["Filter"] == {"Prefix": "task-logs/"} and expiry["Expiration"] == {"Days": 30}
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    (deny,) = policy["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    tags = {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=bucket)["TagSet"]}
    assert tags[CLUSTER_TAG] == CLUSTER


def s3_denied(call: Any, **kwargs: Any) -> bool:
    """True when moto refuses an S3 call for want of permission (S3 answers 403 AccessDenied)."""
    try:
        call(**kwargs)
    except ClientError as e:
        return e.response["Error"].get("Code") == "AccessDenied"
    return False


def test_agents_put_task_logs_masters_read_them_and_neither_may_do_more(
    bringup: Bringup, enforced: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The archive's own code (shared/log_archive.py), as each role, with moto's IAM enforcement on."""
    from shared.log_archive import S3LogArchive

    bucket = bringup.outputs["log_bucket_name"]

    def archive_as(who: Principal) -> S3LogArchive:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", who.keys["aws_access_key_id"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", who.keys["aws_secret_access_key"])
        monkeypatch.setenv("AWS_CA_BUNDLE", bringup.moto.ca_file)
        # boto3's default session keeps the first credentials it resolved: each role gets a fresh one.
        monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
        archive = S3LogArchive(bucket, "task-logs", REGION, bringup.moto.url, retention_days=0)

        def record(params: dict[str, Any], model: Any, **_: Any) -> None:
            who.calls.append((f"s3:{model.name}", dict(params)))

        archive.s3.meta.events.register("before-parameter-build", record)
        return archive

    agent: Principal = enforced["agent"]
    master: Principal = enforced["master"]
    agent.calls.clear()
    master.calls.clear()
    task = "3f2c1a9e-0000-4000-8000-00000000c0de"
    written = b"".join(b"line %d\n" % i for i in range(1000))
    archive_as(agent).put(task, "stdout", written, start=4096)  # rotation had dropped the first 4 KiB

    reader = archive_as(master)
    whole = reader.read(task, "stdout", 0, 1 << 20)
    assert whole is not None and whole["data"] == written
    assert (whole["offset"], whole["size"], whole["source"]) == (4096, 4096 + len(written), "s3")
    tail = reader.read(task, "stdout", -8, 8)
    assert tail is not None and tail["data"] == b"line 999\n"[-8:]
    assert reader.read(task, "stderr", 0, 10) is None  # never written: none, not an error
    reader.ensure_retention()  # retention 0 (Ansible's fact for this bucket): the bucket is not touched

    # Exactly the log statements' actions were used (HeadObject is authorised as GetObject); KMS is
    # called by S3 on the caller's behalf (kms:ViaService), which no client call shows.
    as_iam = {"s3:HeadObject": "s3:GetObject"}
    agent_calls = {as_iam.get(a, a) for a, _ in agent.calls}
    master_calls = {as_iam.get(a, a) for a, _ in master.calls}
    assert granted_actions(enforced["agent_policy"], LOG_SIDS) == agent_calls | {"kms:GenerateDataKey"}
    assert granted_actions(enforced["master_policy"], LOG_SIDS) == master_calls | {"kms:Decrypt"}

    # Resources, as AWS evaluates them: the log prefix of this bucket and nothing else.
    for who, policy_name in ((agent, "agent_policy"), (master, "master_policy")):
        policy = enforced[policy_name]
        for action, params in who.calls:
            arn = f"arn:aws:s3:::{params['Bucket']}/{params['Key']}"
            assert allows(policy, as_iam.get(action, action), arn, {}), (action, arn)
        outside = (f"arn:aws:s3:::{bucket}/other/{task}/stdout", f"arn:aws:s3:::{bucket}x/task-logs/t")
        for elsewhere in outside:
            assert not any(allows(policy, a, elsewhere, {}) for a in ("s3:PutObject", "s3:GetObject"))

    # And moto refuses what the policies do not grant.
    key = f"task-logs/{task}/stdout"
    agent_s3, master_s3 = agent.client(bringup, "s3"), master.client(bringup, "s3")
    assert s3_denied(agent_s3.get_object, Bucket=bucket, Key=key)  # agents never read logs back
    assert s3_denied(agent_s3.delete_object, Bucket=bucket, Key=key)
    assert s3_denied(agent_s3.list_objects_v2, Bucket=bucket)
    assert s3_denied(master_s3.put_object, Bucket=bucket, Key=key, Body=b"forged")
    assert s3_denied(master_s3.delete_object, Bucket=bucket, Key=key)
    assert s3_denied(
        master_s3.put_bucket_lifecycle_configuration, Bucket=bucket, LifecycleConfiguration={"Rules": []}
    )
    with pytest.raises(ClientError) as refused:  # keys of no IAM user
        bringup.client("s3").get_object(Bucket=bucket, Key=key)
    assert refused.value.response["Error"]["Code"] in {"AccessDenied", "InvalidAccessKeyId"}
    assert reader.read(task, "stdout", 0, 16)["data"] == written[:16]  # nothing was overwritten


def test_destroy_removes_everything(bringup: Bringup) -> None:
    result = bringup.tf.run("destroy", "destroy", "-input=false", "-no-color", "-auto-approve")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    state = bringup.tf.run("state", "state", "list")
    assert state.stdout.strip() == ""
    assert not [n for n in asgs(bringup) if n.startswith(CLUSTER)]
    buckets = bringup.client("s3").list_buckets()["Buckets"]
    assert not [b["Name"] for b in buckets if b["Name"].startswith(f"titus-{CLUSTER}-")]
    print(f"\nterraform timings against moto_server (s): {bringup.tf.timings}")
