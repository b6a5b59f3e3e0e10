"""Fixtures for the Mesos backend: an emulated Mesos master (see emulator.py: an emulation, not Mesos) and a
real master with --backend mesos pointed at it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# pymesos is installed by scripts/install-pymesos.sh (setup.sh --test): without it this import fails the
# collection loudly instead of the Mesos tests vanishing from it.
import pymesos  # noqa: F401
import pytest

from master.server import MasterConfig, MasterServer
from tests.conftest import AGENT_TOKEN, API_TOKEN, RunningMaster, _healthy, free_port, wait_for
from tests.mesos.emulator import MesosEmulator, scheduler_master

MESOS_SETTINGS: dict[str, Any] = {
    "framework_name": "titus-test", "role": "titus", "failover_timeout_s": 3600.0,
    "executor_command": "titus executor", "offer_hold_s": 1.0, "refuse_seconds": 7.0,
    "reconcile_interval_s": 3600.0,
}


@pytest.fixture
def mesos() -> Iterator[MesosEmulator]:
    emulator = scheduler_master()
    yield emulator
    emulator.stop()


def start_mesos_master(data_dir: Path, mesos: MesosEmulator, **overrides: Any) -> RunningMaster:
    config = MasterConfig(port=free_port(), data_dir=data_dir, api_token=API_TOKEN, agent_token=AGENT_TOKEN,
                          sqlite_synchronous="NORMAL", backend="mesos", init_cluster=True,
                          mesos={**MESOS_SETTINGS, "master": mesos.address, **overrides})
    server = MasterServer(config)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.port}"
    wait_for(lambda: _healthy(url), what="master /healthz")
    return RunningMaster(url, server, thread)


def stop_master(running: RunningMaster) -> None:
    running.server.shutdown()
    running.thread.join(timeout=10)


@pytest.fixture
def mesos_master(tmp_path: Path, mesos: MesosEmulator) -> Iterator[RunningMaster]:
    running = start_mesos_master(tmp_path / "master", mesos)
    mesos.wait_call("SUBSCRIBE")
    wait_for(lambda: mesos.of_type("RECONCILE"), what="reconciliation after SUBSCRIBED")
    yield running
    stop_master(running)
