"""The OCI runtime's images: pulled from the real local registry, config honoured, failures reported,
layers shared, whiteouts applied, digests verified, cache collected. Images are built with dockerd and
pushed to 127.0.0.1:5000, as a user's CI would push them."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from agent.runtime.base import LaunchError, TaskSpec
from agent.runtime.images import IdMap, ImageCache, ImageConfig, ImageError, _extract_layer, _on_overlayfs
from agent.runtime.oci import OciRuntime
from agent.runtime.oci_spec import SpecError, parse_user, task_argv
from agent.runtime.registry_auth import StaticRegistryCredentials
from tests.runtime.conftest import BUSYBOX_IMAGE
from tests.runtime.contract import wait_exit
from tests.runtime.docker_fixtures import AuthRegistry


def build_and_push(
    client: docker.DockerClient, dockerfile: str, files: dict[str, bytes] | None = None
) -> str:
    tag = f"127.0.0.1:5000/titus/test-{uuid.uuid4().hex[:10]}:v1"
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in {"Dockerfile": dockerfile.encode(), **(files or {})}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True)
    for line in client.api.push(tag, stream=True, decode=True):
        assert "error" not in line, line
    client.api.remove_image(tag)  # the OCI runtime must get it from the registry, not from dockerd
    return tag


def spec(image: str, *command: str, **kw: object) -> TaskSpec:
    return TaskSpec(task_id=f"img-{uuid.uuid4().hex[:10]}", job_id="job-img", image=image,
                    command=tuple(command), **kw)  # type: ignore[arg-type]


def run(rt: OciRuntime, s: TaskSpec) -> tuple[str, str]:
    rt.start(s)
    status = wait_exit(rt, s.task_id)
    out = rt.logs(s.task_id, "stdout").decode()
    err = rt.logs(s.task_id, "stderr").decode()
    rt.cleanup(s.task_id)
    assert status.reason == "normal", (status, out, err)
    return out, err


@pytest.fixture
def rt(oci_runtimes: Callable[[], OciRuntime]) -> OciRuntime:
    return oci_runtimes()


def test_image_config_is_honoured(rt: OciRuntime, docker_client: docker.DockerClient) -> None:
    image = build_and_push(docker_client, f"""FROM {BUSYBOX_IMAGE}
RUN mkdir -p /app && echo 'appuser:x:1234:1234::/app:/bin/sh' >> /etc/passwd && chown 1234 /app
ENV GREETING=from-image COLOUR=blue
WORKDIR /app
USER appuser
ENTRYPOINT ["/bin/sh", "-c", "echo \\"$GREETING $COLOUR $(pwd) $(id -u) $0 $*\\"", "ep"]
CMD ["default-cmd"]
""")
    out, _ = run(rt, spec(image))  # neither entryPoint nor command: the image's own
    assert out == "from-image blue /app 1234 ep default-cmd\n"
    out, _ = run(rt, spec(image, "job-cmd", env={"COLOUR": "red"}))  # command replaces only CMD; job env wins
    assert out == "from-image red /app 1234 ep job-cmd\n"
    s = TaskSpec(task_id=f"img-{uuid.uuid4().hex[:10]}", job_id="j", image=image,
                 entry_point=("/bin/sh", "-c", "echo own-entrypoint $(whoami)"))
    out, _ = run(rt, s)
    assert out == "own-entrypoint appuser\n"


def test_image_by_digest_and_identity_env(rt: OciRuntime) -> None:
    first = rt.images.get(BUSYBOX_IMAGE)
    assert first.source_digest.startswith("sha256:")  # the registry's digest, as users name it
    out, _ = run(rt, spec(BUSYBOX_IMAGE, "sh", "-c", "echo $TITUS_IMAGE_TAG $TITUS_IMAGE_DIGEST"))
    assert out == f"latest {first.source_digest}\n"
    by_digest = f"{BUSYBOX_IMAGE.rsplit(':', 1)[0]}@{first.source_digest}"
    out, _ = run(rt, spec(by_digest, "sh", "-c", "echo $TITUS_IMAGE_NAME $TITUS_IMAGE_DIGEST $TITUS_NUM_MEM"))
    assert out == f"127.0.0.1:5000/titus/busybox {first.source_digest} 512\n"


@pytest.mark.parametrize("image, expected", [
    ("127.0.0.1:5000/titus/does-not-exist:nope",
     "image pull of 127.0.0.1:5000/titus/does-not-exist:nope failed"),
    ("127.0.0.1:1/titus/busybox:latest", "image pull of 127.0.0.1:1/titus/busybox:latest failed"),
    ("Not A Valid Image", "invalid image"),
])
def test_pull_failures_are_clear_task_failures(rt: OciRuntime, image: str, expected: str) -> None:
    s = spec(image, "true")
    with pytest.raises(LaunchError) as err:
        rt.start(s)
    assert expected in str(err.value)
    status = rt.poll(s.task_id)
    assert status is not None and status.reason == "failed" and expected in status.message
    rt.cleanup(s.task_id)


def test_concurrent_starts_of_one_image_pull_once(
    oci_runtimes: Callable[[], OciRuntime], docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    image = build_and_push(docker_client, f"FROM {BUSYBOX_IMAGE}\nRUN echo layer > /marker\n")
    rt = oci_runtimes()
    rt.images = ImageCache(tmp_path / "fresh-cache")
    specs = [spec(image, "cat", "/marker") for _ in range(6)]
    threads = [threading.Thread(target=rt.start, args=(s,)) for s in specs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in specs:
        assert wait_exit(rt, s.task_id).reason == "normal"
        assert rt.logs(s.task_id, "stdout") == b"layer\n"
        rt.cleanup(s.task_id)
    assert rt.images.pull_count == 1
    # The busybox base layer is stored once, shared by both images' tasks.
    assert len(list((tmp_path / "fresh-cache" / "layers").iterdir())) == 2


def test_whiteouts_and_opaque_directories_are_applied(
    rt: OciRuntime, docker_client: docker.DockerClient
) -> None:
    image = build_and_push(docker_client, f"""FROM {BUSYBOX_IMAGE}
