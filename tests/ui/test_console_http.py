"""The console over plain HTTP against a real master: auth redirect, cookie flags, CSRF refusal, filters,
actions through the API's own operations, agents/groups pages. The browser test: tests/ui/test_console.py."""

from __future__ import annotations

import html
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.capacity.fake_agent import FakeAgent
from tests.conftest import API_TOKEN, RunningMaster, batch_job, service_job, start_master, wait_for
from tests.ui.conftest import csrf_of, login


def _submit(m: RunningMaster, job: dict[str, Any]) -> str:
    r = m.api("POST", "/api/v3/jobs", json=job)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def test_unauthenticated_pages_redirect_to_login(ui_master: RunningMaster) -> None:
    for path in (
        "/ui/",
        "/ui/jobs?state=Accepted",
        "/ui/agents",
        "/ui/instance-groups",
        "/ui/capacity-groups",
        "/ui/jobs/nope",
        "/ui/tasks/nope",
        "/ui/tasks/nope/logs",
        "/ui/events",
        "/ui/tasks/nope/logs/events",
    ):
        r = requests.get(ui_master.url + path, allow_redirects=False, timeout=10)
        assert r.status_code == 302, (path, r.status_code)
        assert r.headers["Location"].startswith("/ui/login?next="), r.headers["Location"]
    # htmx fragments get 401, not a login form swapped into the page
    r = requests.get(
        ui_master.url + "/ui/jobs", headers={"HX-Request": "true"}, allow_redirects=False, timeout=10
    )
    assert r.status_code == 401
    # a forged cookie is no better than none
    r = requests.get(
        ui_master.url + "/ui/jobs", cookies={"titus_ui_token": "guess"}, allow_redirects=False, timeout=10
    )
    assert r.status_code == 302
    # nor is the agent token (the API refuses it for the user API too)
    r = requests.get(
        ui_master.url + "/ui/jobs",
        cookies={"titus_ui_token": "test-agent-token"},
        allow_redirects=False,
        timeout=10,
    )
    assert r.status_code == 302


