"""Who may act: leader election among masters, and where the leader can be reached.

Only the leader schedules and writes (DESIGN.md #2). The election tells the master two things through
callbacks: `on_elected` (take over: new epoch, load state, start the loops, then `publish` the URL) and
`on_lost` (stop acting at once). It also answers, at any time, where the current leader can be reached,
so a standby can forward clients there.

A master that has been leader and lost it never leads again in the same process: its memory may be older
than the store, so it exits and its supervisor starts a fresh standby. The Kazoo implementation is the only
module in master/ that imports kazoo.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger("titus.leader")

Callback = Callable[[], None]


class LeaderElectionError(Exception):
    """The election could not start (ZooKeeper unreachable): the master cannot know who leads."""


class LeaderElection(Protocol):
    def start(self, on_elected: Callback, on_lost: Callback) -> None:
        """Begin campaigning in the background; callbacks run on the election's own threads.

        `on_lost` may run on the ZooKeeper client's event thread: it must stop writes at once and hand
        anything slow (closing the server) to another thread.
        """

    def publish(self) -> None:
        """Advertise this master's URL as the leader's: called once the new leader is ready to serve."""

    def is_leader(self) -> bool:
        """True from election until leadership is in doubt (SUSPENDED counts as lost)."""

    def leader_url(self) -> str | None:
        """The advertised URL of the ready leader, or None while no leader is known."""

    def resign(self) -> None:
        """Give leadership up promptly (graceful handoff) and stop campaigning."""


class AlwaysLeader:
    """Single-master mode: there is nobody to elect against, so this master leads from the start."""

    def __init__(self, url: str = "") -> None:
        self.url = url
        self._leader = False

    def start(self, on_elected: Callback, on_lost: Callback) -> None:
        self._leader = True
        on_elected()

    def publish(self) -> None:
        pass

    def is_leader(self) -> bool:
        return self._leader

    def leader_url(self) -> str | None:
        return self.url if self._leader else None

    def resign(self) -> None:
        self._leader = False


class KazooLeaderElection:
    """Election with kazoo's Lock recipe (ephemeral sequential nodes); the URL in an ephemeral node.

    Layout under `root`: `election/` holds the contenders' lock nodes, `leader` the ready leader's URL.
    Both leader nodes belong to the leader's session, so when the session ends (crash, pause, partition)
    ZooKeeper removes them together and the next contender wins. Leadership ends for this process on
    the first SUSPENDED or LOST: kazoo's own warning is that locks are not to be trusted while suspended,
    and acting on until LOST would let two leaders overlap for up to a session timeout.
    """

    def __init__(self, hosts: str, url: str, session_timeout_s: float = 10.0, root: str = "/titus/master",
                 client: Any = None) -> None:
        from kazoo.client import KazooClient

        self.url = url
        self.hosts = hosts
        self.root = root.rstrip("/")
        self.client = client or KazooClient(hosts=hosts, timeout=session_timeout_s,
                                            connection_retry={"max_tries": -1, "delay": 0.1, "max_delay": 1})
        self._lock = self.client.Lock(f"{self.root}/election", identifier=url)
        self._leader_path = f"{self.root}/leader"
        self._known_leader: str | None = None
        self._state_lock = threading.Lock()
        self._leader = False
        self._was_leader = False
        self._resigned = False
        self._on_elected: Callback = lambda: None
        self._on_lost: Callback = lambda: None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------ lifecycle
    def start(self, on_elected: Callback, on_lost: Callback) -> None:
        from kazoo.recipe.watchers import DataWatch

        self._on_elected = on_elected
        self._on_lost = on_lost
        from kazoo.handlers.threading import KazooTimeoutError

        self.client.add_listener(self._state_changed)
        try:
            self.client.start(timeout=15)
        except KazooTimeoutError as exc:
            self.client.close()
            raise LeaderElectionError(f"cannot reach ZooKeeper at {self.hosts}: {exc}") from exc
        self.client.ensure_path(self.root)
        DataWatch(self.client, self._leader_path, self._leader_changed)
        self._thread = threading.Thread(target=self._campaign, name="leader-election", daemon=True)
        self._thread.start()

    def _campaign(self) -> None:
        from kazoo.exceptions import CancelledError, KazooException

        try:
            acquired = self._lock.acquire(blocking=True)
        except CancelledError:
            return
        except KazooException:
            if not self._resigned:
                log.exception("leader election failed")
                self._lose("the election failed")
            return
        if not acquired or self._resigned:
            return
        with self._state_lock:
            if self.client.state != "CONNECTED":
                # The session went into doubt between winning and here: do not act on a stale win.
                log.warning("won the election while %s; not taking over", self.client.state)
                lost = True
            else:
                self._leader = self._was_leader = True
                lost = False
        if lost:
            self._lose("the session was in doubt when the election was won")
            return
        log.info("elected leader (%s)", self.url)
        self._on_elected()

    def publish(self) -> None:
        from kazoo.exceptions import NodeExistsError

        if not self._leader:
            return
        try:
            self.client.create(self._leader_path, self.url.encode(), ephemeral=True)
        except NodeExistsError:
            # Left by this session (a retried create that did succeed): holding the lock makes it ours.
            self.client.set(self._leader_path, self.url.encode())
        log.info("published leader URL %s", self.url)

    def resign(self) -> None:
        """Delete our nodes and close the session, so the next contender wins at once, not after a timeout."""
        self._resigned = True
        with self._state_lock:
            self._leader = False
        self._lock.cancel()
        try:
            if self._was_leader and self.client.connected:
                from kazoo.exceptions import NoNodeError

                try:
                    data, _ = self.client.get(self._leader_path)
                    if data.decode() == self.url:
                        self.client.delete(self._leader_path)
                except NoNodeError:
                    pass
            self.client.stop()  # closes the session: its lock node goes with it
            self.client.close()
        except Exception:
            log.exception("resigning from ZooKeeper failed; the session will time out instead")

    # -------------------------------------------------------------------------------------- state
    def is_leader(self) -> bool:
        return self._leader

    def leader_url(self) -> str | None:
        return self._known_leader

    def _leader_changed(self, data: bytes | None, _stat: Any) -> None:
        self._known_leader = data.decode() if data else None
        log.info("leader is now %s", self._known_leader or "unknown")

    def _state_changed(self, state: str) -> None:
        """Runs on kazoo's event thread: must not block, so the master's reaction runs on its own thread."""
        if state in ("SUSPENDED", "LOST"):
            if state == "LOST":
                self._known_leader = None
            with self._state_lock:
                was = self._leader
                self._leader = False
            if was and not self._resigned:
                self._lose(f"ZooKeeper session {state}")

    def _lose(self, why: str) -> None:
        log.error("leadership lost: %s", why)
        self._on_lost()

