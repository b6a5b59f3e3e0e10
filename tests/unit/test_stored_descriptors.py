"""Jobs stored before the wire followed Titus to the letter still load: what was accepted once stays
readable (legacy day sets become Titus's days), while the API edge refuses the same fields in new jobs."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from master.api import mapper
from master.api.errors import field_errors
from master.api.models import STORED, JobDescriptor
from master.core import states
from master.core.entities import Job
from master.core.states import Status, StatusMachine
from tests.api import titus_proto as proto
from tests.conftest import service_job

LEGACY: dict[str, Any] = service_job(
    container={
        "volumeMounts": [{"volumeName": "data", "mountPath": "/data"}],
        "resources": {"efsMounts": [{"efsId": "fs-1", "mountPoint": "/efs", "mountPerm": "RO"}]},
    },
    networkConfiguration={"networkMode": "Ipv6AndIpv4"},
    disruptionBudget={
        "availabilityPercentageLimit": {"percentageOfHealthyContainers": 90},
        "timeWindows": [{"days": ["Weekdays", "Saturday"]}, {"days": ["All"]}],
    },
)


def test_the_edge_refuses_what_a_stored_job_may_still_carry() -> None:
    with pytest.raises(ValidationError) as err:
        JobDescriptor.model_validate(LEGACY)
    paths = {f["path"]: f["reason"] for f in field_errors(err.value)}
    # container's own rule (volumeMounts) waits for its fields (resources) to be valid, as pydantic does
    assert set(paths) == {"container.resources.efsMounts", "networkConfiguration.networkMode",
                          "disruptionBudget.timeWindows.0.days.0",
                          "disruptionBudget.timeWindows.1.days.0"}, paths
    assert all("not supported" in paths[p] for p in paths if "timeWindows" not in p)
    mounts = service_job(container={"volumeMounts": [{"volumeName": "data", "mountPath": "/data"}]})
    with pytest.raises(ValidationError, match="not supported"):
        JobDescriptor.model_validate(mounts)
    assert JobDescriptor.model_validate(mounts, context=STORED).container.volumeMounts


def test_a_stored_legacy_job_loads_and_answers_as_a_titus_job() -> None:
    descriptor = JobDescriptor.model_validate(LEGACY, context=STORED)
    windows = descriptor.to_json()["disruptionBudget"]["timeWindows"]
    assert windows[0]["days"] == ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
    assert len(windows[1]["days"]) == 7
    job = Job("j1", descriptor, StatusMachine(states.JOB_TRANSITIONS,
                                             Status(states.JOB_ACCEPTED, "normal", "", 1)), 1, version=3)
    again = Job.from_record(job.to_record(), 3)
    wire = mapper.job_to_wire(again)
    proto.parse_strict(wire, "Job")
    assert proto.check_proto3_json(wire, "Job") == []
    assert wire["jobDescriptor"]["container"]["volumeMounts"][0]["mountPath"] == "/data"
