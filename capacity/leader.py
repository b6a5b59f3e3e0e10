"""Only one controller acts at a time. Without ZooKeeper there is one controller, so it always leads."""

from __future__ import annotations

from typing import Protocol


class LeaderElection(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...

    def is_leader(self) -> bool:
        """True only while leadership is certain; a session in doubt answers False."""


class AlwaysLeader:
    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def is_leader(self) -> bool:
        return True
