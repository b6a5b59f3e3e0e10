"""Table tests of the eviction service's pure core (master/core/disruption.py).

The standard scenario: a job of desired 10 with 10 Started tasks, one reported unhealthy (9 healthy);
two evictions already happened, of tasks t0 (20 minutes ago) and t1 (5 minutes ago). `now` is Monday
2026-03-02 10:30 UTC. Each policy, rate and window has a hand-computed quota in that scenario; a job's
quota is the minimum of its parts, 0 outside its time windows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from master.api.models import JobDisruptionBudget
from master.core.disruption import (
    REASON_POLICY_VIOLATION,
    Budget,
    Eviction,
    EvictionLedger,
    JobView,
    Policy,
    Rate,
    SystemBudget,
    TaskHealth,
    decide,
    default_budget,
    job_quota,
    system_quota,
)

NOW = datetime(2026, 3, 2, 10, 30, tzinfo=UTC).timestamp()  # a Monday

WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
WEEKENDS = ["Saturday", "Sunday"]
ALL_DAYS = (*WEEKDAYS, *WEEKENDS)  # Titus's Day enum has only the seven days


def tasks(started: int = 10, unhealthy: int = 1, launched: int = 0) -> tuple[TaskHealth, ...]:
    out = [
        TaskHealth(f"t{i}", "Started", False if i >= started - unhealthy else None) for i in range(started)
    ]
    out += [TaskHealth(f"l{i}", "Launched") for i in range(launched)]
    return tuple(out)


def history(*ago_and_task: tuple[float, str], job: str = "job-1") -> tuple[Eviction, ...]:
    return tuple(Eviction(job, task, NOW - ago) for ago, task in ago_and_task)


STANDARD_HISTORY = history((1200, "t0"), (300, "t1"))


def job(
    budget: dict[str, Any] | None,
    desired: int = 10,
    ts: tuple[TaskHealth, ...] | None = None,
    batch: bool = False,
) -> JobView:
    # Every budget goes through the wire model first: the module reads the form the store keeps.
    stored = JobDisruptionBudget.model_validate(budget).to_json() if budget is not None else None
    return JobView("job-1", desired, Budget.from_wire(stored, batch), tasks() if ts is None else ts, batch)


POLICIES: dict[str, tuple[dict[str, Any], int]] = {
    # 80% of 10 must stay healthy: 9 healthy - 8 = 1.
    "availability80": ({"availabilityPercentageLimit": {"percentageOfHealthyContainers": 80}}, 1),
    # At most 3 unhealthy: 10 - 3 = 7 must stay healthy: 9 - 7 = 2.
    "unhealthy3": ({"unhealthyTasksLimit": {"limitOfUnhealthyContainers": 3}}, 2),
    # Each task at most once: t0 and t1 used theirs, 8 left.
    "relocation1": ({"relocationLimit": {"limit": 1}}, 8),
    # Self managed: no quota limit from the eviction service (the 10 tasks on agents).
    "selfManaged": ({"selfManaged": {"relocationTimeMs": 60_000}}, 10),
}
RATES: dict[str, tuple[dict[str, Any], int | None]] = {
    "unlimited": ({"rateUnlimited": {}}, None),
    # 50% of 10 = 5 per hour, 2 used.
    "pct50PerHour": ({"ratePercentagePerHour": {"maxPercentageOfContainersRelocatedInHour": 50}}, 3),
    # 3 per 10 minutes, 1 used (the one 5 minutes ago).
    "3per10min": ({"ratePerInterval": {"intervalMs": 600_000, "limitPerInterval": 3}}, 2),
    # 30% of 10 = 3 per 10 minutes, 1 used.
    "pct30per10min": (
        {"ratePercentagePerInterval": {"intervalMs": 600_000, "percentageLimitPerInterval": 30}},
        2,
    ),
}
WINDOWS: dict[str, tuple[list[dict[str, Any]], bool]] = {
    "noWindow": ([], True),
    "weekdays9to17": ([{"days": WEEKDAYS, "hourlyTimeWindows": [{"startHour": 9, "endHour": 17}]}], True),
    "weekendsOnly": ([{"days": WEEKENDS}], False),
}


@pytest.mark.parametrize("window", list(WINDOWS), ids=list(WINDOWS))
@pytest.mark.parametrize("rate", list(RATES), ids=list(RATES))
@pytest.mark.parametrize("policy", list(POLICIES), ids=list(POLICIES))
def test_quota_is_the_minimum_of_policy_rate_and_window(policy: str, rate: str, window: str) -> None:
    policy_doc, policy_quota = POLICIES[policy]
    rate_doc, rate_quota = RATES[rate]
    windows, inside = WINDOWS[window]
    budget = {**policy_doc, **rate_doc, "timeWindows": windows}
    quota = job_quota(job(budget), STANDARD_HISTORY, NOW)
    expected = min(policy_quota, rate_quota if rate_quota is not None else policy_quota) if inside else 0
    assert quota.quota == expected, quota.message
    assert quota.to_wire() == {"target": {"jobId": "job-1"}, "quota": expected, "message": quota.message}
    if not inside:
        assert quota.limited_by == "timeWindows" and "outside time window" in quota.message


@pytest.mark.parametrize("window", list(WINDOWS), ids=list(WINDOWS))
@pytest.mark.parametrize("rate", list(RATES), ids=list(RATES))
@pytest.mark.parametrize("policy", list(POLICIES), ids=list(POLICIES))
def test_decision_of_a_fresh_task_follows_the_quota(policy: str, rate: str, window: str) -> None:
    """t5 was never evicted; self managed tasks are judged after their owner's time ran out."""
    policy_doc, _ = POLICIES[policy]
    rate_doc, _ = RATES[rate]
    windows, inside = WINDOWS[window]
    view = job({**policy_doc, **rate_doc, "timeWindows": windows})
    decision = decide(view, "t5", STANDARD_HISTORY, NOW, notified_at=NOW - 120)
    assert decision.allowed == inside
    assert decision.reason_code == ("" if inside else REASON_POLICY_VIOLATION)
    assert decision.to_wire()["allowed"] == inside


