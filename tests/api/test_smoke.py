from tests.conftest import RunningMaster, batch_job, wait_for


def test_submit_and_get(master: RunningMaster) -> None:
    r = master.api("POST", "/api/v3/jobs", json=batch_job(size=2))
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    job = master.api("GET", f"/api/v3/jobs/{job_id}").json()
    assert job["status"]["state"] == "Accepted"
    tasks = master.api("GET", "/api/v3/tasks", params={"jobIds": job_id}).json()["items"]
    assert len(tasks) == 2
    assert {t["status"]["state"] for t in tasks} == {"Accepted"}
    pending = wait_for(
        lambda: master.api("GET", f"/api/v3/tasks/{tasks[0]['id']}").json()["taskContext"].get(
            "task.pendingReason"
        ),
        what="a pending reason",
    )
    assert pending == "no Active agents in the flex tier"