RUN mkdir -p /data/sub && echo a > /data/keep && echo b > /data/gone && echo c > /data/sub/old
RUN rm /data/gone && rm -rf /data/sub && mkdir /data/sub && echo d > /data/sub/new
""")
    out, _ = run(rt, spec(image, "sh", "-c", "ls /data; ls /data/sub; cat /data/keep"))
    assert out == "keep\nsub\nnew\na\n"


def test_a_corrupt_layer_in_the_cache_is_refused(tmp_path: Path, registry_busybox: str) -> None:
    cache = ImageCache(tmp_path / "cache")
    image = cache.get(registry_busybox)
    layer = image.layers[0]
    shutil.rmtree(image.layer_dirs[0].parent)  # force a new extraction from the (now corrupt) blob
    blob = cache.blobs / "sha256" / layer.split(":")[1]
    data = bytearray(blob.read_bytes())
    data[-100] ^= 0xFF
    blob.write_bytes(bytes(data))
    fresh = ImageCache(tmp_path / "cache")
    with pytest.raises(ImageError, match=r"cannot be extracted|does not match its digest"):
        # By digest: the cached layout is used without a new pull, so the corrupt blob is what is read.
        fresh.get(registry_busybox.replace(":latest", "@" + image.source_digest))


def test_gc_removes_least_recently_used_layers_but_not_those_in_use(
    tmp_path: Path, docker_client: docker.DockerClient, registry_busybox: str
) -> None:
    old = build_and_push(docker_client, f"FROM {BUSYBOX_IMAGE}\nRUN head -c 300000 /dev/urandom > /old\n")
    new = build_and_push(docker_client, f"FROM {BUSYBOX_IMAGE}\nRUN head -c 300000 /dev/urandom > /new\n")
    now = [1000.0]
    cache = ImageCache(tmp_path / "cache", clock=lambda: now[0])
    old_image = cache.get(old)
    now[0] = 2000.0
    new_image = cache.get(new)
    cache.max_bytes = cache.disk_usage() - 100_000  # one 300 kB layer must go
    removed = cache.gc(in_use=set(new_image.layers))
    assert removed == [old_image.layers[-1]]
    assert not old_image.layer_dirs[-1].exists()
    assert all(d.exists() for d in new_image.layer_dirs)
    assert cache.disk_usage() <= cache.max_bytes
    again = cache.get(old)  # collected images come back on the next use
    assert again.layer_dirs[-1].exists()


@pytest.mark.parametrize("user, ids", [
    ("", (0, 0)), ("1234", (1234, 99)), ("4321", (4321, 0)), ("app", (1234, 99)), ("app:staff", (1234, 50)),
    ("5:6", (5, 6)),
])
def test_image_user_is_resolved_from_its_passwd(user: str, ids: tuple[int, int]) -> None:
    passwd = "root:x:0:0::/:/bin/sh\napp:x:1234:99::/:/bin/sh\n"
    group = "root:x:0:\nstaff:x:50:\n"
    assert parse_user(user, passwd, group) == ids


def test_unknown_image_user_and_empty_command_are_refused() -> None:
    with pytest.raises(SpecError, match="not in its /etc/passwd"):
        parse_user("ghost", "", "")
    with pytest.raises(SpecError, match="nothing to run"):
        task_argv(spec("x"), ImageConfig())


def test_registry_credentials_are_presented(
    tmp_path: Path, auth_registry: AuthRegistry, docker_client: docker.DockerClient, registry_busybox: str
) -> None:
    repo, tag = f"{auth_registry.address}/titus/private", uuid.uuid4().hex[:8]
    login = {"username": auth_registry.username, "password": auth_registry.password}
    docker_client.api.tag(registry_busybox, repo, tag)
    for event in docker_client.api.push(repo, tag=tag, stream=True, decode=True, auth_config=login):
        assert "error" not in event, event
    docker_client.api.remove_image(f"{repo}:{tag}")
    with pytest.raises(ImageError, match=r"unauthorized|authentication required"):
        ImageCache(tmp_path / "anonymous").get(f"{repo}:{tag}")
    wrong = StaticRegistryCredentials({auth_registry.address: (auth_registry.username, "wrong")})
    with pytest.raises(ImageError, match=r"unauthorized|authentication required"):
        ImageCache(tmp_path / "wrong", credentials=wrong).get(f"{repo}:{tag}")
    right = StaticRegistryCredentials({auth_registry.address: (login["username"], login["password"])})
    cache = ImageCache(tmp_path / "authed", credentials=right)
    image = cache.get(f"{repo}:{tag}")
    assert image.layer_dirs[0].is_dir()
    assert not list(cache.root.glob("auth-*.json"))  # the password file is gone after the pull


def test_cleanup_collects_the_cache_but_spares_layers_of_running_tasks(
    oci_runtimes: Callable[[], OciRuntime], tmp_path: Path
) -> None:
    rt = oci_runtimes()
    rt.images = ImageCache(tmp_path / "small", max_bytes=0)  # every unused layer is over the bound
    rt.gc_interval_s = 0
    running, done = spec(BUSYBOX_IMAGE, "sleep", "300"), spec(BUSYBOX_IMAGE, "true")
    rt.start(running)
    rt.start(done)
    wait_exit(rt, done.task_id)
    rt.cleanup(done.task_id)
    layers = tmp_path / "small" / "layers"
    assert [p.name for p in layers.iterdir()], "the running task's layer must stay"
    assert not (rt.tasks_dir / done.task_id / "disk").exists()  # the writable layer went with the task
    rt.kill(running.task_id, 0)
    wait_exit(rt, running.task_id)
    rt.cleanup(running.task_id)
    assert list(layers.iterdir()) == []


def test_a_store_on_overlayfs_says_so_instead_of_a_bare_permission_error(tmp_path: Path) -> None:
    """overlayfs refuses whiteout devices: an agent whose data directory sits in a container's root filesystem
    must be told where the problem is, not get EPERM from a layer."""
    lower, upper, work, merged = (tmp_path / n for n in ("lower", "upper", "work", "merged"))
    for d in (lower, upper, work, merged):
        d.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged)], check=True)
    try:
        assert _on_overlayfs(merged / "nested")
        assert not _on_overlayfs(tmp_path)
        layer = io.BytesIO()
        with tarfile.open(fileobj=layer, mode="w") as tar:
            info = tarfile.TarInfo("etc/.wh.gone")
            tar.addfile(info, io.BytesIO(b""))
        layer.seek(0)
        (merged / "fs" / "etc").mkdir(parents=True)
        with tarfile.open(fileobj=layer, mode="r") as tar, pytest.raises(ImageError, match="is on overlayfs"):
            _extract_layer(tar, merged / "fs", IdMap(host_base=0, size=65536))
    finally:
        subprocess.run(["umount", str(merged)], check=True)
