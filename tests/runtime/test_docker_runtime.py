"""DockerRuntime against a real dockerd and a real registry on 127.0.0.1.

`TestRuntimeContract` speaks only the Runtime protocol through four fixtures (`runtime`, `runtime_factory`,
`agent_id`, `make_spec`) and POSIX sh commands, so it can be lifted into the shared contract suite and run
against the process runtime too. `TestDockerOnly` checks what only Docker has: images, registries, the
container's configuration and its cgroup.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import docker
import docker.errors
import pytest

from agent.runtime.base import ExitStatus, LaunchError, Runtime, TaskSpec
from agent.runtime.docker import DockerRuntime
from agent.runtime.docker_mapping import (
    DOCKER_DEFAULT_CAPS,
    LABEL_AGENT_ID,
    LABEL_JOB_ID,
    LABEL_TASK_ID,
    TASK_CAPS,
    ContainerPolicy,
    container_name,
)
from agent.runtime.registry_auth import StaticRegistryCredentials
from tests.runtime.contract import RuntimeContract

if TYPE_CHECKING:
    from tests.runtime.docker_fixtures import AuthRegistry


pytestmark = pytest.mark.timeout(120)

T = TypeVar("T")
RuntimeFactory = Callable[[str], Runtime]
SpecFactory = Callable[..., TaskSpec]


def wait_for(check: Callable[[], T | None], what: str, timeout_s: float = 30.0) -> T:
    """Poll until `check` returns something truthy; the timeout is a safety net, not the assertion."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {timeout_s}s (last value {value!r})")
        time.sleep(0.05)


def wait_ended(runtime: Runtime, task_id: str, timeout_s: float = 30.0) -> ExitStatus:
    return wait_for(lambda: runtime.poll(task_id), f"task {task_id} to end", timeout_s)


def sh(script: str) -> dict[str, Any]:
    return {"entry_point": ("sh", "-c"), "command": (script,)}


# ---- fixtures binding the contract to Docker --------------------------------------------------------------


def _remove_agent_containers(client: docker.DockerClient, agent_id: str) -> None:
    for c in client.api.containers(all=True, filters={"label": f"{LABEL_AGENT_ID}={agent_id}"}):
        with contextlib.suppress(docker.errors.NotFound):
            client.api.remove_container(c["Id"], force=True, v=True)


@pytest.fixture
def agent_id() -> str:
    return f"test-agent-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def runtime_factory(
    docker_client: docker.DockerClient, busybox_image: str, tmp_path: Path
) -> Iterator[RuntimeFactory]:
    """New runtime instances, one per call: a second call with the same agent id is an agent restart."""
    made: list[DockerRuntime] = []

    def make(agent: str) -> Runtime:
        rt = DockerRuntime(agent, log_dir=tmp_path / "logs" / agent)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        _remove_agent_containers(docker_client, rt.agent_id)
        rt.close()


@pytest.fixture
def runtime(runtime_factory: RuntimeFactory, agent_id: str) -> Runtime:
    return runtime_factory(agent_id)


@pytest.fixture
def make_spec(busybox_image: str) -> SpecFactory:
    def make(**overrides: Any) -> TaskSpec:
        fields: dict[str, Any] = {
            "task_id": f"task-{uuid.uuid4().hex[:12]}",
            "job_id": "job-contract",
            "image": busybox_image,
            "cpu": 0.5,
            "memory_mb": 64,
            "pids_limit": 64,
        }
        fields.update(overrides)
        return TaskSpec(**fields)

    return make


# ---- the contract: only the Runtime protocol ------------------------------------------------------------


