"""ObserveJobs / ObserveJob over real HTTP: server-sent events whose data are Titus JobChangeNotifications.

Each message is parsed strictly into Titus's JobChangeNotification (tests/api/titus_proto.py); the stream
is checked against the master's state: snapshot, snapshotEnd, every change in per-entity version order,
keep-alives, resumption from Last-Event-ID, and the final state of every job after 1,000 concurrent changes.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.api import titus_proto as proto
from tests.conftest import RunningMaster, batch_job, service_job, wait_for

Frame = tuple[int | None, dict[str, Any]]


class Subscriber:
    """Reads a text/event-stream on a thread of its own; frames are (SSE id, parsed message)."""

    def __init__(self, master: RunningMaster, path: str = "/api/v3/jobs/observe",
                 last_event_id: int | None = None, **params: str) -> None:
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self.resp = master.api("GET", path, params={"keepAliveMs": "200", **params}, headers=headers,
                               stream=True)
        assert self.resp.status_code == 200, self.resp.text
        assert self.resp.headers["Content-Type"].startswith("text/event-stream")
        self.frames: queue.Queue[Frame | None] = queue.Queue()
        self.ended = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        seq: int | None = None
        try:
            for line in self.resp.iter_lines(decode_unicode=True):
                if line.startswith("id: "):
                    seq = int(line[4:])
                elif line.startswith("data: "):
                    import json

                    message = json.loads(line[6:])
                    proto.parse_strict(message, "JobChangeNotification")
                    assert proto.check_proto3_json(message, "JobChangeNotification") == [], message
                    self.frames.put((seq, message))
                    seq = None
        except Exception as exc:  # a closed connection ends the read; anything else is a test failure
            if not self.ended.is_set():
                self.frames.put((None, {"error": repr(exc)}))
        finally:
            self.ended.set()
            self.frames.put(None)

    def next(self, timeout: float = 15) -> Frame | None:
        frame = self.frames.get(timeout=timeout)
        if frame is not None:
            assert "error" not in frame[1], frame
        return frame

    def until(self, done: Callable[[dict[str, Any]], bool], timeout: float = 30,
              skip_keep_alives: bool = True) -> list[Frame]:
        got: list[Frame] = []
        while True:
            frame = self.next(timeout)
            assert frame is not None, f"stream ended before the expected message; got {got}"
            if skip_keep_alives and "keepAliveResponse" in frame[1]:
                continue
            got.append(frame)
            if done(frame[1]):
                return got

    def close(self) -> None:
        self.ended.set()
        self.resp.close()


def _kinds(frames: list[Frame]) -> list[str]:
    return [next(k for k in ("jobUpdate", "taskUpdate", "snapshotEnd", "keepAliveResponse") if k in m)
            for _, m in frames]


def _submit(master: RunningMaster, job: dict[str, Any]) -> str:
    r = master.api("POST", "/api/v3/jobs", json=job)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def _job_version(message: dict[str, Any]) -> int:
    return int(message["jobUpdate"]["job"]["version"]["timestamp"])


def test_snapshot_then_changes_then_keep_alives(master: RunningMaster) -> None:
    service = _submit(master, service_job(desired=2))
    batch = _submit(master, batch_job(size=1))
    sub = Subscriber(master)
    try:
        snapshot = sub.until(lambda m: "snapshotEnd" in m)
        assert sorted(_kinds(snapshot)) == sorted(["jobUpdate"] * 2 + ["taskUpdate"] * 3 + ["snapshotEnd"])
        assert [seq for seq, _ in snapshot[:-1]] == [None] * 5 and snapshot[-1][0] is not None
        assert {m["jobUpdate"]["job"]["id"] for _, m in snapshot if "jobUpdate" in m} == {service, batch}
        end = snapshot[-1][0]

        r = master.api("PUT", f"/api/v3/jobs/{service}/attributes", json={"attributes": {"stage": "canary"}})
        assert r.status_code == 200, r.text
        (seq, change), = sub.until(lambda m: "jobUpdate" in m)
        assert seq is not None and end is not None and seq > end
        assert change["jobUpdate"]["job"]["jobDescriptor"]["attributes"] == {"stage": "canary"}

        task_id = master.api("GET", "/api/v3/tasks", params={"jobIds": batch}).json()["items"][0]["id"]
        assert master.api("DELETE", f"/api/v3/tasks/{task_id}").status_code == 200
        killed = sub.until(lambda m: "taskUpdate" in m and m["taskUpdate"]["task"]["id"] == task_id
                           and m["taskUpdate"]["task"]["status"]["state"] == "Finished")
        assert killed[-1][1]["taskUpdate"]["task"]["status"]["reasonCode"] == "killed"
        assert any("keepAliveResponse" in m for _, m in
                   sub.until(lambda m: "keepAliveResponse" in m, skip_keep_alives=False))
    finally:
        sub.close()


def test_filters_of_find_apply(master: RunningMaster) -> None:
    wanted = _submit(master, service_job(desired=1, applicationName="wanted"))
    _submit(master, service_job(desired=1, applicationName="other"))
    sub = Subscriber(master, applicationName="wanted")
    try:
        snapshot = sub.until(lambda m: "snapshotEnd" in m)
        jobs = {m["jobUpdate"]["job"]["id"] for _, m in snapshot if "jobUpdate" in m}
        tasks = {m["taskUpdate"]["task"]["jobId"] for _, m in snapshot if "taskUpdate" in m}
        assert jobs == {wanted} and tasks == {wanted}
        other = _submit(master, service_job(desired=1, applicationName="other"))
        again = _submit(master, service_job(desired=1, applicationName="wanted"))
        seen = sub.until(lambda m: "jobUpdate" in m and m["jobUpdate"]["job"]["id"] == again)
        assert other not in {m.get("jobUpdate", {}).get("job", {}).get("id") for _, m in seen}
    finally:
        sub.close()


def test_observe_job_ends_with_the_job(master: RunningMaster) -> None:
    job_id = _submit(master, batch_job(size=2))
    sub = Subscriber(master, f"/api/v3/jobs/{job_id}/observe")
    try:
        assert _kinds(sub.until(lambda m: "snapshotEnd" in m)) == ["jobUpdate", "taskUpdate", "taskUpdate",
                                                                   "snapshotEnd"]
        assert master.api("DELETE", f"/api/v3/jobs/{job_id}").status_code == 200
        last = sub.until(lambda m: "jobUpdate" in m
                         and m["jobUpdate"]["job"]["status"]["state"] == "Finished")
        task_states = {m["taskUpdate"]["task"]["status"]["state"] for _, m in last if "taskUpdate" in m}
        assert "Finished" in task_states
        assert sub.next() is None  # the stream completes after the job's final update, as Titus's does
    finally:
        sub.close()
    finished = Subscriber(master, f"/api/v3/jobs/{job_id}/observe")
    try:
        frames = []
        while (frame := finished.next()) is not None:
            frames.append(frame)
        assert _kinds(frames) == ["jobUpdate", "snapshotEnd"]
        assert frames[0][1]["jobUpdate"] == {"job": frames[0][1]["jobUpdate"]["job"], "archived": True}
    finally:
        finished.close()
    r = master.api("GET", "/api/v3/jobs/no-such-job/observe")
    assert r.status_code == 404 and r.json()["error"]


def test_a_reconnecting_client_resumes_from_its_last_event_id(master: RunningMaster) -> None:
    job_id = _submit(master, service_job(desired=0))
    first = Subscriber(master)
    try:
        last = first.until(lambda m: "snapshotEnd" in m)[-1][0]
    finally:
        first.close()
    for n in range(3):
        r = master.api("PUT", f"/api/v3/jobs/{job_id}/attributes", json={"attributes": {"n": str(n)}})
        assert r.status_code == 200
    resumed = Subscriber(master, last_event_id=last)
    try:
        frames = resumed.until(lambda m: "jobUpdate" in m
                               and m["jobUpdate"]["job"]["jobDescriptor"]["attributes"].get("n") == "2")
        assert "snapshotEnd" not in _kinds(frames)  # no new snapshot: the log still had every change
        seqs = [seq for seq, _ in frames if seq is not None]
        assert len(seqs) == len(frames) and last is not None
        assert all(s > last for s in seqs) and seqs == sorted(seqs)
    finally:
        resumed.close()
    r = master.api("GET", "/api/v3/jobs/observe", headers={"Last-Event-ID": "yesterday"})
    assert r.status_code == 400 and r.json()["fields"][0]["path"] == "Last-Event-ID"
    # A sequence this master never issued: a fresh snapshot rather than silence.
    future = Subscriber(master, last_event_id=10**9)
    try:
        assert "snapshotEnd" in _kinds(future.until(lambda m: "snapshotEnd" in m))
    finally:
        future.close()


@pytest.mark.timeout(300)
def test_1000_concurrent_changes_arrive_in_order_and_end_in_the_final_state(master: RunningMaster) -> None:
    jobs = [_submit(master, service_job(desired=0, applicationName=f"load{n}")) for n in range(10)]
    sub = Subscriber(master)
    try:
        sub.until(lambda m: "snapshotEnd" in m)

        def change(i: int) -> int:
            job_id = jobs[i % len(jobs)]
            # A key of its own per change: a lost update would show as a missing key.
            r = master.api("PUT", f"/api/v3/jobs/{job_id}/attributes", json={"attributes": {f"k{i}": "x"}})
            return r.status_code

        with ThreadPoolExecutor(max_workers=8) as pool:
            assert set(pool.map(change, range(1000))) == {200}
        final = {j: master.api("GET", f"/api/v3/jobs/{j}").json() for j in jobs}
        for n, j in enumerate(jobs):
            assert set(final[j]["jobDescriptor"]["attributes"]) == {f"k{i}" for i in range(n, 1000, 10)}
        want = {j: int(doc["version"]["timestamp"]) for j, doc in final.items()}
        seen: dict[str, list[int]] = {j: [] for j in jobs}
        last: dict[str, dict[str, Any]] = {}

        def caught_up(message: dict[str, Any]) -> bool:
            if "jobUpdate" in message:
                job = message["jobUpdate"]["job"]
                seen[job["id"]].append(_job_version(message))
                last[job["id"]] = job
            return all(seen[j] and seen[j][-1] == want[j] for j in jobs)

        sub.until(caught_up, timeout=120)
        for j in jobs:
            assert seen[j] == sorted(set(seen[j])), f"job {j}: versions out of order or repeated"
            assert last[j] == final[j]  # the last update is exactly the job as it now is
        assert sum(len(v) for v in seen.values()) <= 1000  # no update without a change behind it
    finally:
        sub.close()


def test_a_moved_task_is_flagged_on_its_first_update_under_the_target(master: RunningMaster) -> None:
    from tests.api.test_titus_compat import Agent

    agent = Agent(master)
    source = _submit(master, service_job(desired=1, applicationName="src"))
    target = _submit(master, service_job(desired=0, applicationName="dst"))
    task_id = master.api("GET", "/api/v3/tasks", params={"jobIds": source}).json()["items"][0]["id"]
    sub = Subscriber(master)
    try:
        sub.until(lambda m: "snapshotEnd" in m)
        wait_for(lambda: task_id in agent.assigned(), what="the task placed")
        agent.start([task_id])
        sub.until(lambda m: "taskUpdate" in m and m["taskUpdate"]["task"]["status"]["state"] == "Started")
        r = master.api("POST", "/api/v3/tasks/move",
                       json={"sourceJobId": source, "targetJobId": target, "taskId": task_id})
        assert r.status_code == 200, r.text
        (_, moved), = [f for f in sub.until(lambda m: "taskUpdate" in m) if "taskUpdate" in f[1]]
        assert moved["taskUpdate"]["movedFromAnotherJob"] is True
        assert moved["taskUpdate"]["task"]["jobId"] == target
        assert moved["taskUpdate"]["task"]["taskContext"]["task.movedFromJob"] == source
    finally:
        sub.close()