@pytest.mark.parametrize(
    ("budget", "ts", "desired", "expected", "says"),
    [
        pytest.param(
            {"availabilityPercentageLimit": {"percentageOfHealthyContainers": 80}},
            tasks(10, unhealthy=2),
            10,
            0,
            "not enough healthy",
            id="availability-8-healthy-of-min-8",
        ),
        pytest.param(
            {"availabilityPercentageLimit": {"percentageOfHealthyContainers": 80}},
            tasks(7, unhealthy=0, launched=3),
            10,
            0,
            "too few tasks started",
            id="availability-only-7-started",
        ),
        pytest.param(
            {"availabilityPercentageLimit": {"percentageOfHealthyContainers": 100}},
            tasks(1, unhealthy=0),
            1,
            1,
            "healthy",
            id="availability-100pct-of-1-still-allows-one",
        ),
        pytest.param(
            {"availabilityPercentageLimit": {"percentageOfHealthyContainers": 95}},
            tasks(21, unhealthy=0),
            20,
            2,
            "healthy",
            id="availability-replacement-started-adds-quota",
        ),
        pytest.param(
            {"unhealthyTasksLimit": {"limitOfUnhealthyContainers": 0}},
            tasks(10, unhealthy=0),
            10,
            1,
            "healthy",
            id="unhealthy-limit-0-counts-as-1",
        ),
        pytest.param(
            {"unhealthyTasksLimit": {"limitOfUnhealthyContainers": 2}},
            tasks(10, unhealthy=2),
            10,
            0,
            "not enough healthy",
            id="unhealthy-limit-reached",
        ),
        pytest.param(
            {"relocationLimit": {"limit": 1}},
            tuple(TaskHealth(t, "Started") for t in ("t0", "t1")),
            2,
            0,
            "reached",
            id="relocation-all-used",
        ),
        pytest.param(
            {"ratePerInterval": {"intervalMs": 600_000, "limitPerInterval": 0}},
            tasks(10, unhealthy=0),
            10,
            0,
            "limit=0",
            id="rate-per-interval-zero",
        ),
        pytest.param(
            {"ratePercentagePerHour": {"maxPercentageOfContainersRelocatedInHour": 1}},
            tasks(10, unhealthy=0),
            10,
            0,
            "limit=1",
            id="rate-percentage-floor-of-one-used-up",
        ),
    ],
)
def test_edge_cases(
    budget: dict[str, Any], ts: tuple[TaskHealth, ...], desired: int, expected: int, says: str
) -> None:
    history_ = STANDARD_HISTORY if "rate" in next(iter(budget)) or "relocation" in next(iter(budget)) else ()
    quota = job_quota(job(budget, desired, ts), history_, NOW)
    assert quota.quota == expected
    assert says in quota.message


