"""Table tests of the pure reconciliation (master/reconcile.py), built with small builders."""

from __future__ import annotations

from typing import Any

import pytest

from master.api.models import JobDescriptor
from master.core import states
from master.core.entities import Job, Task
from master.core.fault_policy import Defaults
from master.core.states import Status, StatusMachine
from master.reconcile import (
    Action,
    CreateTask,
    FinishJob,
    KillTask,
    Move,
    disconnected_expired,
    on_agent_silent,
    platform_caused,
    reconcile,
    reconcile_agent,
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
        states.DISCONNECTED: [states.LAUNCHED, states.START_INITIATED, states.STARTED, states.DISCONNECTED],
        "Launched>Disconnected": [states.LAUNCHED, states.DISCONNECTED],
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
    # Platform reasons: retried at once, whatever the policy and the budget say.
    ("a lost batch task is retried with no budget", job(batch_job()), task("a", states.FINISHED, "lost"), 0),
    ("a transientSystemError batch task is retried with its budget used up",
     job(batch_retrying({"delayed": {"initialDelayMs": 900, "delayMs": 900, "retries": 1}})),
     task("a", states.FINISHED, "transientSystemError", retries_done=1), 0),
    ("a localSystemError batch task is retried", job(batch_job()),
     task("a", states.FINISHED, "localSystemError"), 0),
    ("a lost service task is replaced without backoff", job(service_job()),
     task("a", states.FINISHED, "lost", retries_done=9), 0),
    ("a crashed batch task uses the budget (the task's own crash)", job(batch_job()),
     task("a", states.FINISHED, "crashed"), None),
    ("a platform end of a task that must not be replaced stays final", job(batch_job()),
     task("a", states.FINISHED, "lost", replace=False), None),
]


@pytest.mark.parametrize(("j", "t", "expected"), [c[1:] for c in RETRIES], ids=[c[0] for c in RETRIES])
def test_replacement_delay(j: Job, t: Task, expected: int | None) -> None:
    assert replacement_delay(j, t) == expected


# ======================================================================= silent agents, Disconnected tasks
def disconnected(task_id: str, at: int = 0, before: str = states.STARTED) -> Task:
    return task(task_id, states.DISCONNECTED if before == states.STARTED else f"{before}>Disconnected", at=at,
                agent_id="a1")


def with_attrs(spec: dict[str, Any], **attrs: str) -> dict[str, Any]:
    spec["container"]["attributes"] = attrs
    return spec


FENCE = "titusParameter.agent.selfFence"
TIMEOUT = "titusParameter.disconnectedTimeoutSec"
DEFAULTS = Defaults(service_ms=300_000, batch_ms=None)
SILENT = "no heartbeat"

SILENT_CASES: list[tuple[str, Job, Task, Move | None]] = [
    ("a running service task is Disconnected", job(service_job()), task("t", states.STARTED),
     Move("t", states.DISCONNECTED, states.REASON_DISCONNECTED, SILENT)),
    ("a running batch task is Disconnected", job(batch_job()), task("t", states.STARTED),
     Move("t", states.DISCONNECTED, states.REASON_DISCONNECTED, SILENT)),
    ("a launched task is Disconnected too (the agent may have it)", job(service_job()),
     task("t", states.LAUNCHED), Move("t", states.DISCONNECTED, states.REASON_DISCONNECTED, SILENT)),
    ("a self-fencing job's task is lost at once", job(with_attrs(service_job(), **{FENCE: "true"})),
     task("t", states.STARTED),
     Move("t", states.FINISHED, states.REASON_LOST, f"{SILENT}; the job self-fences")),
    ("selfFence=false is the default", job(with_attrs(batch_job(), **{FENCE: "false"})),
     task("t", states.STARTED), Move("t", states.DISCONNECTED, states.REASON_DISCONNECTED, SILENT)),
    ("a task being killed ends with its kill reason", job(service_job()),
     task("t", states.KILL_INITIATED, reason="scaledDown", kill_reason="scaledDown"),
     Move("t", states.FINISHED, "scaledDown", SILENT)),
    ("an already Disconnected task stays", job(service_job()), disconnected("t"), None),
]


@pytest.mark.parametrize(("name", "j", "t", "expected"), SILENT_CASES, ids=[c[0] for c in SILENT_CASES])
def test_on_agent_silent(name: str, j: Job, t: Task, expected: Move | None) -> None:
    assert on_agent_silent(j, t, DEFAULTS, SILENT) == expected