class TestRuntimeContract:
    def test_exit_zero_is_normal(self, runtime: Runtime, make_spec: SpecFactory) -> None:
        spec = make_spec(**sh("exit 0"))
        runtime.start(spec)
        status = wait_ended(runtime, spec.task_id)
        assert (status.reason, status.exit_code, status.oom_killed) == ("normal", 0, False)

    def test_nonzero_exit_is_failed_with_code(self, runtime: Runtime, make_spec: SpecFactory) -> None:
        spec = make_spec(**sh("exit 3"))
        runtime.start(spec)
        status = wait_ended(runtime, spec.task_id)
        assert (status.reason, status.exit_code) == ("failed", 3)
        assert "3" in status.message
        assert runtime.poll(spec.task_id) == status  # idempotent once ended

    def test_env_entrypoint_command_and_separate_log_streams(
        self, runtime: Runtime, make_spec: SpecFactory
    ) -> None:
        spec = make_spec(
            entry_point=("sh", "-c"),
            command=('echo "greeting=$GREETING arg0=$0"; echo "oops $COLOR" >&2', "zeroth"),
            env={"GREETING": "hello world", "COLOR": "blue"},
        )
        runtime.start(spec)
        assert wait_ended(runtime, spec.task_id).reason == "normal"
        assert runtime.logs(spec.task_id, "stdout") == b"greeting=hello world arg0=zeroth\n"
        assert runtime.logs(spec.task_id, "stderr") == b"oops blue\n"
        assert runtime.logs(spec.task_id, "stdout", tail_bytes=6) == b"eroth\n"[-6:]

    def test_over_memory_task_fails_with_out_of_memory(
        self, runtime: Runtime, make_spec: SpecFactory
    ) -> None:
        # dd allocates one block of bs bytes and fills it: 128 MB against a 32 MB limit.
        spec = make_spec(memory_mb=32, **sh("dd if=/dev/zero of=/dev/null bs=128M count=1; sleep 1"))
        runtime.start(spec)
        status = wait_ended(runtime, spec.task_id)
        assert status.reason == "failed"
        assert status.oom_killed
        assert "out of memory" in status.message

    def test_fork_bomb_is_held_by_pids_limit(self, runtime: Runtime, make_spec: SpecFactory) -> None:
        # The inner shell forks until the limit stops it (a shell that cannot fork gives up); its sleeps
        # stay behind, and the outer shell replaces itself with sleep, which needs no fork.
        bomb = "i=0; while [ $i -lt 60 ]; do sleep 60 & i=$((i+1)); done"
        spec = make_spec(pids_limit=16, **sh(f"sh -c '{bomb}'; echo spawned; exec sleep 60"))
        runtime.start(spec)
        wait_for(lambda: b"spawned" in runtime.logs(spec.task_id, "stdout"), "the fork loop to give up")
        assert re.search(rb"fork", runtime.logs(spec.task_id, "stderr"), re.IGNORECASE), (
            "forking past the pids limit must have failed"
        )
        usage = runtime.usage(spec.task_id)
        assert usage is not None
        assert 1 < usage.processes <= 16
        runtime.kill(spec.task_id, 0)
        assert wait_ended(runtime, spec.task_id).reason == "killed"

    def test_kill_sends_sigterm_first(self, runtime: Runtime, make_spec: SpecFactory) -> None:
        spec = make_spec(**sh("trap 'echo got-term; exit 0' TERM; echo ready; while :; do sleep 0.05; done"))
        runtime.start(spec)
        wait_for(lambda: b"ready" in runtime.logs(spec.task_id, "stdout"), "the trap to be set")
        runtime.kill(spec.task_id, grace_s=20)
        status = wait_ended(runtime, spec.task_id)
        assert (status.reason, status.exit_code) == ("killed", 0)
        assert b"got-term" in runtime.logs(spec.task_id, "stdout")

    def test_kill_escalates_to_sigkill_and_does_not_block(
        self, runtime: Runtime, make_spec: SpecFactory
    ) -> None:
        spec = make_spec(**sh("trap '' TERM; echo ready; while :; do sleep 0.05; done"))
        runtime.start(spec)
        wait_for(lambda: b"ready" in runtime.logs(spec.task_id, "stdout"), "the trap to be set")
        runtime.kill(spec.task_id, grace_s=2)
        # kill() returned while the task, which ignores SIGTERM, is still inside its grace period.
        assert runtime.poll(spec.task_id) is None
        status = wait_ended(runtime, spec.task_id)
        assert (status.reason, status.exit_code) == ("killed", 137)
        assert "SIGKILL" in status.message

    def test_list_running_and_usage(self, runtime: Runtime, make_spec: SpecFactory) -> None:
        long, short = make_spec(**sh("sleep 60")), make_spec(**sh("exit 0"))
        runtime.start(long)
        runtime.start(short)
        wait_ended(runtime, short.task_id)
        assert long.task_id in runtime.list_running()
        assert short.task_id not in runtime.list_running()
        usage = runtime.usage(long.task_id)
        assert usage is not None
        assert usage.processes >= 1
        assert 0 < usage.rss_mb < 64

    def test_other_agents_tasks_are_not_listed(
        self, runtime: Runtime, runtime_factory: RuntimeFactory, make_spec: SpecFactory
    ) -> None:
        other = runtime_factory(f"other-{uuid.uuid4().hex[:8]}")
        spec = make_spec(**sh("sleep 60"))
        other.start(spec)
        assert spec.task_id in other.list_running()
        assert spec.task_id not in runtime.list_running()

    def test_restarted_agent_rediscovers_and_kills_its_tasks(
        self, runtime: Runtime, runtime_factory: RuntimeFactory, agent_id: str, make_spec: SpecFactory
    ) -> None:
        specs = [make_spec(**sh("sleep 60")) for _ in range(2)]
        for spec in specs:
            runtime.start(spec)
        restarted = runtime_factory(agent_id)
        assert sorted(restarted.list_running()) == sorted(s.task_id for s in specs)
        assert restarted.poll(specs[0].task_id) is None
        restarted.kill(specs[0].task_id, 1)
        assert wait_ended(restarted, specs[0].task_id).reason == "killed"
        assert restarted.list_running() == [specs[1].task_id]

    def test_cleanup_keeps_status_and_logs(self, runtime: Runtime, make_spec: SpecFactory) -> None:
        spec = make_spec(**sh("echo kept; echo kept-err >&2; exit 4"))
        runtime.start(spec)
        status = wait_ended(runtime, spec.task_id)
        runtime.cleanup(spec.task_id)
        assert runtime.poll(spec.task_id) == status
        assert runtime.logs(spec.task_id, "stdout") == b"kept\n"
        assert runtime.logs(spec.task_id, "stderr") == b"kept-err\n"
        assert runtime.usage(spec.task_id) is None
        runtime.cleanup(spec.task_id)  # a second cleanup is harmless

    def test_missing_command_fails_naming_it(self, runtime: Runtime, make_spec: SpecFactory) -> None:
        """Either start() refuses it, or (with an init process that execs it) the task fails at once; in
        both cases the user is told which command could not be run."""
        spec = make_spec(entry_point=("/no/such/program",))
        try:
            runtime.start(spec)
        except LaunchError as e:
            assert "/no/such/program" in str(e)
        else:
            status = wait_ended(runtime, spec.task_id)
            assert status.reason == "failed"
            assert "/no/such/program" in status.message
            assert "No such file or directory" in status.message
        assert spec.task_id not in runtime.list_running()


