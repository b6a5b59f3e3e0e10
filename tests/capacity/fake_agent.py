"""A fake of our own agent channel (register, desired set, status reports) played by the test, so a real
master can drain and consolidate without running containers: a task it is given is Started at the next
`converge`, a task it is told to kill is Finished (killed)."""

from __future__ import annotations

from typing import Any

import requests

from tests.conftest import AGENT_TOKEN

#: An m5.4xlarge, as the moto ASGs of tests/capacity launch.
M5_RESOURCES = {"cpu": 16, "memoryMB": 65536, "diskMB": 204800, "networkMbps": 10000}


class FakeAgent:
    def __init__(self, url: str, agent_id: str, instance_id: str, group: str) -> None:
        self.url = url
        self.id = agent_id
        self.running: set[str] = set()
        self.unavailable = ""
        self._headers = {"Authorization": f"Bearer {AGENT_TOKEN}"}
        reg = {
            "id": agent_id,
            "resources": M5_RESOURCES,
            "attributes": {"tier": "flex", "instanceGroup": group, "zone": "z1", "instanceId": instance_id},
        }
        r = requests.post(
            f"{url}/api/v3/agent/instances/register", json=reg, headers=self._headers, timeout=10
        )
        assert r.status_code == 200, r.text
        self.session = int(r.json()["sessionEpoch"])

    def converge(self) -> set[str]:
        """One round: read the desired set, start what is new, finish what is to be killed (returns what
        runs); the report doubles as the heartbeat."""
        r = requests.get(
            f"{self.url}/api/v3/agent/instances/{self.id}/assignments",
            params={"since": -1, "session": self.session, "waitMs": 0},
            headers=self._headers,
            timeout=10,
        )
        assert r.status_code == 200, r.text
        updates: list[dict[str, Any]] = []
        for task in r.json()["tasks"]:
            tid = task["taskId"]
            if task.get("kill"):
                if tid in self.running or not task.get("stale"):
                    updates.append(
                        {"taskId": tid, "state": "Finished", "reasonCode": "killed", "exitCode": 143}
                    )
                self.running.discard(tid)
            elif tid not in self.running:
                updates.append({"taskId": tid, "state": "Started", "reasonCode": "normal"})
                self.running.add(tid)
        report = {
            "sessionEpoch": self.session,
            "updates": updates,
            "runningTaskIds": sorted(self.running),
            "unavailableReason": self.unavailable,
        }
        r = requests.post(
            f"{self.url}/api/v3/agent/instances/{self.id}/status",
            json=report,
            headers=self._headers,
            timeout=10,
        )
        assert r.status_code == 200, r.text
        return set(self.running)
