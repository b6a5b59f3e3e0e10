"""AWS adapter: autoscaling groups as node groups. The only module that imports boto3.

Groups are found by the tags Terraform sets (`titus.cluster_tags`), so the controller needs no list of
group names. moto (and some real edge cases) do not enforce MaxSize on SetDesiredCapacity, so the limits
are checked here before any call. Throttling is retried by botocore's "standard" retry mode (exponential
backoff with jitter on Throttling/RequestLimitExceeded), which covers every call of both clients.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import boto3
from botocore.config import Config

from capacity.model import Resources, Tier
from capacity.node_group import NodeGroupError
from titus.cluster_tags import CLUSTER_TAG, TIER_TAG

log = logging.getLogger("capacity.aws")

#: Disk per agent when the launch template names no EBS volume size.
DEFAULT_DISK_MB = 100 * 1024


def make_clients(region: str, endpoint_url: str | None = None, max_attempts: int = 8) -> tuple[Any, Any]:
    """(autoscaling, ec2) clients sharing one retry policy."""
    config = Config(
        retries={"max_attempts": max_attempts, "mode": "standard"}, connect_timeout=5, read_timeout=20
    )
    asg = boto3.client("autoscaling", region_name=region, endpoint_url=endpoint_url, config=config)
    ec2 = boto3.client("ec2", region_name=region, endpoint_url=endpoint_url, config=config)
    return asg, ec2


class AsgNodeGroup:
    """One EC2 autoscaling group; reads are cached by `refresh`, writes go straight to the API."""

    def __init__(
        self,
        asg_client: Any,
        ec2_client: Any,
        name: str,
        tier: Tier,
        dry_run: bool = False,
        description: Mapping[str, Any] | None = None,
        resources_override: Mapping[str, Resources] | None = None,
    ) -> None:
        self._asg = asg_client
        self._ec2 = ec2_client
        self._name = name
        self._tier = tier
        self.dry_run = dry_run
        self._desc: Mapping[str, Any] = description or {}
        self._overrides = dict(resources_override or {})
        self._type_cache: tuple[str, Resources] | None = None
        if not self._desc:
            self.refresh()

    @property
    def id(self) -> str:
        return self._name

    @property
    def tier(self) -> Tier:
        return self._tier

    def refresh(self) -> None:
        groups = self._asg.describe_auto_scaling_groups(AutoScalingGroupNames=[self._name])[
            "AutoScalingGroups"
        ]
        if not groups:
            raise NodeGroupError(f"autoscaling group {self._name} no longer exists")
        self._desc = groups[0]

    def min_size(self) -> int:
        return int(self._desc["MinSize"])

    def max_size(self) -> int:
        return int(self._desc["MaxSize"])

    def target_size(self) -> int:
        return int(self._desc["DesiredCapacity"])

    def instance_ids(self) -> tuple[str, ...]:
        """Instances the group still counts; ones already on their way out are left aside."""
        return tuple(
            i["InstanceId"]
            for i in self._desc.get("Instances", [])
            if not str(i.get("LifecycleState", "")).startswith(("Terminat", "Detach"))
        )

    def instance_type(self) -> str:
        return self._type_and_resources()[0]

    def instance_resources(self) -> Resources:
        return self._type_and_resources()[1]

    def increase_size(self, delta: int) -> None:
        if delta <= 0:
            raise NodeGroupError(f"{self._name}: increase by {delta} is not an increase")
        self.set_target_size(self.target_size() + delta)

    def set_target_size(self, size: int) -> None:
        if not self.min_size() <= size <= self.max_size():
            raise NodeGroupError(
                f"{self._name}: desired {size} outside [{self.min_size()}, {self.max_size()}]; "
                "raise MaxSize in Terraform (titus agent ASG max_size) if the demand is real"
            )
        if self.dry_run:
            log.info("dry-run: would set %s desired %d -> %d", self._name, self.target_size(), size)
            return
        self._asg.set_desired_capacity(
            AutoScalingGroupName=self._name, DesiredCapacity=size, HonorCooldown=False
        )
        self._desc = {**self._desc, "DesiredCapacity": size}

    def delete_nodes(self, instance_ids: Sequence[str]) -> None:
        members = set(self.instance_ids())
        unknown = [i for i in instance_ids if i not in members]
        if unknown:
            raise NodeGroupError(
                f"{self._name}: instances {unknown} are not in the group; refusing to terminate"
            )
        if self.target_size() - len(instance_ids) < self.min_size():
            raise NodeGroupError(
                f"{self._name}: terminating {len(instance_ids)} would take desired below "
                f"MinSize {self.min_size()}"
            )
        for instance_id in instance_ids:
            if self.dry_run:
                log.info("dry-run: would terminate %s in %s with decrement", instance_id, self._name)
                continue
            self._asg.terminate_instance_in_auto_scaling_group(
                InstanceId=instance_id, ShouldDecrementDesiredCapacity=True
            )
            self._desc = {
                **self._desc,
                "DesiredCapacity": self.target_size() - 1,
                "Instances": [i for i in self._desc.get("Instances", []) if i["InstanceId"] != instance_id],
            }

    def _type_and_resources(self) -> tuple[str, Resources]:
        if self._type_cache is None:
            itype, disk_mb = self._launch_spec()
            resources = self._overrides.get(itype) or self._describe_type(itype, disk_mb)
            self._type_cache = (itype, resources)
        return self._type_cache

    def _launch_spec(self) -> tuple[str, float]:
        """Instance type and root disk from the launch template (or mixed policy / launch configuration)."""
        spec = self._desc.get("LaunchTemplate")
        mixed = self._desc.get("MixedInstancesPolicy")
        if spec is None and mixed:
            overrides = mixed.get("LaunchTemplate", {}).get("Overrides") or []
            if overrides and overrides[0].get("InstanceType"):
                return str(overrides[0]["InstanceType"]), DEFAULT_DISK_MB
            spec = mixed.get("LaunchTemplate", {}).get("LaunchTemplateSpecification")
        if spec:
            args: dict[str, Any] = {"Versions": [str(spec.get("Version") or "$Default")]}
            if spec.get("LaunchTemplateId"):
                args["LaunchTemplateId"] = spec["LaunchTemplateId"]
            else:
                args["LaunchTemplateName"] = spec["LaunchTemplateName"]
            versions = self._ec2.describe_launch_template_versions(**args)["LaunchTemplateVersions"]
            data = versions[0]["LaunchTemplateData"]
            return str(data["InstanceType"]), _disk_mb(data.get("BlockDeviceMappings", []))
        name = self._desc.get("LaunchConfigurationName")
        if name:
            lcs = self._asg.describe_launch_configurations(LaunchConfigurationNames=[name])[
                "LaunchConfigurations"
            ]
            return str(lcs[0]["InstanceType"]), _disk_mb(lcs[0].get("BlockDeviceMappings", []))
        raise NodeGroupError(
            f"{self._name}: no launch template or configuration to read the instance type from"
        )

    def _describe_type(self, itype: str, disk_mb: float) -> Resources:
        info = self._ec2.describe_instance_types(InstanceTypes=[itype])["InstanceTypes"][0]
        return Resources(
            cpu=float(info["VCpuInfo"]["DefaultVCpus"]),
            memory_mb=float(info["MemoryInfo"]["SizeInMiB"]),
            disk_mb=disk_mb,
            network_mbps=_network_mbps(str(info.get("NetworkInfo", {}).get("NetworkPerformance", ""))),
        )


def _disk_mb(mappings: Sequence[Mapping[str, Any]]) -> float:
    for m in mappings:
        size = m.get("Ebs", {}).get("VolumeSize")
        if size:
            return float(size) * 1024
    return float(DEFAULT_DISK_MB)


def _network_mbps(performance: str) -> float:
    """'Up to 10 Gigabit' -> 10,000; 'Moderate' and friends -> a conservative 500."""
    match = re.search(r"([\d.]+)\s*Gigabit", performance)
    return float(match.group(1)) * 1000 if match else 500.0


class AsgDiscovery:
    """Finds the cluster's agent ASGs by `CLUSTER_TAG` = cluster and `TIER_TAG` in (critical, flex)."""

    def __init__(
        self,
        asg_client: Any,
        ec2_client: Any,
        cluster: str,
        dry_run: bool = False,
        resources_override: Mapping[str, Resources] | None = None,
    ) -> None:
        self._asg = asg_client
        self._ec2 = ec2_client
        self._cluster = cluster
        self._dry_run = dry_run
        self._overrides = dict(resources_override or {})
        self._cache: dict[str, AsgNodeGroup] = {}

    def node_groups(self) -> list[AsgNodeGroup]:
        found: list[AsgNodeGroup] = []
        paginator = self._asg.get_paginator("describe_auto_scaling_groups")
        pages = paginator.paginate(Filters=[{"Name": f"tag:{CLUSTER_TAG}", "Values": [self._cluster]}])
        for page in pages:
            for desc in page["AutoScalingGroups"]:
                tags = {t["Key"]: t["Value"] for t in desc.get("Tags", [])}
                if tags.get(CLUSTER_TAG) != self._cluster:
                    continue  # the server-side filter is an optimisation; the tag decides
                try:
                    tier = Tier(tags.get(TIER_TAG, ""))
                except ValueError:
                    log.warning(
                        "ASG %s of cluster %s has no valid %s tag; ignored",
                        desc["AutoScalingGroupName"],
                        self._cluster,
                        TIER_TAG,
                    )
                    continue
                name = desc["AutoScalingGroupName"]
                group = self._cache.get(name)
                if group is None or group.tier is not tier:
                    group = AsgNodeGroup(
                        self._asg, self._ec2, name, tier, self._dry_run, desc, self._overrides
                    )
                    self._cache[name] = group
                else:
                    group._desc = desc
                found.append(group)
        return sorted(found, key=lambda g: g.id)
