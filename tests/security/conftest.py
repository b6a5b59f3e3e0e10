"""Fixtures for the attack suite: the attack binary, images carrying it, and every runtime of this host.

The attack binary (attack.c) is built static with the system's gcc, so the same file runs on the host
(process runtime) and inside the busybox-based images (OCI and Docker runtimes). The images are built with
dockerd from the registry's busybox and pushed to the local registry, where the OCI runtime pulls them
like any job's image.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from agent import cgroups
from agent.runtime.base import LaunchError, Runtime, TaskSpec
from agent.runtime.docker import DockerRuntime
from agent.runtime.images import ImageCache
from agent.runtime.oci import OciRuntime
from agent.runtime.process import ProcessRuntime
from tests.runtime.conftest import BUSYBOX_IMAGE, traversable

HERE = Path(__file__).parent
RUNTIMES = ("process", "oci", "docker")


@pytest.fixture(scope="session")
def attack_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("attack") / "titus-attack"
    subprocess.run(["gcc", "-static", "-O2", "-Wall", "-o", str(out), str(HERE / "attack.c")], check=True)
    return out


@pytest.fixture(scope="session")
def host_tools(attack_binary: Path) -> Iterator[Path]:
    """For the process runtime: the binary and a setuid-root copy in a directory any uid can reach."""
    d = Path(tempfile.mkdtemp(prefix="titus-attack-"))
    d.chmod(0o755)
    shutil.copy(attack_binary, d / "titus-attack")
    shutil.copy(attack_binary, d / "titus-attack-suid")
    os.chown(d / "titus-attack-suid", 0, 0)
    (d / "titus-attack").chmod(0o755)
    (d / "titus-attack-suid").chmod(0o4755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _build_image(client: docker.DockerClient, binary: Path, user: str) -> str:
    digest = hashlib.sha256(binary.read_bytes() + user.encode()).hexdigest()[:12]
    tag = f"127.0.0.1:5000/titus/attack:{digest}"
    dockerfile = (f"FROM {BUSYBOX_IMAGE}\n"
                  "COPY titus-attack /bin/titus-attack\n"
                  "COPY titus-attack /bin/titus-attack-suid\n"
                  "RUN chmod 0755 /bin/titus-attack && chmod 4755 /bin/titus-attack-suid\n"
                  + (f"USER {user}\n" if user else ""))
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in (("Dockerfile", dockerfile.encode()), ("titus-attack", binary.read_bytes())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True)
    for line in client.api.push(tag, stream=True, decode=True):
        if "error" in line:
            raise RuntimeError(f"push of {tag} failed: {line['error']}")
    return tag


@pytest.fixture(scope="session")
def attack_images(
    docker_client: docker.DockerClient, busybox_image: str, attack_binary: Path
) -> dict[str, str]:
    """{"root": image whose tasks run as container root, "nobody": one whose USER is 65534}."""
    return {"root": _build_image(docker_client, attack_binary, ""),
            "nobody": _build_image(docker_client, attack_binary, "65534:65534")}


@dataclass
class Harness:
    """One runtime of the host plus how to name the attack binary and images for it."""

    kind: str
    runtime: Runtime
    agent_id: str
    tool: str  # path of the attack binary as the task sees it
    suid_tool: str
    images: dict[str, str]
    started: list[str]

    def start(self, script: str, *, user: str = "root", **overrides: Any) -> str:
        task_id = f"attack-{uuid.uuid4().hex[:10]}"
        image = "host" if self.kind == "process" else self.images[user]
        fields: dict[str, Any] = {"memory_mb": 64, "pids_limit": 64, "disk_mb": 64, "cpu": 0.5}
        fields.update(overrides)
        spec = TaskSpec(task_id=task_id, job_id="job-attack", image=image, entry_point=("/bin/sh", "-c"),
                        command=(script,), **fields)
        self.started.append(task_id)
        self.runtime.start(spec)
        return task_id

    def host_pid(self, task_id: str) -> int:
        """The host pid of the task's main process (the shell running the attack script)."""
        if isinstance(self.runtime, DockerRuntime):
            cid = self.runtime.container_id(task_id)
            assert cid is not None
            client = docker.from_env()
            try:
                return int(client.api.inspect_container(cid)["State"]["Pid"])
            finally:
                client.close()
        assert isinstance(self.runtime, ProcessRuntime)
        import json

        pids = json.loads((self.runtime.tasks_dir / task_id / "pids.json").read_text())
        return int(pids["pid"])


@pytest.fixture(params=RUNTIMES)
def harness(
    request: pytest.FixtureRequest, tmp_path: Path, host_tools: Path, attack_images: dict[str, str],
    docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Harness]:
    if os.geteuid() != 0:
        pytest.skip("the runtimes need root")
    kind = str(request.param)
    agent_id = f"sec-{uuid.uuid4().hex[:10]}"
    runtime: Runtime
    if kind == "process":
        traversable(tmp_path)
        runtime = ProcessRuntime(tmp_path / "data", agent_id)
        tool, suid = str(host_tools / "titus-attack"), str(host_tools / "titus-attack-suid")
    elif kind == "oci":
        cache = ImageCache(tmp_path_factory.getbasetemp() / "sec-images")
        runtime = OciRuntime(tmp_path / "data", agent_id, images=cache)
        tool, suid = "/bin/titus-attack", "/bin/titus-attack-suid"
    else:
        runtime = DockerRuntime(agent_id, client=docker_client, log_dir=tmp_path / "logs")
        tool, suid = "/bin/titus-attack", "/bin/titus-attack-suid"
    h = Harness(kind, runtime, agent_id, tool, suid, attack_images, [])
    yield h
    for task_id in h.started:
        with contextlib.suppress(KeyError, LaunchError):
            runtime.kill(task_id, 0)
    for task_id in h.started:
        with contextlib.suppress(KeyError):
            runtime.cleanup(task_id)
    if isinstance(runtime, ProcessRuntime):
        with contextlib.suppress(cgroups.CgroupError):
            cgroups.detect().remove_agent(agent_id)
        runtime.close()


@pytest.fixture
def host_secret_process() -> Iterator[tuple[int, str]]:
    """A root process on the host with a secret in its environment, as the agent has its token."""
    secret = f"secret-{uuid.uuid4().hex}"
    proc = subprocess.Popen(["sleep", "300"], env={"PATH": "/usr/bin:/bin", "TITUS_AGENT_TOKEN": secret})
    yield proc.pid, secret
    proc.kill()
    proc.wait()


Starter = Callable[..., str]
