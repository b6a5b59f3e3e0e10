"""Log lines are JSON with the job, task and agent ids as fields (shared/logs.py + the event subscriber)."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

from master.job_manager import JobManager, Settings
from master.store.sqlite import SqliteJobStore
from shared.logs import JsonFormatter
from tests.conftest import batch_job
from tests.unit.test_job_manager import Clock, register, submit


def test_master_lines_carry_ids_as_json_fields(tmp_path: Path) -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("titus")
    root.addHandler(handler)
    old = root.level
    root.setLevel(logging.DEBUG)
    try:
        jm = JobManager(SqliteJobStore(tmp_path / "t.db", "OFF"), Clock(), Settings())
        jm.start(init_cluster=True)
        register(jm, "a1")
        job_id = submit(jm, batch_job(size=1))
        jm.schedule_once()
        jm.store.close()
    finally:
        root.removeHandler(handler)
        root.setLevel(old)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
    assert any(line.get("agent_id") == "a1" and "registered" in line["msg"] for line in lines)
    task_lines = [line for line in lines if line.get("task_id")]
    assert task_lines and all(line["job_id"] == job_id for line in task_lines)
    assert any(line["msg"].endswith("Launched") for line in task_lines)
    job_lines = [line for line in lines if line.get("job_id") == job_id and "task_id" not in line]
    assert job_lines and "Accepted" in job_lines[0]["msg"]
