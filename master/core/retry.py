"""Retry delays as a pure function of the job's retry policy and how many retries already happened."""

from __future__ import annotations

from master.api.models import RetryPolicy


def retries_allowed(policy: RetryPolicy) -> int:
    chosen = policy.immediate or policy.delayed or policy.exponentialBackOff
    assert chosen is not None  # the wire model guarantees exactly one
    return chosen.retries


def retry_delay_ms(policy: RetryPolicy, retries_done: int) -> int:
    """Delay before retry number `retries_done + 1`.

    Delayed waits initialDelayMs before the first retry and delayMs before each later one; exponential
    doubles from initialDelayMs and is capped at maxDelayIntervalMs, so a crash-looping service backs off
    instead of hammering the scheduler.
    """
    if policy.immediate is not None:
        return 0
    if policy.delayed is not None:
        return policy.delayed.initialDelayMs if retries_done == 0 else policy.delayed.delayMs
    backoff = policy.exponentialBackOff
    assert backoff is not None
    exponent = min(retries_done, 32)
    return int(min(backoff.initialDelayMs * (2**exponent), backoff.maxDelayIntervalMs))
