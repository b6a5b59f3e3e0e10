"""Domain events: one per committed change of a job, task, agent or group, numbered in commit order.

The manager queues a store batch under its lock and takes a ticket for it there (`reserve`), so tickets
follow memory order, which is also the store's commit order. It waits for durability outside the lock;
then `publish(ticket, ...)` numbers the batch's events (a sequence that only grows) once every earlier
ticket is published, and hands them to the subscribers, without ever blocking the caller. So no
subscriber ever hears of a change the store might still refuse (DESIGN.md #5), and an entity's events
arrive in the order of its versions.

Subscribers come in two kinds:
- callbacks (`subscribe`), called synchronously in commit order, for cheap consumers such as the metrics;
- readers (`read_since`, `wait_since`) that keep their own cursor, for the event stream and any consumer
  that may lag: the log keeps the last `capacity` events; a reader that fell further behind is told so
  (`EventsLost`) and must resynchronise from the state.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger("titus.master.events")


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    kind: str  # "job", "task", "agent", "capacity_group", "instance_group", "framework"
    entity_id: str
    version: int  # the entity's version after this change
    state: str  # the entity's state after it (jobs and tasks), else ""
    archived: bool
    at_ms: int
    job_id: str = ""  # the job of a task (or the job itself)


@dataclass(frozen=True, slots=True)
class Change:
    """An event before it has a number: what `_queue` captured from one write."""

    kind: str
    entity_id: str
    version: int
    state: str
    archived: bool
    job_id: str = ""


#: A leader term numbers at most 2**40 events (decades at thousands a second) before the next term's range.
TERM_SHIFT = 40


class EventsLost(Exception):
    """The reader's cursor is older than the oldest event kept."""


class EventLog:
    def __init__(self, clock: Callable[[], int], capacity: int = 100_000) -> None:
        self._clock = clock
        self._events: deque[Event] = deque(maxlen=capacity)
        self._seq = 0
        self._closed = False  # wake(): waits return at once
        self._cond = threading.Condition(threading.Lock())
        self._subscribers: list[Callable[[Event], None]] = []
        self._tickets = 0  # handed out by reserve
        self._next_ticket = 1  # the next one publish may number
        self._done: dict[int, Sequence[Change]] = {}  # committed batches waiting for an earlier ticket

    @property
    def last_seq(self) -> int:
        return self._seq

    def start_term(self, epoch: int) -> None:
        """Number this leader term's events from `epoch << TERM_SHIFT`: sequences of different terms never
        overlap, so a reader resuming with a sequence another master (or this one before a restart) issued
        is either behind this term's start (EventsLost: it resynchronises from the state) or ahead of
        anything issued (the stream resynchronises too), never handed this term's events under numbers it
        takes for ones it already saw. Events kept from before are dropped for the same reason."""
        with self._cond:
            base = epoch << TERM_SHIFT
            if base > self._seq:
                self._seq = base
                self._events.clear()

    def wake(self) -> None:
        """Release every reader waiting in wait_since (the master is closing: streams end now, not after
        their keep-alive period)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def subscribe(self, callback: Callable[[Event], None]) -> None:
        self._subscribers.append(callback)


    def reserve(self) -> int:
        """A place in the publication order; called under the manager's lock when a batch is queued."""
        with self._cond:
            self._tickets += 1
            return self._tickets

    def publish(self, ticket: int, changes: Sequence[Change]) -> None:
        """Called after the store committed `changes` (or, with none, refused them: the ticket is released).

        Never waits: the batch is parked under its ticket, and whichever caller completes the run of
        tickets after the last published one numbers and delivers that whole run, in ticket order.
        """
        with self._cond:
            self._done[ticket] = changes
            if ticket != self._next_ticket:
                return  # an earlier batch is still on its way; its publisher will deliver ours
            now = self._clock()
            events: list[Event] = []
            while self._next_ticket in self._done:
                for c in self._done.pop(self._next_ticket):
                    self._seq += 1
                    events.append(
                        Event(self._seq, c.kind, c.entity_id, c.version, c.state, c.archived, now, c.job_id)
                    )
                self._next_ticket += 1
            if not events:
                return
            self._events.extend(events)
            # Callbacks run under the log's own lock so every subscriber sees events in sequence order.
            for event in events:
                for callback in self._subscribers:
                    try:
                        callback(event)
                    except Exception:
                        log.exception("event subscriber failed on %s %s", event.kind, event.entity_id)
            self._cond.notify_all()

    def read_since(self, seq: int, limit: int = 1000) -> list[Event]:
        with self._cond:
            return self._read(seq, limit)

    def wait_since(self, seq: int, timeout_s: float, limit: int = 1000) -> list[Event]:
        """Events after `seq`, waiting up to `timeout_s` for the first one."""
        with self._cond:
            self._cond.wait_for(lambda: self._seq > seq or self._closed, timeout=timeout_s)
            return self._read(seq, limit)

    def _read(self, seq: int, limit: int) -> list[Event]:
        if seq >= self._seq:
            return []
        oldest = self._events[0].seq if self._events else self._seq + 1
        if seq + 1 < oldest:
            raise EventsLost(f"events after {seq} are gone; the oldest kept is {oldest}")
        start = seq + 1 - oldest
        return [self._events[i] for i in range(start, min(len(self._events), start + limit))]


def log_event(event: Event) -> None:
    """A subscriber: one DEBUG line per committed change, carrying the job and task ids as JSON fields."""
    if log.isEnabledFor(logging.DEBUG):
        ids = {"job_id": event.job_id} if event.job_id else {}
        if event.kind == "task":
            ids["task_id"] = event.entity_id
        log.debug(
            "%s %s v%d %s%s",
            event.kind,
            event.entity_id,
            event.version,
            event.state or "changed",
            " (archived)" if event.archived else "",
            extra={"seq": event.seq, **ids},
        )
