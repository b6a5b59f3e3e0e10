"""A real master (in-process, real HTTP) and one real `titus agent` (OCI runtime, busybox from the local
registry) for the CLI tests, and a helper that runs the CLI against them."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from tests.conftest import AGENT_TOKEN, API_TOKEN, RunningMaster, start_master, wait_for
from titus.cli import main

AGENT_ID = "cli-agent-1"
#: The agent process of each running cluster, by master URL (a test may stop it to see what outlives it).
AGENTS: dict[str, subprocess.Popen[bytes]] = {}


@contextlib.contextmanager
def cli_cluster(tmp: Path, heartbeat_timeout_ms: int = 15_000, log_archive: Any = None,
                **agent_env: str) -> Iterator[RunningMaster]:
    master = start_master(tmp / "master", heartbeat_timeout_ms)
    master.server.manager.log_archive = log_archive  # as MasterConfig.log_archive does
    env = {
        **os.environ,
        "TITUS_MASTER_URL": master.url,
        "TITUS_AGENT_TOKEN": AGENT_TOKEN,
        "TITUS_AGENT_ID": AGENT_ID,
        "TITUS_DATA_DIR": str(tmp / "agent"),
        "TITUS_INSTANCE_GROUP": "asg-cli",
        "TITUS_AGENT_CPU": "2",
        "TITUS_AGENT_MEMORY_MB": "1024",
        "TITUS_KILL_TASKS_ON_EXIT": "true",
        "TITUS_LOG_LEVEL": "WARNING",
        **agent_env,
    }
    env.pop("TITUS_API_TOKEN", None)
    agent = subprocess.Popen([sys.executable, "-m", "titus.cli", "agent"], env=env)
    AGENTS[master.url] = agent
    try:
        wait_for(lambda: master.api("GET", "/api/v3/agent/instances").json()["items"], timeout=30,
                 what="the agent to register")
        yield master
    finally:
        AGENTS.pop(master.url, None)
        agent.terminate()
        agent.wait(timeout=30)
        master.server.shutdown()
        master.thread.join(timeout=10)


def titus(master: RunningMaster, *args: str, token: str = API_TOKEN, stdin: str | None = None) -> Result:
    """The CLI in this process (click's CliRunner) against the real master."""
    runner = CliRunner()
    return runner.invoke(main, list(args), env={"TITUS_URL": master.url, "TITUS_API_TOKEN": token},
                         input=stdin, catch_exceptions=False)
