"""Job disruption budgets: the pure core of the eviction service.

Every system-initiated stop of a task (drain of a PhasedOut group, consolidation, capacity scale-in, agent
upgrade) must ask this module first. It takes plain data: the job's `disruptionBudget` exactly as the job
descriptor stores it (Titus's `JobDisruptionBudget`, proto field names), the job's desired size and its
tasks with state and health, the eviction history, and `now` (epoch seconds). It answers with a quota
shaped like Titus's `EvictionQuota` (`GET /api/v3/eviction/quotas/jobs/{id}`) and, for one task, a
decision shaped like `TaskTerminateResponse` (allowed, reasonCode, reasonMessage). No I/O, no clock: the
caller owns the history and records an eviction only once it happened.

The module lives in `master/core` because the eviction service is the master's (it owns the jobs, the
tasks and the history; the route will be a thin view over these functions once the master's job manager
is restructured), and the capacity planner imports it as a library so plans respect the same rules.

Semantics follow Titus's eviction service (titus-control-plane, `eviction/service/quota`):

* The job quota is the minimum over its trackers; a tracker that does not constrain is unlimited.
* `availabilityPercentageLimit`: at least ceil(desired * pct / 100) (at most desired - 1) tasks must stay
  healthy; quota = healthy - that minimum, and 0 when fewer than the minimum are even Started.
* `unhealthyTasksLimit`: at least desired - max(1, limit) tasks must stay healthy; same quota.
* `relocationLimit`: each task (counted by its original id, so replacements inherit the count) may be
  evicted at most `limit` times; the job quota is the number of tasks still below the limit.
* `selfManaged`: the owner moves its own tasks. The eviction service adds no quota limit, but a task may
  be stopped by the system only `relocationTimeMs` after its owner was told to move it (`notified_at`);
  before that the answer is a refusal naming the deadline. (Titus's relocation service enforces the same
  deadline outside the eviction service; here both live in one place.)
* `ratePercentagePerHour`: max(1, int(desired * pct / 100)) evictions in any sliding hour.
* `ratePerInterval`: `limitPerInterval` evictions in any sliding `intervalMs`.
* `ratePercentagePerInterval`: max(1, int(desired * pct / 100)) evictions in any sliding `intervalMs`.
* `rateUnlimited` (or no rate): no rate limit.
* `timeWindows`: outside every window the quota is 0; inside any, unlimited. No windows: always allowed.
  A window's days (Monday..Sunday, Weekdays, Weekends, All; none = every day) and hour ranges (none = all
  day) are read in its `timeZone` (IANA name; empty = UTC). An hour range is [startHour, endHour); one with
  endHour <= startHour wraps past midnight (22-6 is the night). Titus's own predicate counts the end hour
  as inside and rejects start >= end at validation; we chose the half-open range so that 0-24 is the whole
  day and two adjacent ranges never overlap. An unknown time zone closes the window (the budget cannot be
  honoured, so nothing is evicted) and says so.

Jobs without a budget get `default_budget`: services keep 95% healthy and lose at most 20% per hour, batch
tasks may each be relocated once; this plays the role of Titus's system default budget resolver.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

#: Reason code of a refused termination, as Titus's TaskTerminateResponse names it.
REASON_POLICY_VIOLATION = "jobRelocationPolicyViolation"
#: Titus task state in which a task counts towards availability.
STARTED = "Started"
#: Task states in which a task runs on an agent (and so can be evicted).
ON_AGENT = frozenset({"Launched", "StartInitiated", "Started", "KillInitiated"})
HOUR_S = 3600.0
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_DAY_SETS: dict[str, frozenset[int]] = {
    **{name: frozenset({i}) for i, name in enumerate(_WEEKDAYS)},
    "Weekdays": frozenset(range(5)),
    "Weekends": frozenset({5, 6}),
    "All": frozenset(range(7)),
}


class Policy(StrEnum):
    SELF_MANAGED = "selfManaged"
    AVAILABILITY_PERCENTAGE_LIMIT = "availabilityPercentageLimit"
    UNHEALTHY_TASKS_LIMIT = "unhealthyTasksLimit"
    RELOCATION_LIMIT = "relocationLimit"


class Rate(StrEnum):
    UNLIMITED = "rateUnlimited"
    PERCENTAGE_PER_HOUR = "ratePercentagePerHour"
    PER_INTERVAL = "ratePerInterval"
    PERCENTAGE_PER_INTERVAL = "ratePercentagePerInterval"


@dataclass(frozen=True, slots=True)
class HourRange:
    start: int
    end: int

    def contains(self, hour: int) -> bool:
        if self.end <= self.start:  # wraps past midnight
            return hour >= self.start or hour < self.end
        return self.start <= hour < self.end


@dataclass(frozen=True, slots=True)
class TimeWindow:
    #: Weekday numbers, Monday = 0; empty = every day.
    days: frozenset[int] = frozenset()
    hours: tuple[HourRange, ...] = ()
    time_zone: str = ""

    def zone(self) -> ZoneInfo | None:
        try:
            return ZoneInfo(self.time_zone or "UTC")
        except (ZoneInfoNotFoundError, ValueError):
            return None

    def contains(self, now: float) -> bool:
        zone = self.zone()
        if zone is None:
            return False
        local = datetime.fromtimestamp(now, zone)
        if self.days and local.weekday() not in self.days:
            return False
        return not self.hours or any(h.contains(local.hour) for h in self.hours)


@dataclass(frozen=True, slots=True)
class Budget:
    """One policy and one rate, as Titus's oneofs allow, plus time windows."""

    policy: Policy
    #: Percentage (availability), count (unhealthy, relocation) or relocation time in ms (selfManaged).
    policy_value: float = 0.0
    rate: Rate = Rate.UNLIMITED
    #: Percentage (percentage rates) or count (ratePerInterval).
    rate_value: float = 0.0
    #: Sliding window of the rate in seconds (an hour for ratePercentagePerHour).
    interval_s: float = HOUR_S
    windows: tuple[TimeWindow, ...] = ()

    @staticmethod
    def from_wire(doc: Mapping[str, Any] | None, batch: bool = False) -> Budget:
        """The stored `disruptionBudget` (already validated at the API edge); None means the default."""
        if not doc:
            return default_budget(batch)
        policy, policy_value = _policy_of(doc, batch)
        rate, rate_value, interval_s = Rate.UNLIMITED, 0.0, HOUR_S
        if (r := doc.get("ratePercentagePerHour")) is not None:
            rate, rate_value = (
                Rate.PERCENTAGE_PER_HOUR,
                float(r.get("maxPercentageOfContainersRelocatedInHour", 0)),
            )
        elif (r := doc.get("ratePerInterval")) is not None:
            rate, rate_value = Rate.PER_INTERVAL, float(r.get("limitPerInterval", 0))
            interval_s = int(r.get("intervalMs", 0)) / 1000.0
        elif (r := doc.get("ratePercentagePerInterval")) is not None:
            rate, rate_value = Rate.PERCENTAGE_PER_INTERVAL, float(r.get("percentageLimitPerInterval", 0))
            interval_s = int(r.get("intervalMs", 0)) / 1000.0
        windows = tuple(_window_of(w) for w in doc.get("timeWindows") or ())
        return Budget(policy, policy_value, rate, rate_value, interval_s, windows)

    def to_wire(self) -> dict[str, Any]:
        """The same budget in Titus's JSON form (round-trips through `from_wire`)."""
        doc: dict[str, Any] = {}
        if self.policy is Policy.SELF_MANAGED:
            doc["selfManaged"] = {"relocationTimeMs": int(self.policy_value)}
        elif self.policy is Policy.AVAILABILITY_PERCENTAGE_LIMIT:
            doc["availabilityPercentageLimit"] = {"percentageOfHealthyContainers": self.policy_value}
        elif self.policy is Policy.UNHEALTHY_TASKS_LIMIT:
            doc["unhealthyTasksLimit"] = {"limitOfUnhealthyContainers": int(self.policy_value)}
        else:
            doc["relocationLimit"] = {"limit": int(self.policy_value)}
        if self.rate is Rate.UNLIMITED:
            doc["rateUnlimited"] = {}
        elif self.rate is Rate.PERCENTAGE_PER_HOUR:
            doc["ratePercentagePerHour"] = {"maxPercentageOfContainersRelocatedInHour": self.rate_value}
        elif self.rate is Rate.PER_INTERVAL:
            doc["ratePerInterval"] = {
                "intervalMs": int(self.interval_s * 1000),
                "limitPerInterval": int(self.rate_value),
            }
        else:
            doc["ratePercentagePerInterval"] = {
                "intervalMs": int(self.interval_s * 1000),
                "percentageLimitPerInterval": self.rate_value,
            }
        if self.windows:
            doc["timeWindows"] = [
                {
                    "days": [_WEEKDAYS[d] for d in sorted(w.days)],
                    "hourlyTimeWindows": [{"startHour": h.start, "endHour": h.end} for h in w.hours],
                    "timeZone": w.time_zone,
                }
                for w in self.windows
            ]
        return doc


