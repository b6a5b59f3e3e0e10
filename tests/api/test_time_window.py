"""Finished jobs and tasks listed by when they finished (`stateSince`, `stateBefore`: our extension of
Titus's criteria), over real HTTP and through `titus job list --since`, against a real master."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.cli.harness import titus
from tests.conftest import RunningMaster, batch_job, wait_for


def _finished_job(master: RunningMaster, app: str) -> tuple[str, int]:
    """A batch job killed before it was placed (no agent): it finishes at once. Its id and finish time."""
    r = master.api("POST", "/api/v3/jobs", json=batch_job(applicationName=app))
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert master.api("DELETE", f"/api/v3/jobs/{job_id}").status_code == 200
    job = wait_for(lambda: (j := master.api("GET", f"/api/v3/jobs/{job_id}").json())["status"]["state"]
                   == "Finished" and j, what="the killed job to finish")
    return job_id, int(job["status"]["timestamp"])


def _ids(body: dict[str, Any]) -> set[str]:
    return {item["id"] for item in body["items"]}


def test_finished_jobs_and_tasks_by_the_time_they_finished(master: RunningMaster) -> None:
    early, at_early = _finished_job(master, "early")
    wait_for(lambda: int(time.time() * 1000) > at_early + 2, what="the clock to move on")
    late, at_late = _finished_job(master, "late")
    assert at_late > at_early

    def jobs(**params: Any) -> set[str]:
        r = master.api("GET", "/api/v3/jobs", params={"jobState": "Finished", **params})
        assert r.status_code == 200, r.text
        return _ids(r.json())

    assert {early, late} <= jobs()
    assert late in jobs(stateSince=at_late) and early not in jobs(stateSince=at_late)
    assert early in jobs(stateBefore=at_late) and late not in jobs(stateBefore=at_late)
    assert jobs(stateSince=at_early, stateBefore=at_early + 1) >= {early}
    r = master.api("GET", "/api/v3/tasks", params={"jobIds": f"{early},{late}", "taskStates": "Finished",
                                                   "stateSince": at_late})
    assert r.status_code == 200 and {t["jobId"] for t in r.json()["items"]} == {late}, r.text

    for params, field in (({"stateSince": "yesterday"}, "stateSince"), ({"stateBefore": "-5"}, "stateBefore"),
                          ({"stateSince": at_late, "stateBefore": at_early}, "stateSince")):
        bad = master.api("GET", "/api/v3/jobs", params={"jobState": "Finished", **params})
        assert bad.status_code == 400 and bad.json()["fields"][0]["path"] == field, bad.text

    listed = titus(master, "job", "list", "--state", "Finished", "--since", "1h", "--json")
    assert listed.exit_code == 0, listed.output
    assert {early, late} <= {j["id"] for j in json.loads(listed.stdout)}
    wrong = titus(master, "job", "list", "--since", "soon")
    assert wrong.exit_code == 2 and "not a duration such as 90s, 30m, 2h or 7d" in wrong.output
