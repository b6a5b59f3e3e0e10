"""Tags that tie cloud resources to a Titus cluster.

Terraform sets these on the agent autoscaling groups and the capacity controller finds the groups by
them, so both sides read this one definition (terraform tests parse the HCL and compare to it).
"""

from typing import Final

#: Tag whose value is the cluster name; every resource of a cluster carries it.
CLUSTER_TAG: Final = "titus:cluster"
#: Tag whose value is the agent tier of an autoscaling group.
TIER_TAG: Final = "titus:tier"
#: Tag whose value says which component an instance runs (master, agent, zookeeper, cassandra, mesos).
ROLE_TAG: Final = "titus:role"

TIER_CRITICAL: Final = "critical"
TIER_FLEX: Final = "flex"
TIERS: Final = (TIER_CRITICAL, TIER_FLEX)