def default_budget(batch: bool) -> Budget:
    if batch:
        return Budget(Policy.RELOCATION_LIMIT, 1)
    return Budget(Policy.AVAILABILITY_PERCENTAGE_LIMIT, 95.0, Rate.PERCENTAGE_PER_HOUR, 20.0)


def _policy_of(doc: Mapping[str, Any], batch: bool) -> tuple[Policy, float]:
    if (p := doc.get("selfManaged")) is not None:
        return Policy.SELF_MANAGED, float(p.get("relocationTimeMs", 0))
    if (p := doc.get("availabilityPercentageLimit")) is not None:
        return Policy.AVAILABILITY_PERCENTAGE_LIMIT, float(p.get("percentageOfHealthyContainers", 0))
    if (p := doc.get("unhealthyTasksLimit")) is not None:
        return Policy.UNHEALTHY_TASKS_LIMIT, float(p.get("limitOfUnhealthyContainers", 0))
    if (p := doc.get("relocationLimit")) is not None:
        return Policy.RELOCATION_LIMIT, float(p.get("limit", 0))
    fallback = default_budget(batch)
    return fallback.policy, fallback.policy_value


def _window_of(doc: Mapping[str, Any]) -> TimeWindow:
    days: set[int] = set()
    for name in doc.get("days") or ():
        days |= _DAY_SETS[name]
    hours = tuple(
        HourRange(int(h.get("startHour", 0)), int(h.get("endHour", 24)))
        for h in doc.get("hourlyTimeWindows") or ()
    )
    return TimeWindow(frozenset(days), hours, str(doc.get("timeZone") or ""))