def test_health_comes_from_the_task_state_when_no_check_reports() -> None:
    ts = (
        TaskHealth("a", "Started", None),  # no health check: Started counts as healthy
        TaskHealth("b", "Started", True),
        TaskHealth("c", "Started", False),  # health check failing
        TaskHealth("d", "StartInitiated", True),  # not Started: not available
    )
    view = job({"unhealthyTasksLimit": {"limitOfUnhealthyContainers": 1}}, desired=4, ts=ts)
    quota = job_quota(view, (), NOW)
    assert quota.quota == 0 and "found 2 and the required minimum is 3" in quota.message  # min 3 healthy
    more = job({"unhealthyTasksLimit": {"limitOfUnhealthyContainers": 2}}, desired=4, ts=ts)
    assert job_quota(more, (), NOW).quota == 0  # min 2, started 3, healthy 2
    most = job({"unhealthyTasksLimit": {"limitOfUnhealthyContainers": 3}}, desired=4, ts=ts)
    assert job_quota(most, (), NOW).quota == 1


def test_relocation_limit_is_per_task_and_follows_the_original_id() -> None:
    ts = (TaskHealth("t0-replacement", "Started", original_id="t0"), TaskHealth("t5", "Started"))
    view = job({"relocationLimit": {"limit": 1}}, desired=2, ts=ts, batch=True)
    refused = decide(view, "t0-replacement", STANDARD_HISTORY, NOW)
    assert not refused.allowed and "relocation limit exceeded (limit=1, used=1)" in refused.reason_message
    assert decide(view, "t5", STANDARD_HISTORY, NOW).allowed


def test_self_managed_waits_for_the_owner() -> None:
    view = job({"selfManaged": {"relocationTimeMs": 600_000}})
    not_told = decide(view, "t3", (), NOW)
    assert not not_told.allowed and "not been asked" in not_told.reason_message
    early = decide(view, "t3", (), NOW, notified_at=NOW - 300)
    assert not early.allowed and f"until {NOW + 300:.0f}" in early.reason_message
    assert decide(view, "t3", (), NOW, notified_at=NOW - 600).allowed


def test_a_task_not_running_cannot_be_evicted() -> None:
    view = job(None, ts=(TaskHealth("t0", "Accepted"),), desired=1)
    decision = decide(view, "t0", (), NOW)
    assert not decision.allowed and "not running" in decision.reason_message
    assert not decide(view, "nope", (), NOW).allowed


def test_other_jobs_history_does_not_count() -> None:
    budget = {"ratePerInterval": {"intervalMs": 600_000, "limitPerInterval": 1}}
    other = history((60, "x"), job="job-2")
    healthy = tasks(unhealthy=0)
    assert job_quota(job(budget, ts=healthy), other, NOW).quota == 1
    assert job_quota(job(budget, ts=healthy), history((60, "t0")), NOW).quota == 0


@pytest.mark.parametrize(
    ("windows", "at", "inside"),
    [
        pytest.param(
            [{"days": ["Monday"], "hourlyTimeWindows": [{"startHour": 10, "endHour": 11}]}],
            NOW,
            True,
            id="monday-10-11-at-10:30",
        ),
        pytest.param(
            [{"days": ["Monday"], "hourlyTimeWindows": [{"startHour": 9, "endHour": 10}]}],
            NOW,
            False,
            id="end-hour-exclusive",
        ),
        pytest.param([{"days": ["Tuesday"]}], NOW, False, id="other-day"),
        pytest.param(
            [{"days": list(ALL_DAYS), "hourlyTimeWindows": [{"startHour": 22, "endHour": 6}]}],
            NOW - 6 * 3600,
            True,
            id="overnight-wraps-at-04:30",
        ),
        pytest.param(
            [{"days": list(ALL_DAYS), "hourlyTimeWindows": [{"startHour": 22, "endHour": 6}]}],
            NOW,
            False,
            id="overnight-not-at-10:30",
        ),
        # 10:30 UTC is 02:30 in Los Angeles (PST, UTC-8).
        pytest.param(
            [{"hourlyTimeWindows": [{"startHour": 2, "endHour": 3}], "timeZone": "America/Los_Angeles"}],
            NOW,
            True,
            id="timezone-los-angeles-02:30",
        ),
        pytest.param(
            [{"hourlyTimeWindows": [{"startHour": 10, "endHour": 11}], "timeZone": "America/Los_Angeles"}],
            NOW,
            False,
            id="timezone-not-utc-hours",
        ),
        # Monday 10:30 UTC is already Monday evening in Tokyo; Sunday 20:00 UTC is Monday 05:00 there.
        pytest.param(
            [
                {
                    "days": ["Monday"],
                    "hourlyTimeWindows": [{"startHour": 5, "endHour": 6}],
                    "timeZone": "Asia/Tokyo",
                }
            ],
            NOW - 14.5 * 3600,
            True,
            id="timezone-shifts-the-day",
        ),
        pytest.param([{"days": WEEKENDS}, {"days": ["Monday"]}], NOW, True, id="any-window-suffices"),
        pytest.param([{"days": WEEKDAYS, "timeZone": "Mars/Olympus"}], NOW, False, id="unknown-timezone"),
    ],
)
def test_time_windows(windows: list[dict[str, Any]], at: float, inside: bool) -> None:
    view = job({"rateUnlimited": {}, "timeWindows": windows}, ts=tasks(unhealthy=0))
    quota = job_quota(view, (), at)
    assert (quota.quota > 0) == inside, quota.message
    if "Mars/Olympus" in str(windows):
        assert "unknown time zone Mars/Olympus" in quota.message


