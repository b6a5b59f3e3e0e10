"""GET /metrics: the Prometheus exposition reflects what the master did, parsed with prometheus_client."""

from __future__ import annotations

import requests
from prometheus_client.parser import text_string_to_metric_families

from master.events import TERM_SHIFT
from tests.conftest import API_TOKEN, RunningMaster, batch_job, wait_for


def _samples(master: RunningMaster) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    assert requests.get(master.url + "/metrics", timeout=10).status_code == 401  # counts need the token
    r = requests.get(master.url + "/metrics", timeout=10, headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_count_submissions_tasks_heartbeats_and_commits(master: RunningMaster) -> None:
    reg = {"id": "m1", "resources": {"cpu": 1, "memoryMB": 1024, "diskMB": 10_000, "networkMbps": 1000}}
    session = master.agent("POST", "/api/v3/agent/instances/register", json=reg).json()["sessionEpoch"]
    for _ in range(3):
        assert master.api("POST", "/api/v3/jobs", json=batch_job(size=2)).status_code == 202
    big = batch_job(container={"resources": {"cpu": 64}})
    assert master.api("POST", "/api/v3/jobs", json=big).status_code == 202
    for _ in range(2):
        r = master.agent("POST", "/api/v3/agent/instances/m1/status", json={"sessionEpoch": session})
        assert r.status_code == 200, r.text

    def placed() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        s = _samples(master)
        return s if s.get(("titus_tasks", (("state", "Launched"),))) == 2 else {}

    s = wait_for(placed, what="two tasks placed on the 1-cpu agent")
    assert s[("titus_job_submissions_total", ())] == 4
    assert s[("titus_tasks", (("state", "Accepted"),))] == 5  # 7 tasks, 2 placed
    assert s[("titus_agents", (("state", "Registered"),))] == 1
    assert s[("titus_agent_reports_total", ())] == 2
    assert s[("titus_tasks_placed_total", ())] == 2
    assert s[("titus_scheduling_pass_seconds_count", ())] >= 1
    assert s[("titus_store_commit_seconds_count", ())] >= 1
    assert s[("titus_store_commit_batch_size_sum", ())] >= 4
    submit = ("titus_http_request_duration_seconds_count",
              (("method", "POST"), ("route", "/api/v3/jobs"), ("status", "202")))
    assert s[submit] == 4
    assert s[("titus_domain_events_total", (("kind", "task"), ("state", "Launched")))] == 2
    # numbered from this leader term's base (EventLog.start_term): 4 jobs, 7 tasks, 2 placements at least
    base = master.server.manager.epoch << TERM_SHIFT
    assert s[("titus_event_seq", ())] - base >= 4 + 7 + 2
