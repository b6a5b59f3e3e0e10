"""Test hosts for the Ansible roles: Debian 12 containers that boot systemd, reached with docker exec.

The containers stand in for VMs: the roles install packages from the Debian mirror and PyPI, write
systemd units and start real services in them, exactly as on an EC2 instance. They share one user-defined
docker network (its own namespace, so the services' 0.0.0.0 listeners are reachable only from the other
test hosts), and every check runs inside a container through `docker exec`, never from this host.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import subprocess
import tarfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
VENV = Path(os.environ.get("TITUS_ANSIBLE_VENV", "/opt/titus-tools/ansible"))
IMAGE = os.environ.get("TITUS_ANSIBLE_IMAGE", "titus-ansible-host:bookworm")
# Rebuildable download caches shared across runs: apt archives per host and the pip wheel cache.
CACHE = Path(os.environ.get("TITUS_ANSIBLE_CACHE", "/var/cache/titus-ansible-test"))
CASSANDRA_LIB = Path(os.environ.get("TITUS_CASSANDRA_LIB", "/opt/titus-test/cassandra-5.0.9/lib"))

API_TOKEN = "ansible-test-api-token-" + "a" * 8
AGENT_TOKEN = "ansible-test-agent-token-" + "b" * 8

RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def tool(name: str) -> str:
    """A tool of the Ansible virtualenv (scripts/install-ansible.sh); missing fails, naming the fix."""
    path = VENV / "bin" / name
    if path.exists():
        return str(path)
    pytest.fail(f"{name} not installed in {VENV}: run scripts/install-ansible.sh (setup.sh --test does)")


def ansible_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"),
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_HOST_KEY_CHECKING="False",
        # Per-task durations in the logs: where a slow run spends its time.
        ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks",
        PATH=f"{VENV / 'bin'}:{env.get('PATH', '')}",
    )
    return env


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


@dataclass(frozen=True)
class Recap:
    """The PLAY RECAP of one ansible-playbook run, per host: (ok, changed, unreachable, failed)."""

    hosts: Mapping[str, tuple[int, int, int, int]]
    output: str

    @staticmethod
    def parse(output: str) -> Recap:
        tail = output[output.rfind("PLAY RECAP"):]
        counts = {m[1]: (int(m[2]), int(m[3]), int(m[4]), int(m[5])) for m in RECAP.finditer(tail)}
        return Recap(counts, output)

    def changed(self) -> dict[str, int]:
        return {host: counts[1] for host, counts in self.hosts.items()}

    def changed_tasks(self) -> list[str]:
        """Names of the tasks reported changed (what to look at when idempotence breaks)."""
        found: list[str] = []
        task = ""
        for line in self.output.splitlines():
            if line.startswith(("TASK [", "RUNNING HANDLER [")):
                task = line
            elif line.startswith("changed:"):
                found.append(f"{task} {line}")
        return found


@dataclass
class ContainerHosts:
    """Containers booted from the test image on a private network, and the inventory describing them."""

    prefix: str
    hosts: dict[str, dict[str, Any]]
    workdir: Path
    network: str = ""
    started: list[str] = field(default_factory=list)
    cache: Path = CACHE
    _cache_lock: Any = None

    def name(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def claim_cache(self) -> None:
        """Use the shared download cache unless another run holds it (two runs' apt processes must not
        share an archive directory); then this run gets a private, empty one."""
        CACHE.mkdir(parents=True, exist_ok=True)
        lock = (CACHE / ".lock").open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            self.cache = self.workdir / "cache"
            return
        self._cache_lock = lock

    def start(self) -> None:
        self.claim_cache()
        self.network = f"{self.prefix}-net"
        run(["docker", "network", "create", self.network])
        for host in self.hosts:
            container = self.name(host)
            apt_cache = self.cache / "apt" / host
            apt_cache.mkdir(parents=True, exist_ok=True)
            (self.cache / "pip").mkdir(parents=True, exist_ok=True)
            # systemd as PID 1 needs a writable view of its own cgroup (cgroup v1 host) and tmpfs /run.
            # No --privileged: the hosts get docker's default capabilities, like any container; an agent
            # host also gets CAP_SYS_ADMIN, which a real agent host's root has: the agent mounts each task's
            # size-limited disk (a tmpfs of diskMB) before the task starts.
            agent_caps = ["--cap-add", "SYS_ADMIN"] if host.startswith("agent") else []
            run([
                "docker", "run", "-d", "--name", container, "--hostname", container, *agent_caps,
                "--network", self.network, "--stop-signal", "SIGRTMIN+3",
                "--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
                "--tmpfs", "/run", "--tmpfs", "/run/lock", "--memory", "2g",
                "-v", f"{apt_cache}:/var/cache/apt/archives", "-v", f"{self.cache / 'pip'}:/root/.cache/pip",
                IMAGE,
            ])
            self.started.append(container)
        for host in self.hosts:
            wait_for(lambda h=host: self.system_state(h) in ("running", "degraded"), 60, f"systemd in {host}")

    def system_state(self, host: str) -> str:
        return self.exec(host, ["systemctl", "is-system-running"], check=False).stdout.strip()

    def stop(self) -> None:
        for container in self.started:
            subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
        if self.network:
            subprocess.run(["docker", "network", "rm", self.network], capture_output=True, check=False)
        self.remove_task_cgroups()
        if self._cache_lock is not None:
            self._cache_lock.close()

    def remove_task_cgroups(self) -> None:
        """The agents' cgroups live in this machine's hierarchy (the hosts share it to boot systemd);
        once the containers are gone they are empty, and are removed deepest first."""
        for agent_dir in Path("/sys/fs/cgroup").glob(f"*/titus/{self.prefix}-*"):
            subdirs = sorted((p for p in agent_dir.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
            for path in [*subdirs, agent_dir]:
                # cpu and cpuacct are symlinks to one hierarchy: the second visit finds it gone.
                with contextlib.suppress(FileNotFoundError):
                    path.rmdir()

    def exec(self, host: str, command: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["docker", "exec", self.name(host), *command], check=check)

    def inventory(self, group_vars: Mapping[str, Any]) -> Path:
        children: dict[str, Any] = {}
        for host, host_vars in self.hosts.items():
            role = host_vars["titus_role"]
            children.setdefault(f"titus_{role}", {"hosts": {}})["hosts"][self.name(host)] = dict(host_vars)
        inventory = {"all": {"vars": {
            "ansible_connection": "community.docker.docker",
            "ansible_user": "root",
            # Already root in the container (and no sudo in the image): `become` has nothing to do.
            "ansible_become": False,
            "ansible_python_interpreter": "/usr/bin/python3",
            **group_vars,
        }, "children": children}}
        path = self.workdir / "inventory.json"
        path.write_text(json.dumps(inventory, indent=2))
        return path

    def playbook(self, playbook: str, inventory: Path, *extra: str, log_name: str = "") -> Recap:
        log = self.workdir / (log_name or f"{Path(playbook).stem}.log")
        with log.open("w") as out:
            result = subprocess.run(
                [tool("ansible-playbook"), "-i", str(inventory), str(ANSIBLE_DIR / playbook), *extra],
                cwd=ANSIBLE_DIR, env=ansible_env(), stdout=out, stderr=subprocess.STDOUT, check=False,
            )
        output = log.read_text()
        if result.returncode != 0:
            raise AssertionError(f"ansible-playbook {playbook} failed (exit {result.returncode}); "
                                 f"log {log}:\n{output[-6000:]}")
        return Recap.parse(output)


def run(command: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(command), capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr[-2000:]}")
    return result


def wait_for(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def unique_prefix() -> str:
    return f"titus-ans-{secrets.token_hex(3)}"


def cassandra_lib_archive(workdir: Path) -> str:
    """The jars scripts/services/cassandra.sh fetched from Maven Central, packed for the role's offline
    install path; empty (the role then runs Maven in the host) when they are not on this machine."""
    if not (CASSANDRA_LIB / "cassandra-all-5.0.9.jar").exists():
        return ""
    archive = workdir / "cassandra-lib.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(CASSANDRA_LIB, arcname="lib")
    return str(archive)


#: What the package-scoped `cluster` fixture yields: the hosts, their inventory, and the two site.yml runs.
Cluster = tuple[ContainerHosts, Path, list[Recap]]
