"""Session fixtures that bring up a real dockerd, the loopback registry and the busybox image.

They call the same scripts CI and operators use. A script that fails fails the tests with its own output:
a machine without Docker must be fixed, not silently skipped. What a fixture started, it stops at the end
of the session; what was already running (CI's .ci/run may start dockerd first) it leaves alone.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERD = ROOT / "scripts" / "services" / "dockerd.sh"
REGISTRY = ROOT / "scripts" / "services" / "registry.sh"
BUSYBOX = ROOT / "scripts" / "images" / "busybox.sh"
BUSYBOX_IMAGE = "127.0.0.1:5000/titus/busybox:latest"


def run_script(script: Path, *args: str, env: dict[str, str] | None = None, check: bool = True) -> int:
    done = subprocess.run(
        ["bash", str(script), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
        check=False,
    )
    if check and done.returncode != 0:
        pytest.fail(
            f"{script.relative_to(ROOT)} {' '.join(args)} failed (exit {done.returncode}):\n"
            f"{done.stdout}\n{done.stderr}",
            pytrace=False,
        )
    return done.returncode


def _ensure_running(script: Path, env: dict[str, str] | None = None) -> bool:
    """Start the service unless it already answers; True if this call started it."""
    if run_script(script, "status", env=env, check=False) == 0:
        return False
    run_script(script, "install", env=env)
    run_script(script, "start", env=env)
    return True


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    started = _ensure_running(DOCKERD)
    # Earlier tests (nested containers) may have created a cgroup v1 hierarchy that is mounted only in their
    # mount namespace; containerd's stats are empty until the host mounts it too (dockerd.sh says why).
    run_script(DOCKERD, "cgroups")
    client = docker.from_env()
    yield client
    client.close()
    if started:
        run_script(DOCKERD, "stop")


@pytest.fixture(scope="session")
def local_registry(docker_client: docker.DockerClient) -> Iterator[str]:
    """127.0.0.1:5000, open (no auth), as the agent's tests and benchmarks expect."""
    started = _ensure_running(REGISTRY)
    yield "127.0.0.1:5000"
    if started:
        run_script(REGISTRY, "stop")


@pytest.fixture(scope="session")
def busybox_image(local_registry: str) -> str:
    run_script(BUSYBOX, env={"TITUS_BUSYBOX_IMAGE": BUSYBOX_IMAGE})
    return BUSYBOX_IMAGE


@dataclass(frozen=True)
class AuthRegistry:
    address: str
    username: str
    password: str


@pytest.fixture(scope="session")
def auth_registry(docker_client: docker.DockerClient) -> Iterator[AuthRegistry]:
    """A second registry that demands basic auth, with its own throwaway storage.

    Not under pytest's tmp_path: that is private to root (0700) and the registry runs as its own user.
    """
    base = Path(tempfile.mkdtemp(prefix="titus-auth-registry-"))
    base.chmod(0o755)
    password = secrets.token_urlsafe(16)
    env = {
        "TITUS_REGISTRY_PORT": "5001",
        "TITUS_REGISTRY_STORAGE": str(base / "storage"),
        "TITUS_REGISTRY_STATE_DIR": str(base / "state"),
        "TITUS_REGISTRY_HTPASSWD": f"titus:{password}",
    }
    if run_script(REGISTRY, "status", env=env, check=False) == 0:
        pytest.fail("something already listens on 127.0.0.1:5001; the auth registry test needs that port")
    run_script(REGISTRY, "install", env=env)
    run_script(REGISTRY, "start", env=env)
    yield AuthRegistry("127.0.0.1:5001", "titus", password)
    run_script(REGISTRY, "stop", env=env)  # returns once the registry process has exited
    shutil.rmtree(base)