@dataclass(frozen=True, slots=True)
class TaskHealth:
    """One active task of the job: its Titus state and health.

    `healthy` is the container's health where a health check (or provider) reports one; None means no
    health signal, and a Started task then counts as healthy, as the task's own state is all we know.
    """

    id: str
    state: str = STARTED
    healthy: bool | None = None
    #: The first task of this slot (`task.originalId`); replacements inherit relocation counts through it.
    original_id: str = ""

    @property
    def origin(self) -> str:
        return self.original_id or self.id

    def counts_healthy(self) -> bool:
        return self.state == STARTED and self.healthy is not False


@dataclass(frozen=True, slots=True)
class JobView:
    id: str
    #: Service: capacity.desired; batch: size.
    desired: int
    budget: Budget
    tasks: tuple[TaskHealth, ...] = ()
    batch: bool = False


@dataclass(frozen=True, slots=True)
class Eviction:
    """A system-initiated stop that happened (the history the rate limits and relocation limit read)."""

    job_id: str
    task_id: str
    at: float
    original_id: str = ""

    @property
    def origin(self) -> str:
        return self.original_id or self.task_id


@dataclass(frozen=True, slots=True)
class Quota:
    """Titus's EvictionQuota for one job; `limited_by` names the tracker that set it."""

    job_id: str
    quota: int
    message: str
    limited_by: str = ""
    #: When a zero quota may next grow through time alone (a rate slot frees, a window opens).
    next_change_at: float | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"target": {"jobId": self.job_id}, "quota": self.quota, "message": self.message}


@dataclass(frozen=True, slots=True)
class Decision:
    """Titus's TaskTerminateResponse, with the job quota it was judged against."""

    allowed: bool
    reason_code: str
    reason_message: str
    quota: Quota

    def to_wire(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "reasonCode": self.reason_code, "reasonMessage": self.reason_message}


@dataclass(slots=True)
class _Limit:
    quota: int
    message: str
    name: str
    next_change_at: float | None = None


@dataclass(slots=True)
class _Trackers:
    limits: list[_Limit] = field(default_factory=list)

    def add(self, limit: _Limit) -> None:
        self.limits.append(limit)


def _healthy_limit(job: JobView, minimum: int, name: str) -> _Limit:
    started = sum(1 for t in job.tasks if t.state == STARTED)
    healthy = sum(1 for t in job.tasks if t.counts_healthy())
    if started < minimum:
        return _Limit(
            0, f"too few tasks started: desired={job.desired}, started={started}, minimum={minimum}", name
        )
    quota = max(0, healthy - minimum)
    if quota:
        return _Limit(quota, f"found {healthy} healthy tasks, and the required minimum is {minimum}", name)
    return _Limit(0, f"not enough healthy tasks: found {healthy} and the required minimum is {minimum}", name)


