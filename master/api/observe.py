"""Titus's ObserveJobs / ObserveJob over HTTP: a stream of JobChangeNotification messages.

`GET /api/v3/jobs/observe` (every active job; the filters of find) and `GET /api/v3/jobs/{id}/observe`
answer `text/event-stream` (server-sent events). Each event's `data` is one JobChangeNotification in proto3
JSON, exactly Titus's message: first a snapshot (a `jobUpdate` per matching job, a `taskUpdate` per active
task), then `snapshotEnd`, then every change, with a `keepAliveResponse` whenever the stream was idle for
`keepAliveMs`. ObserveJob ends after the job's final (Finished) update, as Titus's does.

Why server-sent events rather than newline-delimited JSON: SSE's own `id:` field carries our event sequence
beside the message, so the payload stays a pure Titus message, and a reconnecting client (every SSE library
does this by itself) sends it back as `Last-Event-ID`. A client that resumes from a sequence the master
still holds gets every change after it, without a new snapshot; one whose sequence is gone (it fell more
than the event log's capacity behind) or that sends none gets a fresh snapshot. It never silently misses a
change.

What a change carries is the entity's state as committed: for each domain event the stream reads the
entity's current wire form and sends it when its version is the event's (a newer in-memory version has an
event of its own still to come, so nothing uncommitted is sent and nothing is lost); per entity, versions
only grow. A state that a later committed one overtook before the stream read it is coalesced into that
later one: the final state of every entity always arrives, in order.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from master.events import Event, EventsLost
from master.job_manager import JobManager, NotFound

#: (job id, its descriptor in wire form) -> whether the subscriber asked for this job.
JobFilter = Callable[[str, dict[str, Any]], bool]

DEFAULT_KEEP_ALIVE_MS = 10_000
#: Frames written at once at most: a burst goes out in few writes, and its first change is not held back
#: behind thousands of others.
BATCH = 200


@dataclass
class Frame:
    """One server-sent event: the message and, for changes and the snapshot's end, its sequence."""

    message: dict[str, Any]
    seq: int | None = None

    def encode(self) -> bytes:
        head = f"id: {self.seq}\n" if self.seq is not None else ""
        return f"{head}data: {json.dumps(self.message, separators=(',', ':'))}\n\n".encode()


