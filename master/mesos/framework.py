"""The Mesos resource backend: our master as a Mesos framework, through pymesos's scheduler driver.

Only the leader runs it (MasterServer starts it after taking leadership and stops it when fenced). Flow:

- OFFERS are held per agent; each agent with offers is shown to the placement engine with the offered
  resources free (`JobManager.offered_agent`). The engine places tasks as for native agents.
- Placing a task changes that agent's desired set; `agent_changed` wakes a worker thread that converges
  Mesos to the desired sets, as our agents do: Launched tasks not yet sent go out in one ACCEPT of all
  the agent's held offers; KillInitiated tasks get a KILL (resent every reconciliation period until
  Mesos reports them ended). Offers nobody used are DECLINEd with a refuse filter once held for
  `offer_hold_s`, or at once when nothing is pending.
- UPDATEs go through the same transitions as an agent's report and are ACKNOWLEDGEd only once the
  resulting state is durable (DESIGN.md #3), so a crash before the write means Mesos resends.
- On (re)registration and every `reconcile_interval_s`: explicit reconciliation of every task we hold
  on an agent, then implicit reconciliation (an empty list) so Mesos also reports tasks we forgot; a
  running task we do not know is killed.
- RESCIND drops an offer (a task placed on it but not yet sent is finished as lost and retried);
  FAILURE of an agent and TASK_LOST/UNREACHABLE updates finish its tasks as lost; a disconnection drops
  the held offers and nothing else: Mesos keeps the tasks, and the reconciliation after re-registering
  tells us how they are.
- The FrameworkID is stored (kind "framework") so a new leader re-registers as the same framework within
  `failover_timeout` and Mesos keeps our tasks running meanwhile; stop() never tears the framework down.

pymesos's callbacks are camelCase (they mirror the C++ API); `_Callbacks` turns them into calls on
this PEP 8 class and nothing else imports pymesos.
"""

from __future__ import annotations

import getpass
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pymesos import MesosSchedulerDriver, Scheduler

from master.api.models import TaskUpdate
from master.core import states
from master.mesos import model
from master.scheduler.model import Resources

if TYPE_CHECKING:
    from master.job_manager import JobManager

log = logging.getLogger("titus.master.mesos")


@dataclass(frozen=True)
class MesosSettings:
    master: str = "127.0.0.1:5050"  # host:port of a Mesos master, or zk://host:2181/mesos
    framework_name: str = "titus"
    role: str = "*"
    user: str = ""  # empty: the user the master runs as
    failover_timeout_s: float = 7 * 86_400.0
    executor_command: str = "titus executor"
    offer_hold_s: float = 10.0
    refuse_seconds: float = 5.0
    reconcile_interval_s: float = 60.0
    principal: str | None = None
    secret: str | None = None