def test_login_sets_a_strict_httponly_cookie_and_refuses_bad_tokens(ui_master: RunningMaster) -> None:
    r = requests.post(ui_master.url + "/ui/login", data={"token": "wrong"}, allow_redirects=False, timeout=10)
    assert r.status_code == 401
    assert "not valid" in r.text
    assert "Set-Cookie" not in r.headers
    r = requests.post(
        ui_master.url + "/ui/login",
        data={"token": API_TOKEN, "next": "/ui/agents"},
        allow_redirects=False,
        timeout=10,
    )
    assert r.status_code == 302 and r.headers["Location"] == "/ui/agents"
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith(f"titus_ui_token={API_TOKEN};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui" in cookie
    # next= may only point inside the console: no open redirect through the login page
    for evil in ("https://evil.example/", "//evil.example/ui/", "/api/v3/jobs", "/ui/\\evil"):
        r = requests.post(
            ui_master.url + "/ui/login",
            data={"token": API_TOKEN, "next": evil},
            allow_redirects=False,
            timeout=10,
        )
        assert r.headers["Location"] == "/ui/jobs", evil


def test_logout_clears_the_cookie(ui_master: RunningMaster) -> None:
    s = login(ui_master.url)
    page = s.get(ui_master.url + "/ui/jobs", timeout=10)
    r = s.post(
        ui_master.url + "/ui/logout",
        data={"csrf_token": csrf_of(page.text)},
        allow_redirects=False,
        timeout=10,
    )
    assert r.status_code == 302
    assert s.get(ui_master.url + "/ui/jobs", allow_redirects=False, timeout=10).status_code == 302


def test_posts_without_a_valid_csrf_token_are_refused_and_change_nothing(ui_master: RunningMaster) -> None:
    job_id = _submit(ui_master, service_job(desired=1, applicationName="csrfvictim"))
    s = login(ui_master.url)
    token = csrf_of(s.get(f"{ui_master.url}/ui/jobs/{job_id}", timeout=10).text)
    attempts: list[tuple[dict[str, str], dict[str, str]]] = [
        ({}, {}),  # no token (a plain cross-site form)
        ({"csrf_token": "0" * 64}, {}),  # a guessed one
        ({"csrf_token": token}, {"Origin": "https://evil.example"}),  # the right one, from another site
    ]
    for data, headers in attempts:
        for action in ("kill", "disable"):
            r = s.post(
                f"{ui_master.url}/ui/jobs/{job_id}/{action}",
                data=data,
                headers=headers,
                allow_redirects=False,
                timeout=10,
            )
            assert r.status_code == 403, (action, data, headers, r.status_code)
            assert "CSRF" in r.text
        r = s.post(
            f"{ui_master.url}/ui/jobs/{job_id}/scale",
            data={**data, "desired": "5"},
            headers=headers,
            allow_redirects=False,
            timeout=10,
        )
        assert r.status_code == 403
    wire = ui_master.api("GET", f"/api/v3/jobs/{job_id}").json()
    assert wire["status"]["state"] == "Accepted"
    assert wire["jobDescriptor"]["service"]["capacity"]["desired"] == 1
    assert wire["jobDescriptor"]["service"]["enabled"] is True
    # and the same request with the token goes through, through the API's own operation
    r = s.post(
        f"{ui_master.url}/ui/jobs/{job_id}/kill",
        data={"csrf_token": token},
        allow_redirects=False,
        timeout=10,
    )
    assert r.status_code == 303
    assert ui_master.api("GET", f"/api/v3/jobs/{job_id}").json()["status"]["state"] in (
        "KillInitiated",
        "Finished",
    )


def test_jobs_filter_by_state_app_owner_and_capacity_group(ui_master: RunningMaster) -> None:
    group = {
        "appName": "uifilters",
        "tier": "flex",
        "instanceCount": 2,
        "resourceDimension": {"cpu": 1, "memoryMB": 256, "diskMB": 100, "networkMbps": 10},
    }
    assert ui_master.api("POST", "/api/v3/management/applications", json=group).status_code == 201
    a = _submit(
        ui_master,
        service_job(desired=0, applicationName="filterapp", owner={"teamEmail": "alpha@example.com"}),
    )
    b = _submit(
        ui_master,
        service_job(
            desired=0,
            applicationName="filterapp",
            owner={"teamEmail": "beta@example.com"},
            capacityGroup="uifilters",
        ),
    )
    c = _submit(ui_master, batch_job(applicationName="otherapp", owner={"teamEmail": "alpha@example.com"}))
    killed = _submit(
        ui_master,
        service_job(desired=0, applicationName="filterapp", owner={"teamEmail": "alpha@example.com"}),
    )
    assert ui_master.api("DELETE", f"/api/v3/jobs/{killed}").status_code == 200
    s = login(ui_master.url)

    def shown(**params: str) -> set[str]:
        r = s.get(ui_master.url + "/ui/jobs", params=params, timeout=10)
        assert r.status_code == 200
        return {j for j in (a, b, c, killed) if f">{j}</a>" in r.text}

    assert shown(app="filterapp") >= {a, b}
    assert c not in shown(app="filterapp")
    assert shown(app="filterapp", owner="alpha@example.com") - {killed} == {a}
    assert shown(group="uifilters") == {b}
    assert shown(owner="alpha@example.com", app="otherapp") == {c}
    assert shown(state="Accepted", app="filterapp", owner="alpha@example.com") == {a}
    wait_for(
        lambda: ui_master.api("GET", f"/api/v3/jobs/{killed}").json()["status"]["state"] == "Finished",
        what="the killed job to finish",
    )
    assert shown(state="Finished", app="filterapp") == {killed}
    assert shown(app="no-such-app") == set()
    # the htmx refresh of the table answers the table alone, with the same filter
    r = s.get(
        ui_master.url + "/ui/jobs",
        params={"group": "uifilters", "fragment": "1"},
        headers={"HX-Request": "true"},
        timeout=10,
    )
    assert r.text.lstrip().startswith('<p class="count">1 job(s)')
    assert f">{b}</a>" in r.text and "<html" not in r.text


def test_scale_and_enable_go_through_the_apis_rules(ui_master: RunningMaster) -> None:
    job_id = _submit(ui_master, service_job(desired=1, applicationName="scaleme"))
    s = login(ui_master.url)
    token = csrf_of(s.get(f"{ui_master.url}/ui/jobs/{job_id}", timeout=10).text)
    url = f"{ui_master.url}/ui/jobs/{job_id}"
    r = s.post(
        url + "/scale",
        data={"csrf_token": token, "min": "0", "desired": "3", "max": "10"},
        allow_redirects=False,
        timeout=10,
    )
    assert r.status_code == 303
    page = s.get(ui_master.url + r.headers["Location"], timeout=10).text
    assert "Capacity updated." in page and "desired 3" in page
    assert (
        ui_master.api("GET", f"/api/v3/jobs/{job_id}").json()["jobDescriptor"]["service"]["capacity"][
            "desired"
        ]
        == 3
    )
    r = s.post(url + "/scale", data={"csrf_token": token, "desired": "11"}, timeout=10)  # above max
    assert r.status_code == 400 and "min &lt;= desired &lt;= max" in r.text
    r = s.post(url + "/scale", data={"csrf_token": token, "desired": "many"}, timeout=10)
    assert r.status_code == 400 and "desired: must be an integer" in r.text
    r = s.post(url + "/scale", data={"csrf_token": token, "desired": "-1"}, timeout=10)
    assert r.status_code == 400 and "desired:" in r.text
    assert (
        ui_master.api("GET", f"/api/v3/jobs/{job_id}").json()["jobDescriptor"]["service"]["capacity"][
            "desired"
        ]
        == 3
    )
    r = s.post(url + "/disable", data={"csrf_token": token}, timeout=10)
    assert r.status_code == 200 and "Job disabled." in r.text and ">Enable</button>" in r.text
    assert (
        ui_master.api("GET", f"/api/v3/jobs/{job_id}").json()["jobDescriptor"]["service"]["enabled"] is False
    )
    batch = _submit(ui_master, batch_job(applicationName="notscalable"))
    r = s.post(
        f"{ui_master.url}/ui/jobs/{batch}/scale", data={"csrf_token": token, "desired": "2"}, timeout=10
    )
    assert r.status_code == 409 and "only service jobs" in r.text


def test_agents_groups_and_task_pages_show_what_the_master_knows(master: RunningMaster) -> None:
    """Its own master: the module's other jobs would land on this test's agent and change the figures."""
    ui_master = master
    group = {
        "appName": "uireserved",
        "tier": "flex",
        "instanceCount": 4,
        "resourceDimension": {"cpu": 2, "memoryMB": 1024, "diskMB": 100, "networkMbps": 10},
    }
    assert ui_master.api("POST", "/api/v3/management/applications", json=group).status_code == 201
    agent = FakeAgent(ui_master.url, "ui-agent-1", "i-ui1", "ui-pool")
    job_id = _submit(ui_master, service_job(desired=2, applicationName="placed", capacityGroup="uireserved"))
    wait_for(lambda: len(agent.converge()) == 2, what="two tasks running on the fake agent")
    huge = _submit(
        ui_master,
        batch_job(
            applicationName="toobig",
            container={"resources": {"cpu": 64, "memoryMB": 64, "diskMB": 100, "networkMbps": 10}},
        ),
    )
    s = login(ui_master.url)
    agents = s.get(ui_master.url + "/ui/agents", timeout=10).text
    assert "ui-agent-1" in agents and "ui-pool" in agents
    assert "15.50 / 16" in agents  # two 0.25-CPU tasks placed on a 16-CPU agent
    groups = s.get(ui_master.url + "/ui/instance-groups", timeout=10).text
    assert "<td>ui-pool</td>" in groups and "15.50" in groups
    cap = s.get(ui_master.url + "/ui/capacity-groups", timeout=10).text
    row = cap[cap.index("<td>uireserved</td>") :].split("</tr>")[0]
    assert "<td>0.5 / 8</td>" in row and "<td>128 / 4096</td>" in row and "<td>2</td>" in row

    # why a pending task waits, on its job's page
    def pending_shown() -> bool:
        return "pending" in s.get(f"{ui_master.url}/ui/jobs/{huge}", timeout=10).text and bool(
            ui_master.api("GET", "/api/v3/tasks", params={"jobIds": huge})
            .json()["items"][0]["taskContext"]
            .get("task.pendingReason")
        )

    wait_for(pending_shown, what="a pending reason for the too-big task")
    reason = ui_master.api("GET", "/api/v3/tasks", params={"jobIds": huge}).json()["items"][0][
        "taskContext"
    ]["task.pendingReason"]
    assert reason.replace("'", "&#39;") in s.get(f"{ui_master.url}/ui/jobs/{huge}", timeout=10).text
    # a finished task: its page, its logs from the tail the agent reported, and the job page lists it
    task_id = ui_master.api("GET", "/api/v3/tasks", params={"jobIds": job_id}).json()["items"][0]["id"]
    report = {
        "sessionEpoch": agent.session,
        "updates": [
            {
                "taskId": task_id,
                "state": "Finished",
                "reasonCode": "failed",
                "exitCode": 3,
                "stdoutTail": "hello from the console test\n<script>alert(1)</script>\n",
                "stderrTail": "oops\n",
            }
        ],
        "runningTaskIds": sorted(agent.running - {task_id}),
    }
    assert (
        ui_master.agent("POST", f"/api/v3/agent/instances/{agent.id}/status", json=report).status_code == 200
    )
    agent.running.discard(task_id)
    page = s.get(f"{ui_master.url}/ui/tasks/{task_id}", timeout=10).text
    assert "Finished failed" in page and "<dd>3</dd>" in page and "ui-agent-1" in page
    logs = s.get(
        f"{ui_master.url}/ui/tasks/{task_id}/logs",
        params={"stream": "stdout"},
        headers={"HX-Request": "true"},
        timeout=10,
    ).text
    assert '<pre id="logs-stderr">oops\n</pre>' in logs
    assert "hello from the console test" in logs and "&lt;script&gt;" in logs and "<script>" not in logs
    plain = s.get(f"{ui_master.url}/ui/tasks/{task_id}/logs", params={"stream": "stderr"}, timeout=10)
    assert plain.headers["Content-Type"].startswith("text/plain") and plain.text == "oops\n"
    assert (
        s.get(f"{ui_master.url}/ui/tasks/{task_id}/logs", params={"stream": "env"}, timeout=10).status_code
        == 400
    )
    job_page = s.get(f"{ui_master.url}/ui/jobs/{job_id}", timeout=10).text
    finished = job_page[job_page.index('id="finished-tasks"') :]
    assert task_id in finished.split("</table>")[0]


class _Standby:
    """A fake of our own Routing role: a standby that knows (or not) where the leader is."""

    def __init__(self, leader: str | None) -> None:
        self.leader = leader
        self.own_url = "http://127.0.0.1:1"

    def role(self) -> str:
        return "standby"

    def leader_url(self) -> str | None:
        return self.leader


def test_a_standby_sends_browsers_to_the_leaders_console(master: RunningMaster) -> None:
    from master.api.app import ApiConfig, create_app

    config = ApiConfig(api_token=API_TOKEN, agent_token="test-agent-token")
    client = create_app(
        config, master.server.manager, routing=_Standby("http://leader.test:7001")
    ).test_client()
    r = client.get("/ui/jobs?state=Accepted")
    assert r.status_code == 302 and r.headers["Location"] == "http://leader.test:7001/ui/jobs?state=Accepted"
    r = client.post("/ui/jobs/x/kill", data={"csrf_token": "x"})
    assert r.status_code == 503 and b"http://leader.test:7001/ui" in r.data
    client = create_app(config, master.server.manager, routing=_Standby(None)).test_client()
    r = client.get("/ui/jobs")
    assert r.status_code == 503 and b"no leader is known yet" in r.data and r.headers["Retry-After"] == "1"


def _events(s: requests.Session, url: str, until: str) -> list[str]:
    """The SSE lines of a console stream, read until a line equal to `until` (the stream stays open)."""
    lines: list[str] = []
    with s.get(url, stream=True, timeout=30) as r:
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream"), r.text
        for raw in r.iter_lines(decode_unicode=True):
            lines.append(raw)
            if raw == until:
                return lines
    raise AssertionError(f"the stream ended before {until!r}: {lines}")


def test_live_streams_say_what_changed_since_the_page_was_rendered(ui_master: RunningMaster) -> None:
    """The job page names its event stream with the sequence it was rendered at: a change made after the
    render, before the browser connects, still arrives; a finished job's stream ends."""
    s = login(ui_master.url)
    job_id = _submit(ui_master, service_job(desired=0, applicationName="livepage"))
    page = s.get(f"{ui_master.url}/ui/jobs/{job_id}", timeout=10).text
    m = re.search(r'data-live="([^"]+)"', page)
    assert m is not None, page
    stream_url = ui_master.url + html.unescape(m.group(1))
    assert f"job={job_id}" in stream_url and "since=" in stream_url
    r = ui_master.api("PUT", f"/api/v3/jobs/{job_id}/attributes", json={"attributes": {"after": "render"}})
    assert r.status_code == 200, r.text
    lines = _events(s, stream_url, f'data: {{"job": "{job_id}"}}')
    assert lines[0] == "event: change", lines
    # without a sequence it cannot know what it missed: its first event is a change, at once
    assert _events(s, f"{ui_master.url}/ui/events?job={job_id}", "event: change")[0] == "event: change"
    assert s.get(f"{ui_master.url}/ui/events?job=nope", timeout=10).status_code == 404
    # killed (no tasks: it finishes at once): the job's stream says so and ends
    assert ui_master.api("DELETE", f"/api/v3/jobs/{job_id}").status_code == 200
    assert "event: end" in _events(s, stream_url, "event: end")


def test_a_task_page_draws_its_usage_over_time(master: RunningMaster) -> None:
    agent = FakeAgent(master.url, "ui-usage-agent", "i-usage", "usage-pool")
    _submit(master, service_job(desired=1, applicationName="usage"))
    wait_for(lambda: len(agent.converge()) == 1, what="the task running on the fake agent")
    (task_id,) = agent.running
    s = login(master.url)
    no_report_yet = s.get(f"{master.url}/ui/tasks/{task_id}", timeout=10).text
    assert "Usage over time" not in no_report_yet
    report = {
        "sessionEpoch": agent.session,
        "runningTaskIds": [task_id],
        "usage": {task_id: {"cpuPct": 12.5, "rssMB": 40, "processes": 3}},
    }
    r = master.agent("POST", f"/api/v3/agent/instances/{agent.id}/status", json=report)
    assert r.status_code == 200, r.text
    page = s.get(f"{master.url}/ui/tasks/{task_id}", timeout=10).text
    assert "Usage over time" in page and page.count("<polyline points=") == 3, page
    assert "CPU %: last 12.5, peak 12.5 (1 samples" in page and "Processes: last 3.0" in page


def test_console_streams_are_capped_so_tabs_cannot_starve_the_agents(master: RunningMaster) -> None:
    """Each open stream holds an HTTP thread the agents' long polls need: past MAX_LIVE_STREAMS a stream
    says come back later (`retry:`) and ends; a closed tab gives its slot back."""
    from master.ui.views import LIVE_BUSY_RETRY_MS, MAX_LIVE_STREAMS

    s = login(master.url)
    job_id = _submit(master, service_job(desired=0, applicationName="tabs"))
    opened = []
    try:
        for _ in range(MAX_LIVE_STREAMS):
            r = s.get(f"{master.url}/ui/events", stream=True, timeout=30)
            lines = r.iter_lines(decode_unicode=True)
            assert next(lines) == "event: change"  # admitted: the snapshot's change comes at once
            opened.append(r)
        busy = s.get(f"{master.url}/ui/events", timeout=30).text
        assert busy.startswith(f"retry: {LIVE_BUSY_RETRY_MS}\nevent: busy"), busy
        assert master.api("GET", "/api/v3/jobs").status_code == 200  # the API still answers
        opened.pop().close()  # a tab closed: its stream notices when writing to it fails (a write or two)
        pokes = iter(range(1000))

        def admitted() -> bool:
            poke = {"attributes": {"poke": str(next(pokes))}}  # a change: every stream writes
            assert master.api("PUT", f"/api/v3/jobs/{job_id}/attributes", json=poke).status_code == 200
            with s.get(f"{master.url}/ui/events", stream=True, timeout=30) as again:
                return next(again.iter_lines(decode_unicode=True)) == "event: change"

        wait_for(admitted, timeout=30, what="a stream admitted again after one closed")
    finally:
        for r in opened:
            r.close()


def test_task_kill_and_lifecycle_buttons_act_as_the_api_does(master: RunningMaster) -> None:
    """Kill a task (and kill-and-shrink) from its page, and set agent and instance-group lifecycles: the
    API's own operations, recorded as the console's operator, CSRF-checked, bad input refused by name."""
    agent = FakeAgent(master.url, "ui-buttons-agent", "i-buttons", "buttons-pool")
    job_id = _submit(master, service_job(desired=2, applicationName="buttons"))
    wait_for(lambda: len(agent.converge()) == 2, what="two tasks running on the fake agent")
    first, second = sorted(agent.running)
    s = login(master.url)
    page = s.get(f"{master.url}/ui/tasks/{first}", timeout=10).text
    assert 'id="kill-task"' in page and 'id="kill-task-shrink"' in page
    token = csrf_of(page)
    refused = s.post(f"{master.url}/ui/tasks/{first}/kill", data={}, timeout=10)
    assert refused.status_code == 403
    assert master.api("GET", f"/api/v3/tasks/{first}").json()["status"]["state"] == "Started"

    r = s.post(f"{master.url}/ui/tasks/{first}/kill", data={"csrf_token": token}, timeout=10)
    assert r.status_code == 200 and "Kill requested: the task is being stopped." in r.text, r.text
    status = master.api("GET", f"/api/v3/tasks/{first}").json()["status"]
    assert status["state"] == "KillInitiated" and status["reasonMessage"] == "killed by operator@titus.local"
    assert 'id="kill-task"' not in r.text  # a task already being killed has no kill button

    shrink = {"csrf_token": token, "shrink": "true"}
    r = s.post(f"{master.url}/ui/tasks/{second}/kill", data=shrink, timeout=10)
    assert r.status_code == 200 and "desired size lowered by one" in r.text, r.text
    capacity = master.api("GET", f"/api/v3/jobs/{job_id}").json()["jobDescriptor"]["service"]["capacity"]
    assert capacity["desired"] == 1
    missing = s.post(f"{master.url}/ui/tasks/nope/kill", data={"csrf_token": token}, timeout=10)
    assert missing.status_code == 404

    listed = s.get(f"{master.url}/ui/agents", timeout=10).text
    assert f'aria-label="lifecycle of {agent.id}"' in listed and "<option selected>Active</option>" in listed
    groups = s.get(f"{master.url}/ui/instance-groups", timeout=10).text
    assert 'aria-label="lifecycle of buttons-pool"' in groups
    r = s.post(f"{master.url}/ui/agents/{agent.id}/lifecycle",
               data={"csrf_token": token, "state": "PhasedOut", "detail": "kernel upgrade"}, timeout=10)
    assert r.status_code == 200 and "Lifecycle updated." in r.text, r.text
    (view,) = [a for a in master.api("GET", "/api/v3/agent/instances").json()["items"] if a["id"] == agent.id]
    assert (view["lifecycle"], view["lifecycleDetail"]) == ("PhasedOut", "kernel upgrade"), view
    bad = s.post(f"{master.url}/ui/agents/{agent.id}/lifecycle",
                 data={"csrf_token": token, "state": "Gone"}, timeout=10)
    assert bad.status_code == 400 and "state: must be one of Active, PhasedOut, Removable" in bad.text

    r = s.post(f"{master.url}/ui/instance-groups/buttons-pool/lifecycle",
               data={"csrf_token": token, "state": "Removable"}, timeout=10)
    assert r.status_code == 200 and "Lifecycle updated." in r.text, r.text
    group = master.api("GET", "/api/v3/agent/instanceGroups/buttons-pool").json()
    assert group["lifecycleState"] == "Removable", group
    assert group["detail"] == "set in the console by operator@titus.local"
    assert "<td>Removable (set in the console by operator@titus.local)</td>" in r.text
    missing = s.post(f"{master.url}/ui/instance-groups/nope/lifecycle",
                     data={"csrf_token": token, "state": "Active"}, timeout=10)
    assert missing.status_code == 404


def test_a_stopping_master_leaves_console_streams_to_reconnect(master: RunningMaster) -> None:
    """`end` tells the browser to stop listening, so only a Finished job sends it: a master that stops
    just drops the stream, and EventSource reconnects to whichever master serves next."""
    s = login(master.url)
    job_id = _submit(master, service_job(desired=0, applicationName="stopping"))
    with s.get(f"{master.url}/ui/events?job={job_id}", stream=True, timeout=30) as r:
        lines = r.iter_lines(decode_unicode=True)
        assert next(lines) == "event: change"
        master.server.shutdown()
        rest = list(lines)
    assert "event: end" not in rest, rest


def test_the_console_takes_every_principal_with_its_role(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A principal of TITUS_PRINCIPALS_FILE logs in with its own token and gets its API role: read-only
    reads, a user changes jobs and tasks, only an admin changes the fleet; refusals are 403 pages naming
    the caller and the rule, forms a role cannot use are not shown, and changes are in the audit log."""
    tokens = {"user": "console-user-token-0123456789", "read-only": "console-reader-token-0123456789"}
    emails = {"user": "alice@example.com", "read-only": "rob@example.com"}
    principals = tmp_path / "principals.json"
    principals.write_text(json.dumps({"principals": [
        {"name": role, "email": emails[role], "role": role, "token": tokens[role]} for role in tokens]}))
    m = start_master(tmp_path / "master", principals_file=principals)
    try:
        agent = FakeAgent(m.url, "roles-agent", "i-roles", "roles-pool")
        job_id = _submit(m, service_job(desired=1, applicationName="roles"))
        wait_for(lambda: len(agent.converge()) == 1, what="the task running")
        (task_id,) = agent.running
        assert requests.post(m.url + "/ui/login", data={"token": "not-a-principal-0123456789"},
                             allow_redirects=False, timeout=10).status_code == 401

        reader = login(m.url, tokens["read-only"])
        page = reader.get(f"{m.url}/ui/jobs/{job_id}", timeout=10).text
        assert job_id in page and 'id="kill"' not in page  # it reads, and sees no action it may not take
        r = reader.post(f"{m.url}/ui/jobs/{job_id}/kill", data={"csrf_token": csrf_of(page)}, timeout=10)
        assert r.status_code == 403 and "rob@example.com: role read-only may only read" in r.text, r.text
        assert m.api("GET", f"/api/v3/jobs/{job_id}").json()["status"]["state"] == "Accepted"

        user = login(m.url, tokens["user"])
        page = user.get(f"{m.url}/ui/tasks/{task_id}", timeout=10).text
        token = csrf_of(page)
        agents_page = user.get(f"{m.url}/ui/agents", timeout=10).text
        assert "roles-agent" in agents_page and "Set lifecycle" not in agents_page
        phase_out = {"csrf_token": token, "state": "PhasedOut"}
        r = user.post(f"{m.url}/ui/agents/roles-agent/lifecycle", data=phase_out, timeout=10)
        assert r.status_code == 403 and "(admin only)" in r.text, r.text
        with caplog.at_level(logging.INFO, logger="titus.audit"):
            r = user.post(f"{m.url}/ui/tasks/{task_id}/kill", data={"csrf_token": token}, timeout=10)
        assert r.status_code == 200 and "Kill requested" in r.text, r.text
        status = m.api("GET", f"/api/v3/tasks/{task_id}").json()["status"]
        assert status["reasonMessage"] == "killed by alice@example.com", status
        assert f"console POST /ui/tasks/{task_id}/kill by alice@example.com: 303" in caplog.text
        # another principal's CSRF token is not this one's
        r = reader.post(f"{m.url}/ui/jobs/{job_id}/kill", data={"csrf_token": token}, timeout=10)
        assert r.status_code == 403 and "CSRF" in r.text
    finally:
        m.server.shutdown()
        m.thread.join(timeout=10)
