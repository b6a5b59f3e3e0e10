"""How a job wants its tasks treated when their agent goes silent: pure parsing of the job's spec.

Why container attributes: Titus's wire has no field for it, and DESIGN.md #12 puts anything of ours in
`attributes`. Job attributes starting with `titus` are reserved (the API refuses them), while Titus itself
carries per-job platform knobs as `titusParameter.*` container attributes (`titusParameter.agent.*` for
what the agent enforces), so these ride there:

- `titusParameter.agent.selfFence` = `true`: the agent kills the job's tasks itself once it has lost touch
  with the masters for a lease period (agent/fence.py), and the master replaces them as soon as it declares
  the agent lost. For work that must never run twice, at the price of stopping in every master outage.
- `titusParameter.disconnectedTimeoutSec` = seconds, or `never`: how long a task whose agent went silent
  stays `Disconnected` (keeping its slot, not replaced) before it is declared lost and replaced. Defaults:
  service jobs a few minutes (`Defaults.service_ms`), batch jobs `never` (a batch task's work is its
  result; a replacement would redo it). `0` replaces at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

SELF_FENCE_ATTR = "titusParameter.agent.selfFence"
DISCONNECTED_TIMEOUT_ATTR = "titusParameter.disconnectedTimeoutSec"
NEVER = "never"
MAX_TIMEOUT_SEC = 30 * 24 * 3600


@dataclass(frozen=True, slots=True)
class Defaults:
    """Cluster-wide defaults (the master's settings); None = wait for the agent forever."""

    service_ms: int | None = 300_000
    batch_ms: int | None = None


@dataclass(frozen=True, slots=True)
class FaultPolicy:
    self_fence: bool
    disconnected_timeout_ms: int | None  # None: never replace a Disconnected task


def attribute_errors(attributes: Mapping[str, str]) -> list[tuple[str, str]]:
    """(attribute, reason) for every fault-policy attribute whose value is not understood."""
    errors: list[tuple[str, str]] = []
    fence = attributes.get(SELF_FENCE_ATTR)
    if fence is not None and fence not in ("true", "false"):
        errors.append((SELF_FENCE_ATTR, "must be 'true' or 'false'"))
    timeout = attributes.get(DISCONNECTED_TIMEOUT_ATTR)
    if timeout is not None and timeout != NEVER and (not timeout.isdigit() or int(timeout) > MAX_TIMEOUT_SEC):
        reason = f"must be a whole number of seconds from 0 to {MAX_TIMEOUT_SEC}, or '{NEVER}'"
        errors.append((DISCONNECTED_TIMEOUT_ATTR, reason))
    return errors


def fault_policy(attributes: Mapping[str, str], is_batch: bool, defaults: Defaults) -> FaultPolicy:
    """The policy of a job from its container attributes; values were validated at the edge
    (attribute_errors, called by the wire model), defaults fill the rest."""
    timeout = attributes.get(DISCONNECTED_TIMEOUT_ATTR)
    if timeout is None:
        timeout_ms = defaults.batch_ms if is_batch else defaults.service_ms
    elif timeout == NEVER:
        timeout_ms = None
    else:
        timeout_ms = int(timeout) * 1000
    return FaultPolicy(attributes.get(SELF_FENCE_ATTR) == "true", timeout_ms)