@dataclass
class JobStream:
    """The stream for one subscriber; iterate it for frames. Pure of HTTP: the view only encodes."""

    manager: JobManager
    matches: JobFilter
    job_id: str | None = None
    since: int | None = None  # resume after this sequence, if the log still has it
    keep_alive_ms: int = DEFAULT_KEEP_ALIVE_MS
    clock_ms: Callable[[], int] = field(default=lambda: int(time.time() * 1000))
    _sent: dict[tuple[str, str], int] = field(default_factory=dict)
    _job_match: dict[str, bool] = field(default_factory=dict)
    _task_jobs: dict[str, str] = field(default_factory=dict)  # the job each task was last sent under
    _keep_alives: int = 0

    def _note(self, message: dict[str, Any]) -> dict[str, Any]:
        return {**message, "timestamp": str(self.clock_ms())}

    def __iter__(self) -> Iterator[Frame]:
        for batch in self.batches():
            yield from batch

    def chunks(self) -> Iterator[bytes]:
        """The stream as the HTTP response writes it: the frames of one batch in one write, so a burst of
        changes costs one socket write (and one waitress flush) per batch rather than per change."""
        for batch in self.batches():
            yield b"".join(frame.encode() for frame in batch)

    def batches(self) -> Iterator[list[Frame]]:
        """The frames, grouped as they became ready: the snapshot in pieces, then the frames of each read
        of the event log (at most BATCH each), or one keep-alive."""
        seq = self.since
        if seq is not None:
            try:
                self.manager.events.read_since(seq, limit=1)
            except EventsLost:
                seq = None  # too far behind: start again from a snapshot
            else:
                if seq > self.manager.events.last_seq:
                    seq = None  # a sequence this master never issued (another leader's): resynchronise
        if seq is None:
            seq, snapshot = self.manager.stream_snapshot(self.job_id)
            if self.job_id is not None and not snapshot:
                # Already finished (the view checked it exists): its final state, and the stream is done.
                final = self.manager.get_job(self.job_id)
                yield [Frame(self._note({"jobUpdate": {"job": final, "archived": True}})),
                       Frame(self._note({"snapshotEnd": {}}), seq)]
                return
            snapshot = [(j, ts) for j, ts in snapshot if self.matches(j["id"], j["jobDescriptor"])]
            batch: list[Frame] = []
            for job, tasks in snapshot:
                self._remember("job", job)
                batch.append(Frame(self._note({"jobUpdate": {"job": job, "archived": False}})))
                for task in tasks:
                    self._remember("task", task)
                    batch.append(Frame(self._note({"taskUpdate": {"task": task, "movedFromAnotherJob": False,
                                                                  "archived": False}})))
                if len(batch) >= BATCH:
                    yield batch
                    batch = []
            yield [*batch, Frame(self._note({"snapshotEnd": {}}), seq)]
        while not self.manager.closing:
            try:
                events = self.manager.events.wait_since(seq, timeout_s=self.keep_alive_ms / 1000)
            except EventsLost:
                # Fell behind the log while streaming: a fresh snapshot, then on from there.
                yield from JobStream(self.manager, self.matches, self.job_id, None, self.keep_alive_ms,
                                     self.clock_ms).batches()
                return
            if not events:
                self._keep_alives += 1
                now = str(self.clock_ms())
                yield [Frame({"keepAliveResponse": {"request": {"requestId": str(self._keep_alives),
                                                                "timestamp": now}, "timestamp": now},
                              "timestamp": now})]
                continue
            for start in range(0, len(events), BATCH):
                part = events[start:start + BATCH]
                # Only the entities this stream sends: a per-job or filtered stream builds no wire forms of
                # the rest of the cluster.
                wires = self.manager.wires({(e.kind, e.entity_id) for e in part if self._concerns(e)})
                batch = []
                for event in part:
                    seq = event.seq
                    frame = self._frame(event, wires)
                    if frame is None:
                        continue
                    batch.append(frame)
                    if self._finished_observed_job(event, frame):
                        yield batch
                        return
                if batch:
                    yield batch

    def _remember(self, kind: str, wire: dict[str, Any]) -> None:
        self._sent[(kind, str(wire["id"]))] = int(wire["version"]["timestamp"])
        if kind == "task":
            self._task_jobs[str(wire["id"])] = str(wire["jobId"])

    def _frame(self, event: Event, wires: dict[tuple[str, str], dict[str, Any]]) -> Frame | None:
        """The event's frame, from `wires` (the entities' current wire forms, read once for the batch)."""
        if not self._concerns(event):
            return None
        wire = wires.get((event.kind, event.entity_id))
        if wire is None:
            return None
        version = int(wire["version"]["timestamp"])
        key = (event.kind, event.entity_id)
        if version != event.version or version <= self._sent.get(key, 0):
            return None  # a newer committed state has its own event, or this one was sent already
        self._sent[key] = version
        if event.kind == "job":
            message = {"jobUpdate": {"job": wire, "archived": event.archived}}
        else:
            before = self._task_jobs.get(event.entity_id)
            self._task_jobs[event.entity_id] = str(wire["jobId"])
            # Titus: true on the first event of a task under the job it was moved to.
            moved = before is not None and before != wire["jobId"]
            message = {"taskUpdate": {"task": wire, "movedFromAnotherJob": moved, "archived": event.archived}}
        if event.archived:
            self._sent.pop(key, None)
            self._task_jobs.pop(event.entity_id, None)
        return Frame({**message, "timestamp": str(event.at_ms)}, event.seq)

    def _concerns(self, event: Event) -> bool:
        """Whether the event is about a job or task this stream sends (its job, its filter)."""
        if event.kind not in ("job", "task"):
            return False
        job_id = event.job_id or event.entity_id
        if self.job_id is not None and job_id != self.job_id:
            return False
        try:
            return self._job_matches(job_id)
        except NotFound:
            return False

    def _job_matches(self, job_id: str) -> bool:
        known = self._job_match.get(job_id)
        if known is None:
            descriptor = self.manager.get_job(job_id)["jobDescriptor"]
            known = self._job_match[job_id] = self.matches(job_id, descriptor)
        return known

    def _finished_observed_job(self, event: Event, frame: Frame) -> bool:
        return (self.job_id is not None and event.kind == "job"
                and frame.message["jobUpdate"]["job"]["status"]["state"] == "Finished")
