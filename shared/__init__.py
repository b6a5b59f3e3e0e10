"""Code every component uses and none owns: the KEY=VALUE config parser, JSON logging, the HA test harness.

It lives apart from the CLI package (titus/) so the agent, the master and the capacity controller do not
import the CLI to read their configuration.
"""
