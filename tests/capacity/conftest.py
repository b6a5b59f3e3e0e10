"""A real moto_server on 127.0.0.1 for the whole session, reached through boto3 with endpoint_url.

moto_server runs as `<this interpreter> -m moto.server`: the moto that setup installed next to the code under
test, never another moto_server that happens to be earlier on PATH. Missing tools fail the tests (setup
installs them: scripts/setup.sh --test); they never skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    try:
        import moto.server  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"moto[server] is not installed in {sys.executable}: run scripts/setup.sh --test ({exc})")
    port = free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("moto_server did not start")
            time.sleep(0.1)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(autouse=True)
def _fake_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@dataclass
class Aws:
    url: str
    asg: Any
    ec2: Any
    cluster: str

    def tier_asg(
        self, tier: str, desired: int, min_size: int = 0, max_size: int = 10, cluster: str | None = None
    ) -> str:
        """An ASG tagged the way terraform/ tags agent groups (CLUSTER_TAG, TIER_TAG, ROLE_TAG)."""
        from titus.cluster_tags import CLUSTER_TAG, ROLE_TAG, TIER_TAG

        cluster = cluster or self.cluster
        name = f"{cluster}-agents-{tier}-{uuid.uuid4().hex[:6]}"
        lt = self.ec2.create_launch_template(
            LaunchTemplateName=f"{name}-lt",
            LaunchTemplateData={
                "ImageId": "ami-12c6146b",
                "InstanceType": "m5.4xlarge",
                "BlockDeviceMappings": [{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 200}}],
            },
        )["LaunchTemplate"]
        tags = {CLUSTER_TAG: cluster, TIER_TAG: tier, ROLE_TAG: "agent", "Name": name}
        self.asg.create_auto_scaling_group(
            AutoScalingGroupName=name,
            LaunchTemplate={"LaunchTemplateId": lt["LaunchTemplateId"], "Version": "$Latest"},
            MinSize=min_size,
            MaxSize=max_size,
            DesiredCapacity=desired,
            AvailabilityZones=["us-east-1a"],
            Tags=[
                {
                    "Key": k,
                    "Value": v,
                    "PropagateAtLaunch": True,
                    "ResourceId": name,
                    "ResourceType": "auto-scaling-group",
                }
                for k, v in tags.items()
            ],
        )
        return name

    def describe(self, name: str) -> dict[str, Any]:
        return self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]  # type: ignore[no-any-return]

    def instances(self, name: str) -> list[str]:
        return sorted(
            i["InstanceId"]
            for i in self.describe(name)["Instances"]
            if not i["LifecycleState"].startswith("Terminat")
        )


@pytest.fixture
def aws(moto_url: str) -> Aws:
    from capacity.aws import make_clients

    asg, ec2 = make_clients("us-east-1", moto_url)
    # A fresh cluster name per test keeps tests independent on the shared server.
    return Aws(moto_url, asg, ec2, f"test-{uuid.uuid4().hex[:8]}")


ZOOKEEPER_JAR = "/usr/share/java/zookeeper.jar"


@pytest.fixture(scope="session")
def zookeeper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real standalone ZooKeeper (Debian's `zookeeper` package) on 127.0.0.1."""
    if not os.path.exists(ZOOKEEPER_JAR) or shutil.which("java") is None:
        pytest.fail("ZooKeeper or Java is missing: run scripts/services/zookeeper.sh install (test.sh does)")
    base = tmp_path_factory.mktemp("zk")
    port = free_port()
    cfg = base / "zoo.cfg"
    cfg.write_text(
        f"tickTime=500\ndataDir={base / 'data'}\nclientPort={port}\nclientPortAddress=127.0.0.1\n"
        "admin.enableServer=false\n4lw.commands.whitelist=ruok\n"
    )
    proc = subprocess.Popen(
        [
            "java",
            "-Xmx128m",
            "-cp",
            ZOOKEEPER_JAR,
            "-Dzookeeper.admin.enableServer=false",
            "org.apache.zookeeper.server.ZooKeeperServerMain",
            str(cfg),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"ruok")
                if s.recv(4) == b"imok":
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("ZooKeeper did not start")
        time.sleep(0.2)
    yield f"127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
