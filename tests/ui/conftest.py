"""The console's fixtures: a real master over real HTTP and a browser-less client that logs in like a user."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import API_TOKEN, RunningMaster, start_master

CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')


@pytest.fixture(scope="module")
def ui_master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMaster]:
    running = start_master(tmp_path_factory.mktemp("ui-master"))
    yield running
    running.server.shutdown()
    running.thread.join(timeout=10)


def login(url: str, token: str = API_TOKEN) -> requests.Session:
    s = requests.Session()
    r = s.post(
        f"{url}/ui/login", data={"token": token, "next": "/ui/jobs"}, allow_redirects=False, timeout=10
    )
    assert r.status_code == 302, r.text
    return s


def csrf_of(html: str) -> str:
    m = CSRF.search(html)
    assert m is not None, html[:2000]
    return m.group(1)


@pytest.fixture
def artefacts(request: pytest.FixtureRequest) -> Path:
    """Where a test leaves what a reviewer looks at (screenshots): .artifacts/ui/<test name>/."""
    root = Path(__file__).resolve().parents[2] / ".artifacts" / "ui" / request.node.name
    root.mkdir(parents=True, exist_ok=True)
    return root
