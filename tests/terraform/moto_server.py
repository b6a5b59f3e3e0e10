"""moto_server with two of moto's read-back bugs fixed, so a second `terraform plan` can be empty.

Run as `python -m tests.terraform.moto_server -H 127.0.0.1 -p PORT` (the arguments of `moto_server`).
Each fix makes moto answer what AWS answers; none adds behaviour AWS lacks. Both were found because the
second plan after an apply against plain moto 5.2 showed drift that AWS does not produce:

1. CreateLaunchTemplate with TagSpecifications for the template itself (`resource_type =
   "launch-template"`, which is how the provider tags the template) also lands in moto's *version data*,
   so DescribeLaunchTemplateVersions returns a tag specification Terraform never asked for in the
   template data, and every plan wants to remove it. AWS keeps the two apart.
2. A security group rule that references another group loses its description on
   DescribeSecurityGroupRules (moto reads it only from a CIDR range), so every plan wants to add it.

A third gap is not patched but avoided in the modules: moto does not implement MonitorInstances (500,
retried by the provider for 20 minutes); the instances get detailed monitoring from their launch template.
"""

from __future__ import annotations

import sys
from typing import Any


def apply_fixes() -> None:
    from moto.ec2.models import launch_templates, security_groups

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


def main(argv: list[str]) -> None:
    apply_fixes()
    from moto.server import main as moto_main

    moto_main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
