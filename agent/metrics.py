"""Prometheus metrics of one agent, served on `TITUS_AGENT_METRICS_PORT` (off by default).

The master never connects to agents (DESIGN.md #1), so this endpoint is for a local scraper (a node
exporter's neighbour) and binds to 127.0.0.1 unless `TITUS_AGENT_METRICS_ADDR` says otherwise. Everything
is read from the agent's own state at scrape time; only the report counter is kept by the agent itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from agent.agent import Agent


class AgentCollector(Collector):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        a = self.agent
        with a.lock:
            locals_ = list(a.tasks.values())
            queued = len(a.updates)
        tasks = GaugeMetricFamily("titus_agent_tasks", "Tasks this agent holds, by phase", labels=["phase"])
        phases = {"starting": 0, "running": 0, "killing": 0, "finished_unreported": 0}
        for t in locals_:
            if t.finished is not None:
                phases["finished_unreported"] += 1
            elif t.killing:
                phases["killing"] += 1
            elif t.starting:
                phases["starting"] += 1
            else:
                phases["running"] += 1
        for phase, n in phases.items():
            tasks.add_metric([phase], n)
        yield tasks
        yield GaugeMetricFamily(
            "titus_agent_updates_queued", "Task updates not yet acknowledged", value=queued
        )
        yield CounterMetricFamily(
            "titus_agent_reports", "Status reports (heartbeats) the master accepted", value=a.reports_sent
        )
        yield GaugeMetricFamily(
            "titus_agent_desired_version", "Version of the last desired set received", value=a.version
        )
        age = time.monotonic() - a.last_report_at if a.last_report_at else float("nan")
        yield GaugeMetricFamily(
            "titus_agent_last_report_age_seconds",
            "Seconds since the master last accepted a report",
            value=age,
        )


def registry_for(agent: Agent) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(agent))
    return registry


def serve(agent: Agent, port: int, addr: str = "127.0.0.1") -> None:
    """Start the exposition server on a daemon thread."""
    start_http_server(port, addr=addr, registry=registry_for(agent))


def render(agent: Agent) -> bytes:
    return generate_latest(registry_for(agent))
