"""Titus's eviction API over real HTTP against a real master: shapes, refusals with reasons, bad input."""

from __future__ import annotations

from tests.conftest import RunningMaster, service_job


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