class MesosBackend:
    """ResourceBackend for a Mesos cluster (see the module docstring)."""

    def __init__(self, manager: JobManager, settings: MesosSettings,
                 driver_factory: Callable[..., Any] = MesosSchedulerDriver) -> None:
        self.manager = manager
        self.settings = settings
        self._driver_factory = driver_factory
        self.driver: Any = None
        self.framework_id: str | None = None
        self._record_version = 0
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._offers: dict[str, model.Offer] = {}
        self._dirty: set[str] = set()
        self._sent: set[str] = set()  # task ids handed to Mesos in an ACCEPT (or by an earlier leader)
        self._kills: dict[str, float] = {}  # task id -> when the last KILL went out
        self._known_agents: set[str] = set()
        self._next_reconcile = 0.0
        self._stopping = threading.Event()
        self._worker = threading.Thread(target=self._run, name="mesos-backend", daemon=True)
        self.connected = threading.Event()

    # ------------------------------------------------------------------------------ ResourceBackend
    def start(self) -> None:
        stored = self.manager.load_record(self._record_id)
        if stored is not None:
            record, self._record_version = stored
            self.framework_id = record.get("frameworkId") or None
        for agent_id, entries in self.manager.desired_sets().items():
            # Tasks an earlier leader placed: we cannot know whether it sent them, so reconciliation decides.
            self._sent.update(e["taskId"] for e in entries)
            self.manager.offered_agent(agent_id, Resources(), {})
            self._known_agents.add(agent_id)
        self._start_driver()
        self._worker.start()

    def stop(self) -> None:
        """Fenced or shutting down: stop the driver without TEARDOWN, so the next leader keeps the tasks."""
        self._stopping.set()
        with self._lock:
            self._wake.notify_all()
            driver, self.driver = self.driver, None
        if driver is not None:
            try:
                driver.stop(failover=True)
            except Exception:
                log.exception("stopping the Mesos driver failed")

    def agent_changed(self, agent_id: str) -> None:
        with self._lock:
            self._dirty.add(agent_id)
            self._wake.notify_all()

    # --------------------------------------------------------------------------------- driver events
    @property
    def _record_id(self) -> str:
        return self.settings.framework_name

    def _framework_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "user": self.settings.user or getpass.getuser(), "name": self.settings.framework_name,
            "role": self.settings.role, "failover_timeout": self.settings.failover_timeout_s,
            "checkpoint": True,
        }
        if self.framework_id:
            info["id"] = {"value": self.framework_id}
        return info

    def _start_driver(self) -> None:
        driver = self._driver_factory(
            _Callbacks(self), self._framework_info(), self.settings.master, use_addict=False,
            implicit_acknowledgements=False, principal=self.settings.principal, secret=self.settings.secret,
            failover=True)
        with self._lock:
            if self._stopping.is_set():
                return
            self.driver = driver
        driver.start()

    def registered(self, framework_id: str) -> None:
        if framework_id != self.framework_id:
            self.manager.save_record(self._record_id, self._record_version,
                             {"name": self.settings.framework_name, "frameworkId": framework_id})
            self._record_version += 1
            self.framework_id = framework_id
        log.info("registered with Mesos as framework %s", framework_id)
        self.connected.set()
        self._reconcile()

    def reregistered(self) -> None:
        log.info("re-registered with Mesos as framework %s", self.framework_id)
        self.connected.set()
        self._reconcile()

    def disconnected(self) -> None:
        """Offers die with the connection; tasks do not (Mesos keeps them, reconciliation tells us)."""
        log.warning("disconnected from the Mesos master; holding on to every task")
        self.connected.clear()
        with self._lock:
            agents = {o.agent_id for o in self._offers.values()}
            self._offers.clear()
        for agent_id in agents:
            self._show_agent(agent_id)

    def offers(self, offers: list[dict[str, Any]]) -> None:
        now = time.monotonic()
        parsed = [model.parse_offer(o, self.settings.role, now) for o in offers]
        with self._lock:
            for o in parsed:
                self._offers[o.offer_id] = o
                self._known_agents.add(o.agent_id)
        for agent_id in {o.agent_id for o in parsed}:
            self._show_agent(agent_id, dict(next(o.attributes for o in parsed if o.agent_id == agent_id)))
        self.agent_changed("")  # let the worker decline at once when nothing is pending

    def rescinded(self, offer_id: str) -> None:
        with self._lock:
            offer = self._offers.pop(offer_id, None)
        if offer is not None:
            self._show_agent(offer.agent_id)

    def status(self, status: dict[str, Any]) -> None:
        task_id = status["task_id"]["value"]
        agent_id = (status.get("agent_id") or {}).get("value", "")
        state = str(status.get("state"))
        update = model.to_update(status)
        with self.manager.lock:
            task = self.manager.tasks.get(task_id)
            ours = task is not None and task.state in states.TASK_ON_AGENT
            if task is not None and not agent_id:
                agent_id = task.agent_id or ""
        if not ours and state not in model.TERMINAL_MESOS_STATES:
            log.warning("Mesos runs task %s that is not ours to run; killing it", task_id)
            self._call(lambda d: d.killTask({"value": task_id}))
        elif ours and update is not None and agent_id:
            if self.manager.agent_of(agent_id) is None:
                self.manager.offered_agent(agent_id, Resources(), {})
            self.manager.apply_updates(agent_id, [update])
        if state in model.TERMINAL_MESOS_STATES:
            with self._lock:
                self._kills.pop(task_id, None)
        if status.get("uuid"):  # only after the change above is durable
            self._call(lambda d: d.acknowledgeStatusUpdate(status))

    def agent_lost(self, agent_id: str) -> None:
        log.warning("Mesos reports agent %s lost", agent_id)
        with self._lock:
            for offer_id in [i for i, o in self._offers.items() if o.agent_id == agent_id]:
                del self._offers[offer_id]
            self._known_agents.discard(agent_id)
        self.manager.agent_gone(agent_id)

    def error(self, message: str) -> None:
        """ERROR ends the framework (e.g. removed after its failover timeout): register anew."""
        log.error("Mesos ended framework %s: %s; registering as a new framework", self.framework_id, message)
        self.connected.clear()
        self.framework_id = None
        with self._lock:
            driver, self.driver = self.driver, None
            self._offers.clear()
        if driver is not None:
            threading.Thread(target=self._restart, args=(driver,), daemon=True).start()

    def _restart(self, old: Any) -> None:
        try:
            old.stop(failover=True)
        except Exception:
            log.exception("stopping the ended framework's driver failed")
        self._start_driver()

    def heartbeat(self) -> None:
        with self._lock:
            agents = set(self._known_agents)
        self.manager.keep_alive(agents)

    # ------------------------------------------------------------------------------------ the worker
    def _show_agent(self, agent_id: str, attributes: dict[str, str] | None = None) -> None:
        with self._lock:
            held = [o for o in self._offers.values() if o.agent_id == agent_id]
        agent = self.manager.agent_of(agent_id)
        attrs = attributes if attributes is not None else (dict(agent.attributes) if agent else {})
        self.manager.offered_agent(agent_id, model.total(held), attrs)

    def _call(self, action: Callable[[Any], Any]) -> bool:
        driver = self.driver
        if driver is None or self._stopping.is_set():
            return False
        try:
            action(driver)
            return True
        except Exception as exc:  # not connected, or the master refused: the next pass retries
            log.warning("Mesos call failed: %s", exc)
            return False

    def _run(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                self._wake.wait_for(lambda: bool(self._dirty) or self._stopping.is_set(), timeout=1.0)
                self._dirty.clear()
            if self._stopping.is_set():
                return
            try:
                self.converge(time.monotonic())
            except Exception:
                log.exception("Mesos backend pass failed; continuing")
                self._stopping.wait(0.5)

    def converge(self, now: float) -> None:
        """One pass: launch, kill, decline, reconcile. Public so tests can drive it with their clock."""
        self.heartbeat()  # also while disconnected: whether an agent is gone is for Mesos to say
        if not self.connected.is_set() or not self.framework_id:
            return
        desired = self.manager.desired_sets()
        for agent_id, entries in desired.items():
            self._launch(agent_id, [e for e in entries if e["state"] == states.LAUNCHED
                                    and e["taskId"] not in self._sent])
            for e in entries:
                if e["kill"]:
                    self._kill(e["taskId"], now)
        self._decline(now)
        if now >= self._next_reconcile:
            self._reconcile(now)

    def _kill(self, task_id: str, now: float) -> None:
        sent = self._kills.get(task_id)
        if (sent is None or now - sent >= self.settings.reconcile_interval_s) and self._call(
                lambda d: d.killTask({"value": task_id})):
            self._kills[task_id] = now

    def _launch(self, agent_id: str, entries: list[dict[str, Any]]) -> None:
        if not entries:
            return
        with self._lock:
            held = [o for o in self._offers.values() if o.agent_id == agent_id]
            for o in held:
                del self._offers[o.offer_id]
        if not held:  # the offers went (rescinded, disconnected) between placement and launch
            self.manager.apply_updates(agent_id, [TaskUpdate(
                taskId=e["taskId"], state="Finished", reasonCode=states.REASON_LOST,
                reasonMessage="the Mesos offer it was placed on was withdrawn before the launch")
                for e in entries])
            return
        assert self.framework_id is not None
        infos = [model.task_info(e, agent_id, self.framework_id, self.settings.executor_command,
                                 held[0].allocation_info) for e in entries]
        offer_ids = [{"value": o.offer_id} for o in held]
        operations = [{"type": "LAUNCH", "launch": {"task_infos": infos}}]
        self._sent.update(e["taskId"] for e in entries)
        if not self._call(lambda d: d.acceptOffers(offer_ids, operations,
                                                   {"refuse_seconds": self.settings.refuse_seconds})):
            # Not sent: Mesos reports the unknown tasks lost at the next reconciliation, or the launch
            # timeout finishes them; either way they are retried, never run twice.
            log.warning("ACCEPT for %d task(s) on %s failed", len(infos), agent_id)
        log.info("launching %d task(s) on Mesos agent %s", len(infos), agent_id)
        self._show_agent(agent_id)

    def _decline(self, now: float) -> None:
        nothing_pending = self.manager.pending_count() == 0
        with self._lock:
            stale = [o for o in self._offers.values()
                     if nothing_pending or now - o.received_s >= self.settings.offer_hold_s]
            for o in stale:
                del self._offers[o.offer_id]
        if not stale:
            return
        ids = [{"value": o.offer_id} for o in stale]
        self._call(lambda d: d.declineOffer(ids, {"refuse_seconds": self.settings.refuse_seconds}))
        for agent_id in {o.agent_id for o in stale}:
            self._show_agent(agent_id)

    def _reconcile(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._next_reconcile = now + self.settings.reconcile_interval_s
        tasks = [{"task_id": {"value": e["taskId"]}, "agent_id": {"value": agent_id}}
                 for agent_id, entries in self.manager.desired_sets().items() for e in entries]
        if tasks:
            self._call(lambda d: d.reconcileTasks(tasks))
        self._call(lambda d: d.reconcileTasks([]))


class _Callbacks(Scheduler):  # type: ignore[misc]
    """pymesos's camelCase Scheduler interface, forwarded to MesosBackend; never lets an exception escape
    into the driver's event loop (one bad event must not stop the stream)."""

    def __init__(self, backend: MesosBackend) -> None:
        self.backend = backend

    def _safely(self, what: str, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception:
            log.exception("handling Mesos %s failed", what)

    def registered(self, driver: Any, framework_id: dict[str, Any], master_info: dict[str, Any]) -> None:
        self._safely("SUBSCRIBED", lambda: self.backend.registered(framework_id["value"]))

    def reregistered(self, driver: Any, master_info: dict[str, Any]) -> None:
        self._safely("SUBSCRIBED", self.backend.reregistered)

    def disconnected(self, driver: Any) -> None:
        self._safely("disconnection", self.backend.disconnected)

    def resourceOffers(self, driver: Any, offers: list[dict[str, Any]]) -> None:
        self._safely("OFFERS", lambda: self.backend.offers(offers))

    def offerRescinded(self, driver: Any, offer_id: dict[str, Any]) -> None:
        self._safely("RESCIND", lambda: self.backend.rescinded(offer_id["value"]))

    def statusUpdate(self, driver: Any, status: dict[str, Any]) -> None:
        self._safely("UPDATE", lambda: self.backend.status(status))

    def slaveLost(self, driver: Any, agent_id: dict[str, Any]) -> None:
        self._safely("FAILURE", lambda: self.backend.agent_lost(agent_id["value"]))

    def executorLost(self, driver: Any, executor_id: dict[str, Any], agent_id: dict[str, Any],
                     status: int) -> None:
        # One executor per task: Mesos follows this with the task's own terminal UPDATE.
        log.warning("executor %s on %s ended with status %s", executor_id.get("value"), agent_id.get("value"),
                    status)

    def error(self, driver: Any, message: str) -> None:
        self._safely("ERROR", lambda: self.backend.error(message))

    def processHeartBeat(self, driver: Any) -> None:
        self._safely("HEARTBEAT", self.backend.heartbeat)
