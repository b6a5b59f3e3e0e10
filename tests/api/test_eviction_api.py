"""Titus's eviction API over real HTTP against a real master: shapes, refusals with reasons, bad input."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import requests

from master.server import MasterServer
from shared.config import ConfigError
from tests.conftest import API_TOKEN, RunningMaster, free_port, service_job, wait_for
from titus.cli import _master_config


def test_job_quota_is_shaped_as_titus_eviction_quota(shared_master: RunningMaster) -> None:
    budget = {"availabilityPercentageLimit": {"percentageOfHealthyContainers": 50}, "rateUnlimited": {}}
    r = shared_master.api("POST", "/api/v3/jobs", json=service_job(desired=2, disruptionBudget=budget))
    job_id = r.json()["id"]
    quota = shared_master.api("GET", f"/api/v3/eviction/quotas/jobs/{job_id}")
    assert quota.status_code == 200
    # No agent: nothing is Started, so nothing may be evicted, and the message says why.
    assert quota.json() == {
        "target": {"jobId": job_id},
        "quota": 0,
        "message": "availabilityPercentageLimit: too few tasks started: desired=2, started=0, minimum=1",
    }


def test_system_tier_and_capacity_group_quotas(shared_master: RunningMaster) -> None:
    system = shared_master.api("GET", "/api/v3/eviction/quotas/system").json()
    assert system["target"] == {"system": {}} and system["quota"] == 50
    for tier, wire in (("flex", "Flex"), ("Critical", "Critical")):
        doc = shared_master.api("GET", f"/api/v3/eviction/quotas/tiers/{tier}").json()
        assert doc["target"] == {"tier": wire} and isinstance(doc["quota"], int)
    group = shared_master.api("GET", "/api/v3/eviction/quotas/capacityGroups/DEFAULT").json()
    assert group["target"] == {"capacityGroup": "DEFAULT"}


def test_bad_and_unknown_targets(shared_master: RunningMaster) -> None:
    r = shared_master.api("GET", "/api/v3/eviction/quotas/tiers/gold")
    assert r.status_code == 400 and r.json()["fields"][0]["path"] == "tier"
    assert shared_master.api("GET", "/api/v3/eviction/quotas/jobs/nope").status_code == 404
    assert shared_master.api("GET", "/api/v3/eviction/quotas/capacityGroups/nope").status_code == 404
    assert (
        shared_master.api("DELETE", "/api/v3/eviction/tasks/nope", params={"reason": "x"}).status_code == 404
    )
    r = shared_master.api("DELETE", "/api/v3/eviction/tasks/nope", params={"reason": "x" * 2000})
    assert r.status_code == 400 and r.json()["fields"][0]["path"] == "reason"


def test_the_eviction_api_takes_the_api_token_only(shared_master: RunningMaster) -> None:
    import requests

    from tests.conftest import AGENT_TOKEN

    for headers in ({}, {"Authorization": f"Bearer {AGENT_TOKEN}"}):
        r = requests.get(shared_master.url + "/api/v3/eviction/quotas/system", headers=headers, timeout=10)
        assert r.status_code == 401
    r = requests.delete(shared_master.url + "/api/v3/eviction/tasks/t1", timeout=10)
    assert r.status_code == 401


def test_the_system_budget_is_a_master_setting(tmp_path: Path) -> None:
    """TITUS_SYSTEM_DISRUPTION_BURST and _RATE_PER_S, read as `titus master` reads them, reach the quota."""
    values = {"TITUS_API_TOKEN": API_TOKEN, "TITUS_INIT_CLUSTER": "true", "TITUS_SQLITE_SYNCHRONOUS": "OFF",
              "TITUS_SYSTEM_DISRUPTION_BURST": "3", "TITUS_SYSTEM_DISRUPTION_RATE_PER_S": "0.5"}
    server = MasterServer(_master_config(values, port=free_port(), data_dir=tmp_path))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.port}"
    try:
        wait_for(lambda: requests.get(url + "/healthz", timeout=1).status_code == 200, what="master /healthz")
        system = requests.get(url + "/api/v3/eviction/quotas/system", timeout=10,
                              headers={"Authorization": f"Bearer {API_TOKEN}"}).json()
        assert system["quota"] == 3 and "3 of 3" in system["message"], system
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.mark.parametrize(("name", "raw", "says"), [
    ("TITUS_SYSTEM_DISRUPTION_BURST", "0", "at least 1"),
    ("TITUS_SYSTEM_DISRUPTION_BURST", "lots", "must be an integer"),
    ("TITUS_SYSTEM_DISRUPTION_RATE_PER_S", "-1", "at least 0"),
])
def test_a_bad_system_budget_setting_is_refused_by_name(name: str, raw: str, says: str) -> None:
    with pytest.raises(ConfigError, match=f"{name}.*{says}|{says}.*{name}|{name} {says}"):
        _master_config({"TITUS_API_TOKEN": API_TOKEN, name: raw})
