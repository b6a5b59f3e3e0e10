"""Bad job descriptors are answered 400 with the offending field's path, and nothing is stored."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import RunningMaster, batch_job, service_job


def _without(path: str, job: dict[str, Any]) -> dict[str, Any]:
    node = job
    *parents, leaf = path.split(".")
    for p in parents:
        node = node[p]
    del node[leaf]
    return job


INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("bad-email", batch_job(owner={"teamEmail": "nobody"}), "owner.teamEmail"),
    ("missing-app-name", _without("applicationName", batch_job()), "applicationName"),
    ("app-name-spaces", batch_job(applicationName="has spaces"), "applicationName"),
    ("cpu-zero", batch_job(container={"resources": {"cpu": 0}}), "container.resources.cpu"),
    ("cpu-too-big", batch_job(container={"resources": {"cpu": 1000}}), "container.resources.cpu"),
    ("cpu-string", batch_job(container={"resources": {"cpu": "2"}}), "container.resources.cpu"),
    ("memory-negative", batch_job(container={"resources": {"memoryMB": -1}}), "container.resources.memoryMB"),
    ("memory-float", batch_job(container={"resources": {"memoryMB": 1.5}}), "container.resources.memoryMB"),
    ("disk-negative", batch_job(container={"resources": {"diskMB": -1}}), "container.resources.diskMB"),
    (
        "network-huge",
        batch_job(container={"resources": {"networkMbps": 10**9}}),
        "container.resources.networkMbps",
    ),
    ("gpu-negative", batch_job(container={"resources": {"gpu": -2}}), "container.resources.gpu"),
    ("unknown-resource", batch_job(container={"resources": {"tpu": 1}}), "container.resources.tpu"),
    (
        "image-tag-and-digest",
        batch_job(container={"image": {"name": "busybox", "tag": "1", "digest": "sha256:" + "a" * 64}}),
        "container.image.tag|digest",
    ),
    (
        "image-neither",
        batch_job(container={"image": {"name": "busybox", "tag": None}}),
        "container.image.tag|digest",
    ),
    (
        "image-bad-digest",
        batch_job(container={"image": {"name": "busybox", "tag": None, "digest": "md5:x"}}),
        "container.image.digest",
    ),
    ("image-uppercase", batch_job(container={"image": {"name": "BusyBox"}}), "container.image.name"),
    ("command-not-list", batch_job(container={"command": "echo hi"}), "container.command"),
    ("env-bad-name", batch_job(container={"env": {"1BAD": "x"}}), "container.env.1BAD.[key]"),
    ("env-not-string", batch_job(container={"env": {"GOOD": 5}}), "container.env.GOOD"),
    ("both-batch-and-service", {**batch_job(), "service": service_job()["service"]}, "batch|service"),
    ("neither-batch-nor-service", _without("batch", batch_job()), "batch|service"),
    ("batch-size-zero", batch_job(batch={"size": 0}), "batch.size"),
    ("batch-size-huge", batch_job(batch={"size": 100_000}), "batch.size"),
    ("runtime-limit-huge", batch_job(batch={"runtimeLimitSec": "2592001"}), "batch.runtimeLimitSec"),
    (
        "retry-two-kinds",
        batch_job(batch={"retryPolicy": {"immediate": {"retries": 1}, "delayed": {"delayMs": 5}}}),
        "batch.retryPolicy.immediate|delayed|exponentialBackOff",
    ),
    (
        "retry-negative",
        batch_job(batch={"retryPolicy": {"immediate": {"retries": -1}}}),
        "batch.retryPolicy.immediate.retries",
    ),
    (
        "backoff-max-below-initial",
        batch_job(
            batch={
                "retryPolicy": {
                    "immediate": None,
                    "exponentialBackOff": {"initialDelayMs": 1000, "maxDelayIntervalMs": 10},
                }
            }
        ),
        "batch.retryPolicy.exponentialBackOff.maxDelayIntervalMs",
    ),
    (
        "capacity-unordered",
        service_job(service={"capacity": {"min": 3, "desired": 2, "max": 5}}),
        "service.capacity.desired",
    ),
    ("capacity-negative", service_job(service={"capacity": {"min": -1}}), "service.capacity.min"),
    ("unknown-top-level", batch_job(priority=5), "priority"),
    ("unknown-container-field", batch_job(container={"privileged": True}), "container.privileged"),
    ("reserved-attribute", batch_job(attributes={"titus.internal": "x"}), "attributes.titus.internal"),
    (
        "security-groups-too-many",
        batch_job(container={"securityProfile": {"securityGroups": list("abcdefg")}}),
        "container.securityProfile.securityGroups",
    ),
    (
        "network-mode-unknown",
        batch_job(networkConfiguration={"networkMode": "Ipv7"}),
        "networkConfiguration.networkMode",
    ),
    (
        "budget-two-policies",
        batch_job(disruptionBudget={"selfManaged": {"relocationTimeMs": 1}, "relocationLimit": {"limit": 1}}),
        "disruptionBudget",
    ),
    (
        "constraint-expression",
        batch_job(container={"hardConstraints": {"expression": "zone == a"}}),
        "container.hardConstraints.expression",
    ),
]


def _clean(job: dict[str, Any]) -> dict[str, Any]:
    """Drop keys set to None by the builders, so 'None' means 'absent'."""
    if isinstance(job, dict):
        return {k: _clean(v) for k, v in job.items() if v is not None}
    return job


@pytest.mark.parametrize(("spec", "path"), [(s, p) for _, s, p in INVALID], ids=[i for i, _, _ in INVALID])
def test_invalid_job_is_400_naming_the_field(
    shared_master: RunningMaster, spec: dict[str, Any], path: str
) -> None:
    master = shared_master
    r = master.api("POST", "/api/v3/jobs", json=_clean(spec))
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"].startswith("invalid job descriptor")
    paths = [f["path"] for f in body["fields"]]
    assert path in paths, paths
    assert all(f["reason"] for f in body["fields"])
    assert master.api("GET", "/api/v3/jobs").json()["items"] == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b"", "empty body"),
    ],
)
def test_malformed_bodies(shared_master: RunningMaster, body: bytes, reason: str) -> None:
    master = shared_master
    r = master.api("POST", "/api/v3/jobs", data=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["fields"] == [{"path": "(body)", "reason": reason}]


def test_valid_fields_that_are_only_stored_round_trip(master: RunningMaster) -> None:
    extras = {
        "disruptionBudget": {
            "availabilityPercentageLimit": {"percentageOfHealthyContainers": 95},
            "ratePerInterval": {"intervalMs": "60000", "limitPerInterval": 2},
        },
        "networkConfiguration": {"networkMode": "UnknownNetworkMode"},
    }
    container = {
        "securityProfile": {"securityGroups": ["sg-1"], "iamRole": "arn:aws:iam::1:role/x"},
        "attributes": {"team.note": "x"},
    }
    job = batch_job(container=container, **extras)
    r = master.api("POST", "/api/v3/jobs", json=job)
    assert r.status_code == 202, r.text
    stored = master.api("GET", f"/api/v3/jobs/{r.json()['id']}").json()["jobDescriptor"]
    assert stored["networkConfiguration"] == {"networkMode": "UnknownNetworkMode"}
    # uint64 as a string on output, as proto3 JSON writes it
    assert stored["disruptionBudget"]["ratePerInterval"] == {"intervalMs": "60000", "limitPerInterval": 2}
    assert stored["container"]["securityProfile"]["securityGroups"] == ["sg-1"]
    assert stored["container"]["attributes"] == {"team.note": "x"}


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic dGVzdA==", "Bearer "])
def test_api_requires_the_api_token(shared_master: RunningMaster, header: str | None) -> None:
    import requests

    master = shared_master
    headers = {"Authorization": header} if header is not None else {}
    for method, path in [
        ("GET", "/api/v3/jobs"),
        ("POST", "/api/v3/jobs"),
        ("GET", "/api/v3/tasks"),
        ("GET", "/api/v3/agent/instances"),
    ]:
        r = requests.request(method, master.url + path, headers=headers, json=batch_job(), timeout=10)
        assert r.status_code == 401, (method, path)
        assert r.json()["error"].startswith("missing or invalid bearer token")


def test_agent_token_is_not_an_api_token_and_vice_versa(master: RunningMaster) -> None:
    assert master.agent("GET", "/api/v3/jobs").status_code == 401
    reg = {"id": "a1", "resources": {"cpu": 1, "memoryMB": 512}}
    assert master.api("POST", "/api/v3/agent/instances/register", json=reg).status_code == 401
    assert master.agent("POST", "/api/v3/agent/instances/register", json=reg).status_code == 200
