"""The pure half of the Docker runtime: task -> container config, container state -> task status."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from agent.runtime.base import TaskSpec
from agent.runtime.docker_mapping import (
    DOCKER_DEFAULT_CAPS,
    TASK_CAPS,
    ContainerPolicy,
    CpuSample,
    container_name,
    cpu_percent,
    create_kwargs,
    exit_status_from_state,
    usage_from_stats,
)
from agent.runtime.registry_auth import (
    RegistryAuthError,
    RegistryCredential,
    StaticRegistryCredentials,
    TokenHelperCredentials,
    command_token_fetcher,
    parse_image_ref,
)
from agent.runtime.single_flight import SingleFlight


def spec(**overrides: Any) -> TaskSpec:
    fields: dict[str, Any] = {"task_id": "t-1", "job_id": "j-1", "image": "reg:5000/app:1"}
    fields.update(overrides)
    return TaskSpec(**fields)


class TestCreateKwargs:
    def test_limits(self) -> None:
        kw = create_kwargs(spec(cpu=1.5, memory_mb=300, pids_limit=50), "agent-a", ContainerPolicy())
        assert kw["mem_limit"] == kw["memswap_limit"] == 300 * 1024 * 1024
        assert kw["nano_cpus"] == 1_500_000_000
        assert kw["cpu_shares"] == 1536
        assert kw["pids_limit"] == 50

    def test_tiny_cpu_still_gets_minimum_shares(self) -> None:
        assert create_kwargs(spec(cpu=0.001), "a", ContainerPolicy())["cpu_shares"] == 2

    def test_privileges(self) -> None:
        kw = create_kwargs(spec(), "a", ContainerPolicy())
        assert kw["privileged"] is False
        assert kw["cap_drop"] == ["ALL"]
        assert set(kw["cap_add"]) == set(TASK_CAPS)
        assert "NET_RAW" not in kw["cap_add"]
        assert kw["security_opt"] == ["no-new-privileges:true"]
        assert kw["network_mode"] == "bridge"
        assert "pid_mode" not in kw and "privileged" in kw and kw["privileged"] is False
        assert (kw["ipc_mode"], kw["cgroupns"]) == ("private", "private")

    def test_labels_name_and_command(self) -> None:
        kw = create_kwargs(
            spec(entry_point=("sh", "-c"), command=("echo hi",), env={"A": "1"}), "agent-a", ContainerPolicy()
        )
        assert kw["labels"] == {"titus.task_id": "t-1", "titus.job_id": "j-1", "titus.agent_id": "agent-a"}
        assert kw["name"] == "titus-t-1"
        assert (kw["entrypoint"], kw["command"]) == (["sh", "-c"], ["echo hi"])
        env = kw["environment"]
        assert (env["TITUS_TASK_ID"], env["TITUS_JOB_ID"], env["A"]) == ("t-1", "j-1", "1")
        assert env["TITUS_IMAGE_NAME"] == "reg:5000/app" and env["TITUS_IMAGE_TAG"] == "1"
        assert (env["TITUS_NUM_CPU"], env["TITUS_TASK_INDEX"]) == ("1", "0")

    def test_empty_entrypoint_and_command_keep_the_images(self) -> None:
        kw = create_kwargs(spec(), "a", ContainerPolicy())
        assert kw["entrypoint"] is None and kw["command"] is None

    def test_read_only_rootfs_gets_a_tmpfs_tmp(self) -> None:
        kw = create_kwargs(spec(), "a", ContainerPolicy(read_only_rootfs=True, tmpfs_tmp_mb=16))
        assert kw["read_only"] is True
        assert kw["tmpfs"] == {"/tmp": "rw,nosuid,nodev,size=16m"}

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"cap_add": ("SYS_ADMIN",)}, "cap_add"),
            ({"cap_add": ("CHOWN", "NET_ADMIN")}, "cap_add"),
            ({"network_mode": "host"}, "network_mode"),
        ],
        ids=["sys_admin", "net_admin", "host_network"],
    )
    def test_policy_refuses_extra_privileges(self, kwargs: dict[str, Any], field: str) -> None:
        with pytest.raises(ValueError, match=field):
            ContainerPolicy(**kwargs)

    def test_task_caps_are_a_strict_subset_of_dockers(self) -> None:
        assert set(TASK_CAPS) < DOCKER_DEFAULT_CAPS


@pytest.mark.parametrize(
    ("task_id", "expected"),
    [("abc-1", "titus-abc-1"), ("job.1_x", "titus-job.1_x")],
)
def test_container_name_plain(task_id: str, expected: str) -> None:
    assert container_name(task_id) == expected


def test_container_name_odd_characters_stay_distinct() -> None:
    a, b = container_name("a/b"), container_name("a:b")
    assert a != b
    assert a.startswith("titus-a_b-") and b.startswith("titus-a_b-")


def state(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "Status": "exited",
        "Running": False,
        "OOMKilled": False,
        "ExitCode": 0,
        "Error": "",
    }
    base.update(kw)
    return base


@pytest.mark.parametrize(
    ("st", "killed", "reason", "needle"),
    [
        (state(ExitCode=0), False, "normal", "code 0"),
        (state(ExitCode=2), False, "failed", "code 2"),
        (state(ExitCode=137), True, "killed", "SIGKILL"),
        (state(ExitCode=143), True, "killed", "SIGTERM"),
        (state(ExitCode=0), True, "killed", "code 0"),
        (state(ExitCode=137, OOMKilled=True), True, "failed", "out of memory"),
        (state(ExitCode=1, Error="mount failed"), False, "failed", "mount failed"),
    ],
    ids=["zero", "nonzero", "killed-sigkill", "killed-sigterm", "killed-clean", "oom-wins", "daemon-error"],
)
def test_exit_status(st: dict[str, Any], killed: bool, reason: str, needle: str) -> None:
    status = exit_status_from_state(st, killed=killed, memory_mb=64)
    assert status is not None
    assert status.reason == reason
    assert needle in status.message


@pytest.mark.parametrize("status", ["created", "running", "paused", "restarting"])
def test_not_ended(status: str) -> None:
    assert exit_status_from_state(state(Status=status, Running=status == "running"), killed=False) is None


def test_oom_names_the_limit() -> None:
    status = exit_status_from_state(state(ExitCode=137, OOMKilled=True), killed=False, memory_mb=32)
    assert status is not None and status.oom_killed and "32 MB" in status.message


def test_exec_failure_uses_inits_complaint() -> None:
    err = "[FATAL tini (7)] exec /nope failed: No such file or directory\n"
    status = exit_status_from_state(state(ExitCode=127), killed=False, stderr_tail=err)
    assert status is not None
    assert (
        status.message == "the task's command could not be run: exec /nope failed: No such file or directory"
    )


def test_cpu_percent() -> None:
    assert cpu_percent(CpuSample(0, 10.0), CpuSample(500_000_000, 11.0)) == pytest.approx(50.0)
    assert cpu_percent(CpuSample(0, 10.0), CpuSample(500_000_000, 10.0)) == 0.0


def test_usage_from_v1_stats() -> None:
    stats = {
        "memory_stats": {"usage": 50 * 2**20, "stats": {"total_rss": 10 * 2**20, "total_cache": 40 * 2**20}},
        "pids_stats": {"current": 4},
    }
    usage = usage_from_stats(stats, 12.5)
    assert (usage.cpu_pct, usage.rss_mb, usage.processes) == (12.5, 10.0, 4)


class TestImageRef:
    @pytest.mark.parametrize(
        ("image", "registry", "repository", "reference"),
        [
            ("busybox", "docker.io", "busybox", "latest"),
            ("library/busybox:1.36", "docker.io", "library/busybox", "1.36"),
            ("127.0.0.1:5000/titus/bb:latest", "127.0.0.1:5000", "127.0.0.1:5000/titus/bb", "latest"),
            ("localhost/app", "localhost", "localhost/app", "latest"),
            ("1.dkr.ecr.us-east-1.amazonaws.com/app:v2", "1.dkr.ecr.us-east-1.amazonaws.com",
             "1.dkr.ecr.us-east-1.amazonaws.com/app", "v2"),
            ("reg:5000/app@sha256:" + "a" * 64, "reg:5000", "reg:5000/app", "sha256:" + "a" * 64),
        ],
    )  # fmt: skip
    def test_parse(self, image: str, registry: str, repository: str, reference: str) -> None:
        ref = parse_image_ref(image)
        assert (ref.registry, ref.repository, ref.reference) == (registry, repository, reference)

    @pytest.mark.parametrize("image", ["", "app:", "app@sha256:short", "a b", "reg:5000/"])
    def test_invalid(self, image: str) -> None:
        with pytest.raises(ValueError):
            parse_image_ref(image)


class TestCredentials:
    def test_static(self) -> None:
        creds = StaticRegistryCredentials({"reg:5000": ("u", "p")})
        assert creds.credentials_for("reg:5000") == RegistryCredential("u", "p")
        assert creds.credentials_for("other") is None

    def test_token_helper_caches_until_near_expiry(self) -> None:
        now = [1000.0]
        calls: list[str] = []

        def fetch(registry: str) -> RegistryCredential:
            calls.append(registry)
            return RegistryCredential("AWS", f"tok{len(calls)}", expires_at=now[0] + 3600)

        helper = TokenHelperCredentials(
            ["*.dkr.ecr.*.amazonaws.com"], fetch, refresh_margin_s=300, clock=lambda: now[0]
        )
        host = "1.dkr.ecr.eu-west-1.amazonaws.com"
        assert helper.credentials_for("docker.io") is None
        assert helper.credentials_for(host) == RegistryCredential("AWS", "tok1", 4600.0)
        now[0] += 3000  # 600 s left: still good
        assert helper.credentials_for(host) is not None and calls == [host]
        now[0] += 400  # 200 s left: inside the margin, refetch
        cred = helper.credentials_for(host)
        assert cred is not None and cred.password == "tok2"

    def test_command_fetcher(self) -> None:
        fetch = command_token_fetcher(["sh", "-c", 'echo "secret-for-$TITUS_REGISTRY"'], clock=lambda: 0.0)
        assert fetch("reg") == RegistryCredential("AWS", "secret-for-reg", expires_at=12 * 3600)

    def test_command_fetcher_failure_says_why(self) -> None:
        fetch = command_token_fetcher(["sh", "-c", "echo denied >&2; exit 3"])
        with pytest.raises(RegistryAuthError, match="denied"):
            fetch("reg")


class TestSingleFlight:
    def test_concurrent_callers_share_one_call(self) -> None:
        flight: SingleFlight[str, int] = SingleFlight()
        release = threading.Event()
        calls: list[int] = []
        results: list[tuple[int, bool]] = []

        def work() -> int:
            calls.append(1)
            release.wait(10)
            return 42

        def caller() -> None:
            results.append(flight.do("img", work))

        threads = [threading.Thread(target=caller) for _ in range(4)]
        threads[0].start()
        while not calls:  # the owner is inside work(); the others must join its call
            threading.Event().wait(0.001)
        for t in threads[1:]:
            t.start()
        while flight._calls["img"].waiters < 3:
            threading.Event().wait(0.001)
        release.set()
        for t in threads:
            t.join(10)
        assert len(calls) == 1
        assert sorted(results) == [(42, False), (42, True), (42, True), (42, True)]

    def test_failure_reaches_waiters_and_is_not_cached(self) -> None:
        flight: SingleFlight[str, int] = SingleFlight()

        def boom() -> int:
            raise RuntimeError("pull failed")

        with pytest.raises(RuntimeError, match="pull failed"):
            flight.do("img", boom)
        assert flight.do("img", lambda: 7) == (7, False)
