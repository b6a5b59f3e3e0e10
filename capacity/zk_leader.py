"""Leader election through ZooKeeper (kazoo's Lock recipe). The only module that imports kazoo.

Leadership is dropped the moment the session is SUSPENDED, not only when it is LOST: kazoo's docs say a
client "should not assume that locks are valid" then, and two controllers resizing one ASG would fight.
"""

from __future__ import annotations

import logging
import threading

from kazoo.client import KazooClient, KazooState
from kazoo.recipe.lock import Lock

log = logging.getLogger("capacity.leader")


class ZooKeeperLeaderElection:
    def __init__(self, hosts: str, path: str, identifier: str, retry_interval_s: float = 1.0) -> None:
        self._hosts = hosts
        self._path = path
        self._identifier = identifier
        self._retry = retry_interval_s
        self._client: KazooClient | None = None
        self._lock: Lock | None = None
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._client = KazooClient(hosts=self._hosts)
        self._client.add_listener(self._on_state)
        self._client.start(timeout=15)
        self._connected.set()
        self._thread = threading.Thread(target=self._run, name="capacity-leader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._client is not None:
            try:
                if self._lock is not None and self._lock.is_acquired:
                    self._lock.release()
            finally:
                self._client.stop()
                self._client.close()

    def is_leader(self) -> bool:
        lock = self._lock
        return self._connected.is_set() and lock is not None and bool(lock.is_acquired)

    def _on_state(self, state: str) -> None:
        # Called on kazoo's event thread: only flip flags here.
        if state == KazooState.CONNECTED:
            self._connected.set()
        else:
            self._connected.clear()
            log.warning("zookeeper session %s: not acting as capacity controller leader", state)
            if state == KazooState.LOST:
                self._lock = None

    def _run(self) -> None:
        while not self._stop.is_set():
            client = self._client
            if (
                client is not None
                and self._connected.is_set()
                and (self._lock is None or not self._lock.is_acquired)
            ):
                lock = client.Lock(self._path, self._identifier)
                try:
                    if lock.acquire(timeout=self._retry):
                        self._lock = lock
                        log.info("capacity controller %s is leader", self._identifier)
                except Exception as exc:  # a flaky session must not kill the election thread
                    log.warning("leader election attempt failed: %s", exc)
            self._stop.wait(self._retry)
