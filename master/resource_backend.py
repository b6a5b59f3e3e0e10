"""Where the leader's resources come from, and how placed work reaches the hosts.

Everything above placement (API, store, state machines, capacity groups, tiers, why-pending) is the same
whatever the backend. Two backends exist:

- native: our agents register, heartbeat and long-poll their desired sets (DESIGN.md #1). The backend
  itself does nothing: `JobManager` already is that channel.
- mesos (master/mesos/): the Mesos master offers resources. Each agent that has offers becomes an `Agent`
  whose free resources are what is offered, the pure engine places tasks exactly as for native agents, and
  the backend turns the desired sets the engine changed into ACCEPT and KILL calls.

A backend other than native touches the manager's state only through `JobManager`'s backend methods
(`offered_agent`, `keep_alive`, `agent_gone`, `apply_updates`, `desired_sets`, ...), which keep the
manager's rules (one lock, writes queued under it, durability awaited outside it). This module imports
nothing of the manager, so the two no longer import each other.
"""

from __future__ import annotations

import logging
from typing import Protocol

log = logging.getLogger("titus.master.backend")


class ResourceBackend(Protocol):
    def start(self) -> None:
        """Begin talking to the resource manager; called once the manager holds leadership."""

    def stop(self) -> None:
        """Stop at once (fenced or shutting down); running tasks are left for the next leader."""

    def agent_changed(self, agent_id: str) -> None:
        """The agent's desired set changed. Called under the manager's lock: must not block or do I/O."""


class NativeBackend:
    """Our own agents: they pull their desired sets, so there is nothing to push."""

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def agent_changed(self, agent_id: str) -> None:
        pass


_IMPLEMENTS: type[ResourceBackend] = NativeBackend
