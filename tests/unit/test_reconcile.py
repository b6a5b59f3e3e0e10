"""Table tests of the pure reconciliation (master/reconcile.py), built with small builders."""

from __future__ import annotations

from typing import Any

import pytest

from master.api.models import JobDescriptor
from master.core import states
from master.core.entities import Job, Task
from master.core.states import Status, StatusMachine
from master.reconcile import (
    Action,
    CreateTask,
    FinishJob,
    KillTask,
    reconcile,
    replacement_delay,
)
from tests.conftest import batch_job, service_job


def job(spec: dict[str, Any], state: str = states.JOB_ACCEPTED) -> Job:
    machine = StatusMachine(states.JOB_TRANSITIONS, Status(states.JOB_ACCEPTED, "normal", "", 0))
    if state == states.JOB_KILL_INITIATED:
        machine.move(state, "killed", "", 1)
    return Job("j", JobDescriptor.model_validate(spec), machine, 0)


def task(task_id: str, state: str = states.ACCEPTED, reason: str = "normal", index: int = 0, at: int = 0,
         **fields: Any) -> Task:
    machine = StatusMachine(states.TASK_TRANSITIONS, Status(states.ACCEPTED, "normal", "", 0))
    path = {
        states.ACCEPTED: [],
        states.LAUNCHED: [states.LAUNCHED],
        states.STARTED: [states.LAUNCHED, states.START_INITIATED, states.STARTED],
        states.KILL_INITIATED: [states.LAUNCHED, states.KILL_INITIATED],
        states.FINISHED: [states.FINISHED],
    }[state]
    for step in path:
        machine.move(step, reason if step == state else "normal", "", at)
    t = Task(task_id, "j", index, machine)
    for k, v in fields.items():
        setattr(t, k, v)
    return t


def batch_retrying(policy: dict[str, Any]) -> dict[str, Any]:
    spec = batch_job()
    spec["batch"]["retryPolicy"] = policy
    return spec


CASES: list[tuple[str, Job, list[Task], list[Action]]] = [
    ("new batch job creates size tasks", job(batch_job(size=3)), [],
     [CreateTask(0), CreateTask(1), CreateTask(2)]),
    ("batch with running tasks waits", job(batch_job(size=2)),
     [task("a", states.STARTED), task("b", states.FINISHED)], []),
    ("batch all succeeded finishes normal", job(batch_job(size=2)),
     [task("a", states.FINISHED), task("b", states.FINISHED, index=1)],
     [FinishJob("normal", "0 task(s) did not succeed")]),
    ("batch with a failure not retried finishes failed", job(batch_job(size=2)),
     [task("a", states.FINISHED, "failed"), task("b", states.FINISHED, index=1)],
     [FinishJob("failed", "1 task(s) did not succeed")]),
    ("a failure that was retried successfully does not count", job(batch_job(size=1)),
     [task("a", states.FINISHED, "failed"), task("b", states.FINISHED, resubmit_of="a")],
     [FinishJob("normal", "0 task(s) did not succeed")]),
    ("service below desired creates with fresh indices", job(service_job(desired=3)),
     [task("a", states.STARTED, index=4)], [CreateTask(5), CreateTask(6)]),
    ("service at desired does nothing", job(service_job(desired=1)), [task("a", states.STARTED)], []),
    ("a killed task that will be replaced keeps its slot", job(service_job(desired=1)),
     [task("a", states.KILL_INITIATED, kill_reason="killed")], []),
    ("a task scaled away gives up its slot", job(service_job(desired=1)),
     [task("a", states.KILL_INITIATED, kill_reason="scaledDown", replace=False)], [CreateTask(1)]),
    ("a draining task's slot is its replacement's", job(service_job(desired=1)),
     [task("a", states.STARTED, migrating_to="b"), task("b", states.ACCEPTED, index=1)], []),
    ("scale down kills unplaced first, then the newest", job(service_job(desired=1)),
     [task("old", states.STARTED, at=1), task("new", states.STARTED, at=9, index=1),
      task("pending", states.ACCEPTED, index=2)],
     [KillTask("pending", "scaledDown", "job scaled down", replace=False),
      KillTask("new", "scaledDown", "job scaled down", replace=False)]),
    ("killed job kills its tasks and waits for placed ones",
     job(batch_job(size=2), states.JOB_KILL_INITIATED),
     [task("a", states.STARTED), task("b", states.ACCEPTED, index=1)],
     [KillTask("a", "killed", "job killed"), KillTask("b", "killed", "job killed")]),
    ("killed job with only unplaced tasks finishes at once",
     job(batch_job(size=1), states.JOB_KILL_INITIATED),
     [task("a", states.ACCEPTED)],
     [KillTask("a", "killed", "job killed"), FinishJob("killed", "all tasks finished")]),
    ("killed job does not kill twice", job(batch_job(size=1), states.JOB_KILL_INITIATED),
     [task("a", states.KILL_INITIATED, kill_reason="killed")], []),
]


@pytest.mark.parametrize(("j", "tasks", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_reconcile(j: Job, tasks: list[Task], expected: list[Action]) -> None:
    assert reconcile(j, tasks) == expected


RETRIES: list[tuple[str, Job, Task, int | None]] = [
    ("batch failure within retries: immediate", job(batch_job()),
     task("a", states.FINISHED, "failed"), None),
    ("batch failure with retries left", job(batch_retrying({"immediate": {"retries": 2}})),
     task("a", states.FINISHED, "failed"), 0),
    ("batch failure with retries used up",
     job(batch_retrying({"immediate": {"retries": 2}})),
     task("a", states.FINISHED, "failed", retries_done=2), None),
    ("batch success is never retried", job(batch_retrying({"immediate": {"retries": 2}})),
     task("a", states.FINISHED, "normal"), None),
    ("delayed retry waits its delay",
     job(batch_retrying({"delayed": {"initialDelayMs": 0, "delayMs": 500, "retries": 3}})),
     task("a", states.FINISHED, "failed", retries_done=1), 500),
    ("a user's kill of a batch task is final", job(batch_retrying({"immediate": {"retries": 2}})),
     task("a", states.FINISHED, "killed", replace=False), None),
    ("killed service task is replaced at once", job(service_job()), task("a", states.FINISHED, "killed"), 0),
    ("scaled-down service task is not replaced", job(service_job()),
     task("a", states.FINISHED, "scaledDown"), None),
    ("nothing is replaced in a job being killed", job(service_job(), states.JOB_KILL_INITIATED),
     task("a", states.FINISHED, "failed"), None),
]


@pytest.mark.parametrize(("j", "t", "expected"), [c[1:] for c in RETRIES], ids=[c[0] for c in RETRIES])
def test_replacement_delay(j: Job, t: Task, expected: int | None) -> None:
    assert replacement_delay(j, t) == expected