# ---- Docker only -----------------------------------------------------------------------------------------


@pytest.fixture
def fresh_image(docker_client: docker.DockerClient, busybox_image: str, local_registry: str) -> Iterator[str]:
    """The busybox image under a new name in the registry and not on the host: the next start must pull."""
    repo = f"{local_registry}/titus/pulltest"
    tag = uuid.uuid4().hex[:12]
    docker_client.api.tag(busybox_image, repo, tag)
    for event in docker_client.api.push(repo, tag=tag, stream=True, decode=True):
        assert "error" not in event, event
    docker_client.api.remove_image(f"{repo}:{tag}")
    yield f"{repo}:{tag}"
    with contextlib.suppress(docker.errors.NotFound):
        docker_client.api.remove_image(f"{repo}:{tag}")


def cgroup_cpu_seconds(container_id: str) -> float:
    path = Path(f"/sys/fs/cgroup/cpuacct/docker/{container_id}/cpuacct.usage")
    assert path.exists(), f"{path} missing: is dockerd using the cgroupfs driver on cgroup v1?"
    return int(path.read_text()) / 1e9


class TestDockerOnly:
    def test_image_is_pulled_from_the_registry_and_runs(
        self,
        runtime: DockerRuntime,
        make_spec: SpecFactory,
        fresh_image: str,
        docker_client: docker.DockerClient,
    ) -> None:
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.api.inspect_image(fresh_image)
        spec = make_spec(image=fresh_image, **sh("echo pulled-and-ran"))
        runtime.start(spec)
        assert wait_ended(runtime, spec.task_id).reason == "normal"
        assert runtime.logs(spec.task_id, "stdout") == b"pulled-and-ran\n"
        assert runtime.pull_count == 1
        docker_client.api.inspect_image(fresh_image)
        runtime.start(make_spec(image=fresh_image, **sh("exit 0")))
        assert runtime.pull_count == 1  # present now: not pulled again

    def test_image_by_digest(
        self,
        runtime: DockerRuntime,
        make_spec: SpecFactory,
        fresh_image: str,
        docker_client: docker.DockerClient,
    ) -> None:
        repo = fresh_image.rsplit(":", 1)[0]
        docker_client.api.pull(repo, tag=fresh_image.rsplit(":", 1)[1])
        digests = docker_client.api.inspect_image(fresh_image)["RepoDigests"]
        by_digest = next(d for d in digests if d.startswith(repo + "@"))
        docker_client.api.remove_image(fresh_image)
        spec = make_spec(image=by_digest, **sh("echo by-digest"))
        runtime.start(spec)
        assert wait_ended(runtime, spec.task_id).reason == "normal"
        assert runtime.pull_count == 1

    def test_unknown_image_fails_with_the_registry_message(
        self, runtime: DockerRuntime, make_spec: SpecFactory, local_registry: str
    ) -> None:
        image = f"{local_registry}/titus/does-not-exist:{uuid.uuid4().hex[:8]}"
        with pytest.raises(LaunchError) as err:
            runtime.start(make_spec(image=image))
        assert image in str(err.value)
        assert "manifest unknown" in str(err.value)

    def test_concurrent_starts_share_one_pull(
        self, runtime: DockerRuntime, make_spec: SpecFactory, fresh_image: str
    ) -> None:
        specs = [make_spec(image=fresh_image, **sh("exit 0")) for _ in range(3)]
        barrier = threading.Barrier(len(specs))
        errors: list[BaseException] = []

        def start(spec: TaskSpec) -> None:
            barrier.wait()
            try:
                runtime.start(spec)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=start, args=(s,)) for s in specs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert runtime.pull_count == 1
        assert all(wait_ended(runtime, s.task_id).reason == "normal" for s in specs)

    def test_credentials_are_presented_to_the_registry(
        self,
        runtime_factory: RuntimeFactory,
        make_spec: SpecFactory,
        auth_registry: AuthRegistry,
        docker_client: docker.DockerClient,
        busybox_image: str,
    ) -> None:
        repo, tag = f"{auth_registry.address}/titus/private", uuid.uuid4().hex[:8]
        login = {"username": auth_registry.username, "password": auth_registry.password}
        docker_client.api.tag(busybox_image, repo, tag)
        for event in docker_client.api.push(repo, tag=tag, stream=True, decode=True, auth_config=login):
            assert "error" not in event, event
        docker_client.api.remove_image(f"{repo}:{tag}")

        anonymous = runtime_factory(f"anon-{uuid.uuid4().hex[:8]}")
        with pytest.raises(LaunchError, match=r"no basic auth credentials|unauthorized|authentication"):
            anonymous.start(make_spec(image=f"{repo}:{tag}"))

        creds = StaticRegistryCredentials(
            {auth_registry.address: (auth_registry.username, auth_registry.password)}
        )
        authed = DockerRuntime(f"auth-{uuid.uuid4().hex[:8]}", credentials=creds)
        try:
            spec = make_spec(image=f"{repo}:{tag}", **sh("echo private"))
            authed.start(spec)
            assert wait_ended(authed, spec.task_id).reason == "normal"
            assert authed.logs(spec.task_id, "stdout") == b"private\n"
        finally:
            _remove_agent_containers(docker_client, authed.agent_id)
            authed.close()
            docker_client.api.remove_image(f"{repo}:{tag}")

    def test_cpu_quota_holds_a_busy_loop(self, runtime: DockerRuntime, make_spec: SpecFactory) -> None:
        spec = make_spec(cpu=0.5, **sh("while :; do :; done"))
        runtime.start(spec)
        cid = runtime.container_id(spec.task_id)
        assert cid is not None
        time.sleep(0.3)  # past start-up, whose burst is not what the quota is about
        cpu0, wall0 = cgroup_cpu_seconds(cid), time.monotonic()
        time.sleep(2.0)
        cpu1, wall1 = cgroup_cpu_seconds(cid), time.monotonic()
        rate = (cpu1 - cpu0) / (wall1 - wall0)
        assert 0.1 < rate <= 0.6, f"busy loop used {rate:.2f} CPU-seconds per second with cpu=0.5"
        runtime.kill(spec.task_id, 0)

    def test_container_has_no_extra_privileges(
        self,
        runtime: DockerRuntime,
        make_spec: SpecFactory,
        docker_client: docker.DockerClient,
        agent_id: str,
    ) -> None:
        spec = make_spec(
            job_id="job-sec",
            memory_mb=48,
            cpu=0.25,
            pids_limit=20,
            **sh("grep -E 'CapEff|NoNewPrivs' /proc/self/status"),
        )
        runtime.start(spec)
        wait_ended(runtime, spec.task_id)
        attrs = docker_client.api.inspect_container(container_name(spec.task_id))
        host = attrs["HostConfig"]
        assert host["Privileged"] is False
        assert "no-new-privileges:true" in host["SecurityOpt"]
        assert host["CapDrop"] == ["ALL"]
        assert set(host["CapAdd"]) == set(TASK_CAPS) < DOCKER_DEFAULT_CAPS
        assert host["NetworkMode"] not in ("host",) and host["PidMode"] == "" and host["IpcMode"] != "host"
        assert (host["Memory"], host["MemorySwap"]) == (48 * 2**20, 48 * 2**20)
        assert (host["NanoCpus"], host["CpuShares"], host["PidsLimit"]) == (250_000_000, 256, 20)
        labels = attrs["Config"]["Labels"]  # the image's own labels are merged in too
        assert (labels[LABEL_TASK_ID], labels[LABEL_JOB_ID], labels[LABEL_AGENT_ID]) == (
            spec.task_id,
            "job-sec",
            agent_id,
        )
        assert attrs["Name"] == f"/titus-{spec.task_id}"
        # And from inside: the effective capability set is exactly TASK_CAPS; no privilege can be gained.
        out = runtime.logs(spec.task_id, "stdout").decode()
        cap_eff = int(re.search(r"CapEff:\s+([0-9a-f]+)", out).group(1), 16)  # type: ignore[union-attr]
        cap_numbers = {"CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6,
                       "SETUID": 7, "SETPCAP": 8, "NET_BIND_SERVICE": 10, "SYS_CHROOT": 18}  # fmt: skip
        assert cap_eff == sum(1 << cap_numbers[c] for c in TASK_CAPS)
        assert re.search(r"NoNewPrivs:\s+1", out)

    def test_read_only_rootfs_option(
        self, docker_client: docker.DockerClient, make_spec: SpecFactory, busybox_image: str
    ) -> None:
        rt = DockerRuntime(f"ro-{uuid.uuid4().hex[:8]}", policy=ContainerPolicy(read_only_rootfs=True))
        try:
            spec = make_spec(**sh("touch /tmp/ok && echo tmp-ok; touch /etc/nope || echo root-ro"))
            rt.start(spec)
            wait_ended(rt, spec.task_id)
            assert rt.logs(spec.task_id, "stdout") == b"tmp-ok\nroot-ro\n"
        finally:
            _remove_agent_containers(docker_client, rt.agent_id)
            rt.close()

    def test_cleanup_removes_the_container(
        self, runtime: DockerRuntime, make_spec: SpecFactory, docker_client: docker.DockerClient
    ) -> None:
        spec = make_spec(**sh("sleep 60"))
        runtime.start(spec)
        runtime.kill(spec.task_id, 0)
        wait_ended(runtime, spec.task_id)
        runtime.cleanup(spec.task_id)
        with pytest.raises(docker.errors.NotFound):
            docker_client.api.inspect_container(container_name(spec.task_id))

    def test_start_is_idempotent_for_a_running_task(
        self, runtime: DockerRuntime, make_spec: SpecFactory, docker_client: docker.DockerClient
    ) -> None:
        spec = make_spec(**sh("sleep 60"))
        runtime.start(spec)
        first = runtime.container_id(spec.task_id)
        runtime.start(spec)
        assert runtime.container_id(spec.task_id) == first
        assert runtime.list_running() == [spec.task_id]


# ---- the shared contract (tests/runtime/contract.py), the same suite the process runtime passes -----------
class TestDockerRuntimeSharedContract(RuntimeContract):
    init_processes = 1  # tini

    @pytest.fixture(autouse=True)
    def _image(self, busybox_image: str) -> None:
        self.image = busybox_image
    @pytest.fixture
    def new_runtime(self, runtime_factory: RuntimeFactory, agent_id: str) -> Callable[[], Runtime]:
        return lambda: runtime_factory(agent_id)

    @pytest.fixture
    def start(self, runtime: Runtime, busybox_image: str) -> Iterator[Callable[..., str]]:
        started: list[str] = []

        def _start(*argv: str, **overrides: Any) -> str:
            task_id = overrides.pop("task_id", f"task-{uuid.uuid4().hex[:12]}")
            spec = TaskSpec(task_id=task_id, job_id="job-contract", image=busybox_image,
                            entry_point=("sh", "-c"), command=argv, **overrides)
            started.append(task_id)
            runtime.start(spec)
            return task_id

        yield _start
        for task_id in started:
            with contextlib.suppress(Exception):
                runtime.kill(task_id, 0)
        for task_id in started:
            with contextlib.suppress(Exception):
                runtime.cleanup(task_id)