def _rate_limit(job: JobView, history: Sequence[Eviction], now: float) -> _Limit | None:
    budget = job.budget
    if budget.rate is Rate.UNLIMITED:
        return None
    if budget.rate is Rate.PER_INTERVAL:
        limit = int(budget.rate_value)
    else:
        limit = max(1, int(job.desired * budget.rate_value / 100.0))
    window = budget.interval_s
    recent = sorted(e.at for e in history if now - window < e.at <= now)
    quota = limit - len(recent)
    label = "hour" if budget.rate is Rate.PERCENTAGE_PER_HOUR else f"{window:g}s"
    if quota > 0:
        return _Limit(quota, f"{len(recent)} of {limit} evictions per {label} used", str(budget.rate))
    # The oldest evictions still inside the window free one slot each when they leave it.
    frees_at = recent[-quota] + window if len(recent) > -quota and limit > 0 else None
    return _Limit(
        0,
        f"exceeded the number of tasks that can be evicted per {label} (limit={limit}, used={len(recent)})",
        str(budget.rate),
        frees_at,
    )


def _window_limit(budget: Budget, now: float) -> _Limit | None:
    if not budget.windows:
        return None
    bad = [w.time_zone for w in budget.windows if w.zone() is None]
    if any(w.contains(now) for w in budget.windows):
        return None
    if bad:
        return _Limit(
            0, f"unknown time zone {', '.join(bad)}: no eviction window can be honoured", "timeWindows"
        )
    return _Limit(0, "outside time window", "timeWindows", _next_window_open(budget.windows, now))


def _next_window_open(windows: Sequence[TimeWindow], now: float) -> float | None:
    """The next top of an hour (within 8 days) at which a window contains the time."""
    start = datetime.fromtimestamp(now, UTC).replace(minute=0, second=0, microsecond=0)
    for step in range(1, 8 * 24 + 1):
        at = (start + timedelta(hours=step)).timestamp()
        if any(w.contains(at) for w in windows):
            return at
    return None


