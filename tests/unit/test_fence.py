"""Self-fencing arithmetic and the agent's memory rule: pure functions, checked over a range of inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import fence
from agent.agent import unavailable_reason

WATCHDOG_INTERVAL_S = 0.1  # agent/fence.py watch() default


@pytest.mark.parametrize("timeout_s", [1.0, 3.0, 6.0, 15.0, 60.0, 300.0])
def test_fenced_tasks_are_dead_before_the_master_may_replace_them(timeout_s: float) -> None:
    # Lease deadline + one watchdog check + SIGTERM grace (then SIGKILL) must fall before the timeout,
    # with room to spare for scheduling delays.
    dead_by = fence.fence_after_s(timeout_s) + WATCHDOG_INTERVAL_S + fence.kill_grace_s(timeout_s)
    assert dead_by < timeout_s
    assert timeout_s - dead_by >= min(0.2, timeout_s / 10)


@pytest.mark.parametrize("timeout_s", [3.0, 15.0, 60.0])
def test_the_agent_is_not_fenced_by_one_late_heartbeat(timeout_s: float) -> None:
    assert fence.fence_after_s(timeout_s) > 2.0  # heartbeats go every second


def test_lease_round_trip_and_release(tmp_path: Path) -> None:
    lease = fence.Lease(tmp_path)
    assert lease.read() is None
    lease.renew(100.0, 0.5, 2.1)
    state = lease.read()
    assert state == fence.LeaseState(100.0, 0.5, 2.1, False)
    assert state is not None and not state.expired(99.9) and state.expired(100.1)
    lease.release()
    released = lease.read()
    assert released is not None and not released.expired(1e12)


def test_no_watchdog_is_reported_when_none_holds_the_lock(tmp_path: Path) -> None:
    assert fence.watchdog_running(tmp_path) is False
    assert fence.fenced_message(tmp_path, "t1") is None


@pytest.mark.parametrize(("available", "threshold", "short"), [
    (100.0, 256, True), (256.0, 256, False), (8000.0, 256, False), (None, 256, False)],
    ids=["short", "at-threshold", "plenty", "unknown"])
def test_memory_rule(available: float | None, threshold: int, short: bool) -> None:
    host = {} if available is None else {"memoryAvailableMB": available}
    reason = unavailable_reason(host, threshold)
    assert bool(reason) is short
    if short:
        assert "100 MB available" in reason and "256 MB" in reason