MIN = 60_000
EXPIRY_CASES: list[tuple[str, Job, int, bool]] = [
    ("service default: still waiting at 4:59", job(service_job()), 5 * MIN - 1, False),
    ("service default: replaced at 5:00", job(service_job()), 5 * MIN, True),
    ("batch default waits for ever", job(batch_job()), 10**12, False),
    ("batch with a timeout is replaced", job(with_attrs(batch_job(), **{TIMEOUT: "120"})), 2 * MIN, True),
    ("service with 'never' waits for ever", job(with_attrs(service_job(), **{TIMEOUT: "never"})),
     10**12, False),
    ("timeout 0 replaces at once", job(with_attrs(service_job(), **{TIMEOUT: "0"})), 0, True),
    ("a job's own timeout beats the default", job(with_attrs(service_job(), **{TIMEOUT: "600"})),
     9 * MIN, False),
]


@pytest.mark.parametrize(("name", "j", "now", "expired"), EXPIRY_CASES, ids=[c[0] for c in EXPIRY_CASES])
def test_disconnected_expired(name: str, j: Job, now: int, expired: bool) -> None:
    move = disconnected_expired(j, disconnected("t", at=0), now, DEFAULTS)
    assert (move is not None) is expired
    if move is not None:
        assert (move.state, move.reason) == (states.FINISHED, states.REASON_LOST)
        assert "stayed disconnected" in move.message


def test_only_disconnected_tasks_expire() -> None:
    assert disconnected_expired(job(service_job()), task("t", states.STARTED), 10**12, DEFAULTS) is None


def test_cluster_defaults_are_used_when_the_job_says_nothing() -> None:
    short = Defaults(service_ms=1_000, batch_ms=2_000)
    assert disconnected_expired(job(service_job()), disconnected("t"), 1_000, short) is not None
    assert disconnected_expired(job(batch_job()), disconnected("t"), 1_999, short) is None
    assert disconnected_expired(job(batch_job()), disconnected("t"), 2_000, short) is not None


REG_CASES: list[tuple[str, Task, set[str], set[str], tuple[str, str] | None]] = [
    ("disconnected and running: Started again", disconnected("t"), {"t"}, set(), (states.STARTED, "normal")),
    ("disconnected and exited: Started, its end follows", disconnected("t"), set(), {"t"},
     (states.STARTED, "normal")),
    ("disconnected and unknown: lost", disconnected("t"), set(), set(),
     (states.FINISHED, states.REASON_LOST)),
    ("disconnected before it started, unknown: Launched again", disconnected("t", before=states.LAUNCHED),
     set(), set(), (states.LAUNCHED, "normal")),
    ("disconnected before it started, running: Started", disconnected("t", before=states.LAUNCHED),
     {"t"}, set(), (states.STARTED, "normal")),
    ("launched and running: Started (lost report)", task("t", states.LAUNCHED), {"t"}, set(),
     (states.STARTED, "normal")),
    ("launched and unknown: the agent will pick it up", task("t", states.LAUNCHED), set(), set(), None),
    ("started and unknown: lost", task("t", states.STARTED), set(), set(),
     (states.FINISHED, states.REASON_LOST)),
    ("started and running: nothing to do", task("t", states.STARTED), {"t"}, set(), None),
    ("being killed and unknown: ends with its kill reason",
     task("t", states.KILL_INITIATED, kill_reason="runtimeLimitExceeded"), set(), set(),
     (states.FINISHED, "runtimeLimitExceeded")),
    ("being killed and running: the kill stands", task("t", states.KILL_INITIATED), {"t"}, set(), None),
]


@pytest.mark.parametrize(("name", "t", "running", "exited", "expected"), REG_CASES,
                         ids=[c[0] for c in REG_CASES])
def test_reconcile_agent(name: str, t: Task, running: set[str], exited: set[str],
                         expected: tuple[str, str] | None) -> None:
    verdict = reconcile_agent([t], running, exited)
    got = [(m.state, m.reason) for m in verdict.moves]
    assert got == ([] if expected is None else [expected])
    assert verdict.stale == frozenset()


def test_tasks_replaced_while_the_agent_was_away_are_stale() -> None:
    verdict = reconcile_agent([task("kept", states.STARTED)], {"kept", "replaced", "also"}, {"exited-old"})
    assert verdict.stale == frozenset({"replaced", "also"})  # ended ones are reported, not killed
    assert verdict.moves == []


def test_scale_down_gives_up_disconnected_tasks_before_healthy_ones() -> None:
    spec = service_job(desired=1)
    actions = reconcile(job(spec), [task("healthy", states.STARTED, at=5), disconnected("away", at=1)])
    assert actions == [KillTask("away", states.REASON_SCALED_DOWN, "job scaled down", replace=False)]


@pytest.mark.parametrize(("reason", "platform"), [
    ("lost", True), ("transientSystemError", True), ("localSystemError", True), ("killed", False),
    ("failed", False), ("crashed", False), ("stuckInState", False), ("runtimeLimitExceeded", False),
    ("normal", False)])
def test_only_platform_reasons_spare_the_retry_budget(reason: str, platform: bool) -> None:
    assert platform_caused(task("a", states.FINISHED, reason)) is platform
