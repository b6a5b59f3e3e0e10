"""The agent's reconciliation rules against fakes of our own Runtime and master client."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from agent.agent import Agent, AgentConfig
from agent.master_client import MasterClient
from agent.runtime.base import ExitStatus, TaskSpec, Usage
from tests.conftest import wait_for


class FakeRuntime:
    def __init__(self, running: list[str], ended: dict[str, ExitStatus]) -> None:
        self.running = set(running)
        self.ended = dict(ended)
        self.killed: list[str] = []

    def start(self, spec: TaskSpec) -> None:
        self.running.add(spec.task_id)

    def poll(self, task_id: str) -> ExitStatus | None:
        if task_id in self.ended:
            return self.ended[task_id]
        if task_id in self.running:
            return None
        raise KeyError(task_id)

    def kill(self, task_id: str, grace_s: float) -> None:
        self.poll(task_id)  # raises for what is gone, like the real runtime
        self.killed.append(task_id)

    def cleanup(self, task_id: str) -> None:
        self.running.discard(task_id)

    def logs(self, task_id: str, stream: str, tail_bytes: int = 65536) -> bytes:
        return b""

    def log_path(self, task_id: str, stream: str) -> Path | None:
        return None

    def list_running(self) -> list[str]:
        return sorted(self.running)

    def list_tasks(self) -> list[str]:
        return sorted(self.running | set(self.ended))

    def usage(self, task_id: str) -> Usage | None:
        return None


class FakeClient(MasterClient):
    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:1", "token")
        self.registrations: list[tuple[list[str], list[str]]] = []
        self.reports: list[dict[str, Any]] = []
        self.cluster_id = "cluster-a"
        self.session = 7

    def register(self, config: AgentConfig, running: list[str],
                 exited: list[str] | None = None) -> dict[str, Any]:
        self.registrations.append((sorted(running), sorted(exited or [])))
        return {"sessionEpoch": self.session, "heartbeatTimeoutMs": 3000, "clusterId": self.cluster_id}

    def report(self, agent_id: str, body: dict[str, Any]) -> None:
        self.reports.append(body)


def make(running: list[str], ended: dict[str, ExitStatus]) -> tuple[Agent, FakeRuntime, FakeClient]:
    runtime, client = FakeRuntime(running, ended), FakeClient()
    agent = Agent(AgentConfig("a1", 1, 1024, 0, 0, unknown_task_grace_s=0), runtime, client)
    return agent, runtime, client


def test_restart_registers_running_and_exited_tasks_and_reports_real_exit_status() -> None:
    agent, _, client = make(["run"], {"done": ExitStatus(3, "failed", "exited with code 3")})
    agent.start()
    agent.stop()
    assert client.registrations == [(["run"], ["done"])]
    agent._report_once()
    (update,) = client.reports[-1]["updates"]
    assert (update["taskId"], update["state"], update["exitCode"], update["reasonCode"]) == (
        "done", "Finished", 3, "failed")
    assert client.reports[-1]["runningTaskIds"] == ["run"]


def test_stale_kill_kills_at_once_and_unknown_stale_ids_are_ignored() -> None:
    agent, runtime, _ = make(["stale"], {})
    agent.start()
    agent.stop()
    agent.converge([{"taskId": "stale", "kill": True, "killGraceMs": 0, "stale": True},
                    {"taskId": "never-here", "kill": True, "killGraceMs": 0, "stale": True}], 0.0)
    assert runtime.killed == ["stale"]
    assert agent.updates == []


def test_a_task_that_vanishes_before_its_kill_ends_instead_of_failing_the_loop() -> None:
    agent, runtime, _ = make(["ghost"], {})
    agent.start()
    agent.stop()
    runtime.running.clear()  # removed behind the agent's back
    agent.converge([], 0.0)  # not wanted, grace 0: killed now
    assert agent.tasks["ghost"].finished is not None
    assert agent.tasks["ghost"].finished.reason == "crashed"


def test_no_self_fencing_task_starts_while_the_lease_is_out_and_others_do(tmp_path: Any) -> None:
    runtime, client = FakeRuntime([], {}), FakeClient()
    agent = Agent(AgentConfig("a1", 1, 1024, 0, 0), runtime, client, data_dir=tmp_path)
    watchdog_wanted: list[bool] = []
    agent._ensure_watchdog = lambda: watchdog_wanted.append(True)  # type: ignore[method-assign]
    agent.lease_deadline = time.monotonic() + 60  # the launch checks the real clock again

    def spec(task_id: str, self_fence: bool) -> dict[str, Any]:
        return {"taskId": task_id, "jobId": "j", "image": "i", "entryPoint": [], "command": ["true"],
                "env": {}, "resources": {"cpu": 1, "memoryMB": 64}, "kill": False, "selfFence": self_fence}

    agent.converge([spec("fencing", True), spec("plain", False)], now=agent.lease_deadline + 1)
    assert "fencing" not in agent.tasks  # the master may be replacing it right now
    assert "plain" in agent.tasks  # the default: cut off from the masters, work goes on
    assert not (tmp_path / "selffence" / "plain").exists()
    agent.converge([spec("fencing", True), spec("plain", False)], now=time.monotonic())
    assert "fencing" in agent.tasks
    # Marked before it starts, with a watchdog asked for, so the watchdog guards it even if we crash.
    assert (tmp_path / "selffence" / "fencing").exists()
    assert watchdog_wanted
    agent.launcher.shutdown(wait=True)
    assert runtime.running == {"fencing", "plain"}


def test_tasks_the_agent_stops_when_it_shuts_down_end_with_a_platform_reason() -> None:
    class EndsOnKill(FakeRuntime):
        def kill(self, task_id: str, grace_s: float) -> None:
            super().kill(task_id, grace_s)
            self.ended[task_id] = ExitStatus(None, "killed", "killed on request; killed by SIGTERM")

    runtime, client = EndsOnKill(["t"], {}), FakeClient()
    agent = Agent(AgentConfig("a1", 1, 1024, 0, 0, kill_tasks_on_exit=True), runtime, client)
    agent.start()
    agent.stop()
    (update,) = client.reports[-1]["updates"]
    assert (update["taskId"], update["state"]) == ("t", "Finished")
    assert update["reasonCode"] == "transientSystemError"  # not "killed": only a user's kill is
    assert update["reasonMessage"].startswith("the agent shut down and stopped its tasks")


def test_agent_metrics_count_reports_and_tasks_by_phase() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from agent.metrics import render

    agent, _, client = make(["t-run"], {})
    agent.start()
    agent.stop()
    agent._report_once()
    agent._report_once()
    samples = {(s.name, tuple(s.labels.items())): s.value
               for f in text_string_to_metric_families(render(agent).decode()) for s in f.samples}
    assert len(client.reports) == 2
    assert samples[("titus_agent_reports_total", ())] == 2
    assert samples[("titus_agent_tasks", (("phase", "running"),))] == 1
    assert samples[("titus_agent_last_report_age_seconds", ())] < 60


def test_the_agent_remembers_its_cluster_and_refuses_a_master_of_another(tmp_path: Any) -> None:
    import threading

    runtime, client = FakeRuntime(["mine"], {}), FakeClient()
    agent = Agent(AgentConfig("a1", 1, 1024, 0, 0), runtime, client, data_dir=tmp_path)
    agent.register()
    assert agent.session == 7
    assert (tmp_path / "cluster-id").read_text().strip() == "cluster-a"

    client.cluster_id, client.session = "cluster-b", 8  # a master started on an empty or foreign store
    again = threading.Thread(target=agent.register, args=(7,))
    again.start()
    wait_for(lambda: agent.cluster_refusal, timeout=5, what="the refusal")
    assert "belongs to cluster cluster-b" in agent.cluster_refusal
    assert "joined cluster cluster-a" in agent.cluster_refusal
    assert (tmp_path / "cluster-id").read_text().strip() == "cluster-a"  # not overwritten
    # Its session is not taken: the desired-set poll (the only way orders arrive) cannot start with it.
    assert again.is_alive() and agent.session == 7
    client.cluster_id, client.session = "cluster-a", 9  # our cluster's master is back
    again.join(timeout=10)
    assert not again.is_alive() and agent.session == 9 and agent.cluster_refusal == ""
    assert runtime.killed == []