def test_next_change_at_for_rates_and_windows() -> None:
    rate = job({"ratePerInterval": {"intervalMs": 600_000, "limitPerInterval": 1}}, ts=tasks(unhealthy=0))
    quota = job_quota(rate, history((300, "t1")), NOW)
    assert quota.quota == 0 and quota.next_change_at == NOW + 300
    window = job(
        {"timeWindows": [{"days": ["Monday"], "hourlyTimeWindows": [{"startHour": 14, "endHour": 15}]}]},
        ts=tasks(unhealthy=0),
    )
    quota = job_quota(window, (), NOW)
    assert quota.quota == 0 and quota.next_change_at == datetime(2026, 3, 2, 14, tzinfo=UTC).timestamp()
    health = job({"unhealthyTasksLimit": {"limitOfUnhealthyContainers": 1}}, ts=tasks(unhealthy=1))
    assert job_quota(health, (), NOW).next_change_at is None  # only a task turning healthy frees it


def test_defaults_and_round_trip() -> None:
    assert Budget.from_wire(None) == default_budget(False)
    assert default_budget(False).policy is Policy.AVAILABILITY_PERCENTAGE_LIMIT
    assert default_budget(True).policy is Policy.RELOCATION_LIMIT
    doc = {
        "unhealthyTasksLimit": {"limitOfUnhealthyContainers": 2},
        "ratePercentagePerInterval": {"intervalMs": 60_000, "percentageLimitPerInterval": 5.0},
        "timeWindows": [
            {
                "days": ["Monday", "Friday"],
                "hourlyTimeWindows": [{"startHour": 1, "endHour": 4}],
                "timeZone": "Europe/Berlin",
            }
        ],
    }
    budget = Budget.from_wire(doc)
    assert budget.rate is Rate.PERCENTAGE_PER_INTERVAL and budget.interval_s == 60.0
    assert Budget.from_wire(budget.to_wire()) == budget
    assert JobDisruptionBudget.model_validate(budget.to_wire()).to_json()["unhealthyTasksLimit"] == {
        "limitOfUnhealthyContainers": 2
    }


@pytest.mark.parametrize(
    ("evictions", "at", "quota"),
    [
        ((), 0.0, 3),  # a full bucket
        ((0.0, 0.0, 0.0), 0.0, 0),  # the burst spent at once
        ((0.0, 0.0, 0.0), 1.9, 0),  # refill 0.5/s: the first token is back at 2 s
        ((0.0, 0.0, 0.0), 2.0, 1),
        ((0.0, 0.0, 0.0), 100.0, 3),  # never more than the burst
        ((0.0, 4.0, 4.0), 4.0, 1),  # 2 left, refilled to the burst by 4 s, then 2 spent
    ],
)
def test_system_token_bucket(evictions: tuple[float, ...], at: float, quota: int) -> None:
    budget = SystemBudget(rate_per_s=0.5, burst=3)
    result = system_quota(budget, [Eviction("j", f"t{n}", e) for n, e in enumerate(evictions)], at)
    assert result.quota == quota
    if quota == 0:
        assert result.next_change_at is not None and result.next_change_at > at
        assert "system disruption budget exhausted" in result.message


def test_ledger_remembers_notices_until_the_eviction() -> None:
    ledger = EvictionLedger()
    assert ledger.notify("t1", 10.0) == 10.0
    assert ledger.notify("t1", 20.0) == 10.0  # the owner's clock started at the first notice
    ledger.record(Eviction("j", "t1", 30.0))
    assert ledger.notify("t1", 40.0) == 40.0
    assert [e.task_id for e in ledger.for_job("j")] == ["t1"] and ledger.for_job("k") == []
