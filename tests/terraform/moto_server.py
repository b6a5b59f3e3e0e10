"""moto_server with five of moto's gaps fixed: a second `terraform plan` is empty, destroy ends, and
bucket policies mean what they mean in AWS.

Run as `python -m tests.terraform.moto_server -H 127.0.0.1 -p PORT` (the arguments of `moto_server`).
Each fix makes moto answer what AWS answers; none adds behaviour AWS lacks. Both were found because the
second plan after an apply against plain moto 5.2 showed drift that AWS does not produce:

1. CreateLaunchTemplate with TagSpecifications for the template itself (`resource_type =
   "launch-template"`, which is how the provider tags the template) also lands in moto's *version data*,
   so DescribeLaunchTemplateVersions returns a tag specification Terraform never asked for in the
   template data, and every plan wants to remove it. AWS keeps the two apart.
2. A security group rule that references another group loses its description on
   DescribeSecurityGroupRules (moto reads it only from a CIDR range), so every plan wants to add it.
3. An autoscaling group reconciles its instances with its desired capacity continuously in AWS, but in
   moto only when the capacity is set. Destroying an agent group (scale-in protected, as the capacity
   controller needs) sets desired 0 while the instances are protected, then lifts their protection and
   waits for them to go: AWS then terminates them, moto never did. Lifting protection now reconciles.
4. A terminated instance releases the network interfaces it does not delete (the ZooKeeper and Cassandra
   nodes' pinned interfaces) in AWS; moto left them attached to the dead instance, so destroying them
   failed ("cannot be detached"). Termination now detaches them.
5. A bucket policy's conditions: moto treats a statement whose condition it cannot evaluate (any but
   StringEquals) as matching, and one whose condition does not hold as a Deny, whatever its Effect. So the
   log bucket's `Deny s3:* unless aws:SecureTransport` refused every object call even over TLS. Object
   calls now evaluate the bucket policy as AWS does for the keys this server knows (aws:SecureTransport:
   whether it serves TLS), and an operator or key it does not know fails the request, never opens it.

A third gap is not patched but avoided in the modules: moto does not implement MonitorInstances (500,
retried by the provider for 20 minutes); the instances get detailed monitoring from their launch template.
"""

from __future__ import annotations

import fnmatch
import json
import sys
from typing import Any

#: Whether this server speaks TLS (main() sets it from its arguments): aws:SecureTransport of each request.
SECURE = {"transport": False}


def apply_fixes() -> None:
    from moto.autoscaling.models import AutoScalingBackend
    from moto.ec2.models import instances, launch_templates, security_groups

    def description(self: Any) -> str | None:
        return self.ip_range.get("Description") or (self.source_group or {}).get("Description")

    security_groups.SecurityGroupRule.description = property(description)  # type: ignore[method-assign,assignment]

    create_version = launch_templates.LaunchTemplate.create_version

    def create_version_without_template_tags(self: Any, data: dict[str, Any], description: str) -> Any:
        specs = [s for s in data.get("TagSpecifications") or [] if s.get("ResourceType") != "launch-template"]
        data = {k: v for k, v in data.items() if k != "TagSpecifications"}
        if specs:
            data["TagSpecifications"] = specs
        return create_version(self, data, description)

    launch_templates.LaunchTemplate.create_version = create_version_without_template_tags  # type: ignore[method-assign]

    set_protection = AutoScalingBackend.set_instance_protection

    def set_protection_and_reconcile(
        self: Any, group_name: str, instance_ids: list[str], protected_from_scale_in: bool | None
    ) -> None:
        set_protection(self, group_name, instance_ids, protected_from_scale_in)
        if not protected_from_scale_in:
            group = self.autoscaling_groups[group_name]
            self.set_desired_capacity(group_name, group.desired_capacity)

    AutoScalingBackend.set_instance_protection = set_protection_and_reconcile  # type: ignore[method-assign]

    terminate = instances.Instance.terminate

    def terminate_and_release_interfaces(self: Any) -> Any:
        state = terminate(self)
        # The interface forgets the instance (the instance keeps its record of it: moto describes a
        # terminated instance's private address from it).
        for nic in self.nics.values():
            if not nic.delete_on_termination:
                nic.instance, nic.attachment_id, nic.attach_time = None, None, None
                nic.device_index, nic.status = None, "available"
        return state

    instances.Instance.terminate = terminate_and_release_interfaces  # type: ignore[method-assign]

    from moto.iam.access_control import PermissionResult
    from moto.s3.models import FakeBucket

    def as_list(value: Any) -> list[str]:
        return [value] if isinstance(value, str) else list(value)

    def holds(conditions: dict[str, dict[str, Any]]) -> bool:
        context = {"aws:securetransport": "true" if SECURE["transport"] else "false"}
        for operator, pairs in conditions.items():
            if operator not in ("Bool", "StringEquals"):
                raise NotImplementedError(f"bucket policy condition operator {operator}: not evaluated here")
            for key, values in pairs.items():
                if key.lower() not in context:
                    raise NotImplementedError(f"bucket policy condition key {key}: not evaluated here")
                wanted = [str(v).lower() if operator == "Bool" else str(v) for v in as_list(values)]
                if context[key.lower()] not in wanted:
                    return False
        return True

    def get_permission(self: Any, action: str, resource: str) -> Any:
        """AWS's evaluation of a bucket policy for one object call: an explicit Deny wins, then an Allow."""
        if self.policy is None:
            return PermissionResult.NEUTRAL
        document = json.loads(self.policy.decode() if isinstance(self.policy, bytes) else self.policy)
        statements = document["Statement"]
        result = PermissionResult.NEUTRAL
        for s in [statements] if isinstance(statements, dict) else statements:
            if s.get("Principal") not in ("*", {"AWS": "*"}):
                raise NotImplementedError("bucket policy principals other than *: not evaluated here")
            if not any(fnmatch.fnmatchcase(action, a) for a in as_list(s["Action"])):
                continue
            if not any(fnmatch.fnmatchcase(resource, r) for r in as_list(s["Resource"])):
                continue
            if not holds(s.get("Condition", {})):
                continue
            if s["Effect"] == "Deny":
                return PermissionResult.DENIED
            result = PermissionResult.PERMITTED
        return result

    FakeBucket.get_permission = get_permission  # type: ignore[method-assign]


def main(argv: list[str]) -> None:
    SECURE["transport"] = any(a in ("-s", "--ssl", "-c", "--ssl-cert") for a in argv)
    apply_fixes()
    from moto.server import main as moto_main

    moto_main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
