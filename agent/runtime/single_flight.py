"""Share one in-flight operation per key among concurrent callers (Go's singleflight).

Ten tasks of one job landing on an agent at once must cause one image pull, not ten: the first caller
runs the work, the others block on its outcome and get its result or its exception.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


@dataclass
class _Call(Generic[V]):
    done: threading.Event = field(default_factory=threading.Event)
    value: V | None = None
    error: BaseException | None = None
    waiters: int = 0


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[K, _Call[V]] = {}

    def do(self, key: K, work: Callable[[], V]) -> tuple[V, bool]:
        """Run `work` unless a call for `key` is in flight; returns (value, shared) where shared says
        whether this caller waited on someone else's call. Failures are not cached: the next call retries."""
        with self._lock:
            call = self._calls.get(key)
            owner = call is None
            if call is None:
                call = _Call()
                self._calls[key] = call
            else:
                call.waiters += 1
        if not owner:
            call.done.wait()
            if call.error is not None:
                raise call.error
            return call.value, True  # type: ignore[return-value]
        try:
            call.value = work()
        except BaseException as e:
            call.error = e
            raise
        finally:
            with self._lock:
                del self._calls[key]
            call.done.set()
        return call.value, False
