"""HttpClusterView and the CLI against a real HTTP server speaking the master's API shapes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from capacity.cli import capacity_controller
from capacity.cluster import ClusterError, HttpClusterView
from capacity.model import Lifecycle, Tier
from capacity.status import StatusServer
from tests.capacity.conftest import Aws, free_port
from tests.capacity.fake_master import agent_doc, create_fake_master, task_doc

TOKEN = "master-token"


@pytest.fixture
def master() -> Iterator[tuple[str, dict[str, Any]]]:
    state: dict[str, Any] = {"agents": [], "tasks": [], "applications": []}
    server = StatusServer(create_fake_master(state, TOKEN), port=0)
    server.start()
    yield f"http://127.0.0.1:{server.port}", state
    server.stop()


def test_reads_agents_tasks_groups_and_follows_pages(master: tuple[str, dict[str, Any]]) -> None:
    url, state = master
    state["agents"] = [
        agent_doc("a1", "i-1", "crit-asg", "critical", ["t1"], None),
        agent_doc("a2", "i-2", "flex-asg", "flex", [], 1_700_000_000_000),
    ]
    state["tasks"] = [task_doc(f"t{n}", "flex", 1_700_000_000_000 + n) for n in range(25)]
    state["applications"] = [
        {
            "appName": "api",
            "tier": "critical",
            "resourceDimension": {"cpu": 2, "memoryMB": 4096, "diskMB": 1000, "networkMbps": 100},
            "instanceCount": 10,
        }
    ]
    snap = HttpClusterView(url, TOKEN, page_size=10).snapshot()
    by_id = {a.id: a for a in snap.agents}
    assert by_id["a1"].critical_task_count == 1 and by_id["a1"].instance_id == "i-1"
    assert by_id["a2"].idle_since == 1_700_000_000.0 and by_id["a2"].node_group_id == "flex-asg"
    assert len(snap.pending_tasks) == 25 and {t.tier for t in snap.pending_tasks} == {Tier.FLEX}
    assert snap.pending_tasks[3].pending_since == pytest.approx(1_700_000_000.003)
    assert snap.capacity_groups[0].reservation().cpu == 20


def test_phase_out_is_a_put_and_bad_token_is_an_error(master: tuple[str, dict[str, Any]]) -> None:
    url, state = master
    state["agents"] = [agent_doc("a1", "i-1", "flex-asg", "flex", [], 1)]
    HttpClusterView(url, TOKEN).set_lifecycle("a1", Lifecycle.PHASED_OUT)
    assert state["agents"][0]["lifecycle"] == "PhasedOut"
    with pytest.raises(ClusterError, match="401"):
        HttpClusterView(url, "wrong").snapshot()


def test_cli_once_scales_a_tagged_asg(
    aws: Aws, master: tuple[str, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, state = master
    flex = aws.tier_asg("flex", desired=0, max_size=5)
    state["tasks"] = [task_doc(f"t{n}", "flex", 1_000, cpu=8) for n in range(4)]  # long overdue: 32 cpu
    config = tmp_path / "capacity.toml"
    config.write_text(
        f"""
cluster = "{aws.cluster}"
region = "us-east-1"
endpoint_url = "{aws.url}"
master_url = "{url}"
token_env = "TEST_TITUS_TOKEN"

[tiers.flex]
pending_threshold_s = 30
"""
    )
    monkeypatch.setenv("TEST_TITUS_TOKEN", TOKEN)
    result = CliRunner().invoke(capacity_controller, ["--config", str(config), "--once"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output.strip().splitlines()[-1])
    assert plan["desired"][0]["desired"] == 2
    assert aws.describe(flex)["DesiredCapacity"] == 2


def test_cli_rejects_unknown_config_keys(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('cluster = "x"\n[tiers.flex]\npending_treshold_s = 3\n')
    result = CliRunner().invoke(capacity_controller, ["--config", str(config), "--once"])
    assert result.exit_code != 0 and "pending_treshold_s" in result.output


def test_controller_process_serves_its_decisions(
    aws: Aws, master: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    """The real loop in its own process: scales the ASG and shows why at GET /api/v3/capacity."""
    url, state = master
    flex = aws.tier_asg("flex", desired=0, max_size=5)
    state["tasks"] = [task_doc("t1", "flex", 1_000, cpu=8)]
    port = free_port()
    config = tmp_path / "capacity.json"
    config.write_text(
        json.dumps(
            {
                "cluster": aws.cluster,
                "endpoint_url": aws.url,
                "master_url": url,
                "token_env": "TEST_TITUS_TOKEN",
                "status_port": port,
                "interval_s": 1,
            }
        )
    )
    env = {
        **os.environ,
        "TEST_TITUS_TOKEN": TOKEN,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from capacity.cli import capacity_controller; capacity_controller()",
            "--config",
            str(config),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    status = f"http://127.0.0.1:{port}/api/v3/capacity"
    doc: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (doc.get("recentActions")):
            try:
                resp = requests.get(status, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=2)
                doc = resp.json() if resp.status_code == 200 else {}
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        assert requests.get(status, timeout=2).status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert doc["recentActions"][0]["kind"] == "scale_up" and doc["recentActions"][0]["ok"]
    assert aws.describe(flex)["DesiredCapacity"] == 1
    log_lines = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    assert any(line.get("event") == "action" for line in log_lines)
