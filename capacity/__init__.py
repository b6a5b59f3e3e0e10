"""Capacity controller: sizes the critical and flex tiers' autoscaling groups (issue 6)."""