def _relocation_counts(history: Iterable[Eviction]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in history:
        counts[e.origin] = counts.get(e.origin, 0) + 1
    return counts


def _limits(job: JobView, history: Sequence[Eviction], now: float) -> list[_Limit]:
    budget = job.budget
    out = _Trackers()
    if (w := _window_limit(budget, now)) is not None:
        out.add(w)
    if budget.policy is Policy.AVAILABILITY_PERCENTAGE_LIMIT:
        minimum = 0
        if job.desired > 0:
            minimum = min(math.ceil(budget.policy_value * job.desired / 100.0 - 1e-9), job.desired - 1)
        out.add(_healthy_limit(job, minimum, str(budget.policy)))
    elif budget.policy is Policy.UNHEALTHY_TASKS_LIMIT:
        minimum = max(0, job.desired - max(1, int(budget.policy_value)))
        out.add(_healthy_limit(job, minimum, str(budget.policy)))
    elif budget.policy is Policy.RELOCATION_LIMIT:
        counts = _relocation_counts(history)
        limit = int(budget.policy_value)
        below = sum(1 for t in job.tasks if t.state in ON_AGENT and counts.get(t.origin, 0) < limit)
        if below:
            out.add(_Limit(below, f"per task relocation limit is {limit}", str(budget.policy)))
        else:
            out.add(
                _Limit(0, f"each task of the job reached its relocation limit {limit}", str(budget.policy))
            )
    if (r := _rate_limit(job, history, now)) is not None:
        out.add(r)
    return out.limits


def job_quota(job: JobView, history: Sequence[Eviction], now: float) -> Quota:
    """How many of the job's tasks the system may evict right now, and why not more.

    `history` may hold other jobs' evictions; only this job's count. With no limiting tracker the quota is
    the number of tasks on agents (nothing more could be evicted), with the message "unlimited".
    """
    mine = [e for e in history if e.job_id == job.id]
    limits = _limits(job, mine, now)
    on_agent = sum(1 for t in job.tasks if t.state in ON_AGENT)
    if job.budget.policy is Policy.SELF_MANAGED:
        limits.append(
            _Limit(
                on_agent,
                f"self managed: the owner has {job.budget.policy_value / 1000:g}s to move each task",
                str(Policy.SELF_MANAGED),
            )
        )
    if not limits:
        return Quota(job.id, on_agent, "unlimited")
    lowest = min(limits, key=lambda lim: lim.quota)
    quota = min(lowest.quota, on_agent)
    zero = [lim for lim in limits if lim.quota <= 0]
    changes = [lim.next_change_at for lim in zero if lim.next_change_at is not None]
    # Time frees the quota only when every zero tracker has a time at which it frees.
    next_at = max(changes) if zero and len(changes) == len(zero) else None
    return Quota(job.id, max(quota, 0), f"{lowest.name}: {lowest.message}", lowest.name, next_at)


def decide(
    job: JobView,
    task_id: str,
    history: Sequence[Eviction],
    now: float,
    notified_at: float | None = None,
) -> Decision:
    """May the system stop `task_id` of `job` now? `notified_at`: when its owner was told to move it."""
    quota = job_quota(job, history, now)
    task = next((t for t in job.tasks if t.id == task_id), None)
    if task is None or task.state not in ON_AGENT:
        return Decision(
            False, REASON_POLICY_VIOLATION, f"task {task_id} is not running in job {job.id}", quota
        )
    budget = job.budget
    if budget.policy is Policy.RELOCATION_LIMIT:
        used = _relocation_counts(e for e in history if e.job_id == job.id).get(task.origin, 0)
        if used >= int(budget.policy_value):
            return Decision(
                False,
                REASON_POLICY_VIOLATION,
                f"task relocation limit exceeded (limit={int(budget.policy_value)}, used={used})",
                quota,
            )
    if budget.policy is Policy.SELF_MANAGED:
        wait_s = budget.policy_value / 1000.0
        if notified_at is None:
            return Decision(
                False,
                REASON_POLICY_VIOLATION,
                "self managed: the owner has not been asked to move it yet",
                quota,
            )
        if now < notified_at + wait_s:
            return Decision(
                False,
                REASON_POLICY_VIOLATION,
                f"self managed: the owner has until {notified_at + wait_s:.0f} to move it",
                quota,
            )
    if quota.quota < 1:
        return Decision(False, REASON_POLICY_VIOLATION, quota.message, quota)
    return Decision(True, "", quota.message, quota)


@dataclass(frozen=True, slots=True)
class SystemBudget:
    """Titus's system disruption budget: a token bucket over every system eviction in the cluster.

    `burst` evictions may happen at once; the bucket refills at `rate_per_s`. It bounds a cluster-wide
    drain (a whole instance group phased out at once) however generous each job's own budget is.
    """

    rate_per_s: float = 1.0
    burst: int = 50


def system_quota(budget: SystemBudget, history: Sequence[Eviction], now: float) -> Quota:
    """Tokens left in the system bucket at `now`, replaying `history` (any order) through the bucket."""
    tokens, last = float(budget.burst), None
    for at in sorted(e.at for e in history if e.at <= now):
        if last is not None:
            tokens = min(float(budget.burst), tokens + (at - last) * budget.rate_per_s)
        tokens -= 1.0
        last = at
    if last is not None:
        tokens = min(float(budget.burst), tokens + (now - last) * budget.rate_per_s)
    quota = max(0, math.floor(tokens + 1e-9))
    if quota:
        return Quota("", quota, f"system budget: {quota} of {budget.burst} evictions left")
    wait_s = (1.0 - tokens) / budget.rate_per_s if budget.rate_per_s > 0 else None
    return Quota(
        "",
        0,
        f"system disruption budget exhausted (burst={budget.burst}, refill={budget.rate_per_s:g}/s)",
        "system",
        None if wait_s is None else now + wait_s,
    )


@dataclass(slots=True)
class EvictionLedger:
    """What the eviction service remembers: the evictions it allowed and when owners were told to move.

    Mutable, owned by one caller under its own lock; the decisions stay in the pure functions above.
    Entries older than `keep_s` are dropped (the longest rate window the budgets can name is an hour,
    intervals aside; a day is kept).
    """

    history: list[Eviction] = field(default_factory=list)
    #: Task id -> when its self-managed owner was first told to move it.
    notified: dict[str, float] = field(default_factory=dict)
    keep_s: float = 24 * HOUR_S

    def record(self, eviction: Eviction) -> None:
        self.history.append(eviction)
        self.notified.pop(eviction.task_id, None)
        if len(self.history) > 1024 and self.history[0].at < eviction.at - self.keep_s:
            self.history = [e for e in self.history if e.at >= eviction.at - self.keep_s]

    def for_job(self, job_id: str) -> list[Eviction]:
        return [e for e in self.history if e.job_id == job_id]

    def notify(self, task_id: str, now: float) -> float:
        """When the owner of `task_id` was told to move it (now, the first time it is asked)."""
        return self.notified.setdefault(task_id, now)
