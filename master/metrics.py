"""Prometheus metrics of one master (`GET /metrics`), the only module here that imports prometheus_client.

Counters of what happened come from the domain events (master/events.py) and from hooks the manager and
the store call with plain numbers (`Observer`), so the core stays free of the library; gauges of what is
(tasks by state, agents, queue depths) are read from the indexes when Prometheus scrapes, never
maintained twice. Each master owns its registry, so several masters in one process (tests) do not mix.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from master.core import states
from master.events import Event

if TYPE_CHECKING:
    from master.job_manager import JobManager

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class MasterMetrics:
    """Implements the manager's and the store's `Observer` hooks and renders the exposition format."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.submissions = Counter(
            "titus_job_submissions", "Jobs accepted (durable) by this master", registry=r
        )
        self.http_latency = Histogram(
            "titus_http_request_duration_seconds",
            "HTTP request handling time by route and status (agent long polls excluded)",
            ["method", "route", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.pass_time = Histogram(
            "titus_scheduling_pass_seconds",
            "Wall time of one scheduling pass, snapshot build and placement included",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.placed = Counter("titus_tasks_placed", "Tasks the scheduler placed", registry=r)
        self.commit_time = Histogram(
            "titus_store_commit_seconds",
            "Time of one store group commit",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.commit_batch = Histogram(
            "titus_store_commit_batch_size",
            "Requests sharing one store commit (group commit)",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.heartbeats = Counter(
            "titus_agent_reports", "Agent status reports (heartbeats) handled", registry=r
        )
        self.events = Counter(
            "titus_domain_events",
            "Committed changes by entity kind and new state",
            ["kind", "state"],
            registry=r,
        )

    # ------------------------------------------------------------------------------------- hooks
    def on_event(self, event: Event) -> None:
        self.events.labels(event.kind, event.state).inc()
        if event.kind == "job" and event.version == 1:
            self.submissions.inc()

    def on_pass(self, seconds: float, placed: int) -> None:
        self.pass_time.observe(seconds)
        self.placed.inc(placed)

    def on_commit(self, seconds: float, batch: int) -> None:
        self.commit_time.observe(seconds)
        self.commit_batch.observe(batch)

    def on_report(self) -> None:
        self.heartbeats.inc()

    def on_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http_latency.labels(method, route, str(status)).observe(seconds)

    def attach(self, manager: JobManager) -> None:
        """Wire the hooks into a manager and register the gauges read from it."""
        manager.events.subscribe(self.on_event)
        manager.observer = self
        self.registry.register(_StateCollector(manager))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """Gauges read at scrape time from the manager's indexes (lock-free reads of sizes)."""

    def __init__(self, manager: JobManager) -> None:
        self.manager = manager

    def collect(self) -> Iterator[GaugeMetricFamily]:
        m = self.manager
        tasks = GaugeMetricFamily("titus_tasks", "Active tasks by state", labels=["state"])
        for state in sorted(states.TASK_ACTIVE):
            tasks.add_metric([state], m.index.count(state))
        yield tasks
        agents = GaugeMetricFamily("titus_agents", "Agents by state", labels=["state"])
        counts = {"Registered": 0, "Lost": 0, "AwaitingRegistration": 0}
        for a in list(m.agents.values()):
            counts["Lost" if a.lost else "Registered" if a.registered else "AwaitingRegistration"] += 1
        for state, n in counts.items():
            agents.add_metric([state], n)
        yield agents
        yield GaugeMetricFamily("titus_jobs_active", "Jobs not yet finished", value=len(m.jobs))
        yield GaugeMetricFamily(
            "titus_store_writes_in_flight",
            "Store batches queued and not yet durable",
            value=m.writes_in_flight,
        )
        yield GaugeMetricFamily(
            "titus_scheduler_pending_new", "Tasks waiting for the next scheduling pass", value=m.pending_new
        )
        yield GaugeMetricFamily(
            "titus_timer_entries", "Deadlines held by the timer heaps", value=m.timers.size()
        )
        yield GaugeMetricFamily(
            "titus_event_seq", "Sequence number of the last domain event", value=m.events.last_seq
        )
