"""AsgNodeGroup against a real moto_server."""

from __future__ import annotations

import http.server
import threading

import pytest
import requests

from capacity.aws import AsgDiscovery, AsgNodeGroup, make_clients
from capacity.model import Tier
from capacity.node_group import NodeGroupError, snapshot
from tests.capacity.conftest import Aws


def test_discovers_tier_groups_by_terraform_tags(aws: Aws) -> None:
    crit = aws.tier_asg("critical", desired=2)
    flex = aws.tier_asg("flex", desired=1)
    aws.tier_asg("flex", desired=1, cluster="some-other-cluster")
    groups = AsgDiscovery(aws.asg, aws.ec2, aws.cluster).node_groups()
    assert {(g.id, g.tier) for g in groups} == {(crit, Tier.CRITICAL), (flex, Tier.FLEX)}
    state = snapshot(next(g for g in groups if g.id == crit))
    assert state.desired == 2 and len(state.instance_ids) == 2
    assert state.instance_type == "m5.4xlarge"
    assert state.instance_resources.cpu == 16 and state.instance_resources.memory_mb == 65536
    assert state.instance_resources.disk_mb == 200 * 1024


def test_increase_and_max_enforced_by_us(aws: Aws) -> None:
    name = aws.tier_asg("flex", desired=1, max_size=3)
    group = AsgNodeGroup(aws.asg, aws.ec2, name, Tier.FLEX)
    group.increase_size(2)
    assert aws.describe(name)["DesiredCapacity"] == 3
    with pytest.raises(NodeGroupError, match="outside"):
        group.increase_size(1)
    assert aws.describe(name)["DesiredCapacity"] == 3  # moto would have accepted 4


def test_delete_exact_instances_with_decrement(aws: Aws) -> None:
    name = aws.tier_asg("flex", desired=3, min_size=1)
    group = AsgNodeGroup(aws.asg, aws.ec2, name, Tier.FLEX)
    before = aws.instances(name)
    group.delete_nodes([before[1]])
    after = aws.instances(name)
    assert aws.describe(name)["DesiredCapacity"] == 2
    assert after == [before[0], before[2]]


def test_min_enforced_and_unknown_instance_refused(aws: Aws) -> None:
    name = aws.tier_asg("flex", desired=2, min_size=2)
    group = AsgNodeGroup(aws.asg, aws.ec2, name, Tier.FLEX)
    with pytest.raises(NodeGroupError, match="MinSize"):
        group.delete_nodes([aws.instances(name)[0]])
    with pytest.raises(NodeGroupError, match="not in the group"):
        group.delete_nodes(["i-0000000000000000"])
    assert len(aws.instances(name)) == 2


def test_dry_run_changes_nothing(aws: Aws) -> None:
    name = aws.tier_asg("flex", desired=2, min_size=0)
    group = AsgNodeGroup(aws.asg, aws.ec2, name, Tier.FLEX, dry_run=True)
    before = aws.instances(name)
    group.increase_size(3)
    group.delete_nodes(before)
    assert aws.describe(name)["DesiredCapacity"] == 2
    assert aws.instances(name) == before


class _ThrottlingProxy(http.server.BaseHTTPRequestHandler):
    """Answers the first `throttle` SetDesiredCapacity calls with a Throttling error, forwards the rest."""

    upstream = ""
    throttle = 0
    seen: list[str] = []  # per-test class state, reset by the test

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        action = next((p.split("=", 1)[1] for p in body.decode().split("&") if p.startswith("Action=")), "")
        type(self).seen.append(action)
        if action == "SetDesiredCapacity" and type(self).throttle > 0:
            type(self).throttle -= 1
            payload = (
                b"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>"
                b"<Message>Rate exceeded</Message></Error><RequestId>r1</RequestId></ErrorResponse>"
            )
            self.send_response(400)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        resp = requests.post(f"{self.upstream}{self.path}", data=body, headers=headers, timeout=10)
        self.send_response(resp.status_code)
        self.send_header("Content-Type", resp.headers.get("Content-Type", "text/xml"))
        self.send_header("Content-Length", str(len(resp.content)))
        self.end_headers()
        self.wfile.write(resp.content)

    def log_message(self, format: str, *args: object) -> None:
        return None


def test_throttling_is_retried_with_backoff(aws: Aws) -> None:
    name = aws.tier_asg("flex", desired=1, max_size=5)
    _ThrottlingProxy.upstream = aws.url
    _ThrottlingProxy.throttle = 2
    _ThrottlingProxy.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ThrottlingProxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        asg, ec2 = make_clients("us-east-1", f"http://127.0.0.1:{server.server_address[1]}")
        AsgNodeGroup(asg, ec2, name, Tier.FLEX).set_target_size(3)
    finally:
        server.shutdown()
        thread.join()
    assert _ThrottlingProxy.seen.count("SetDesiredCapacity") == 3  # two throttled, the third went through
    assert aws.describe(name)["DesiredCapacity"] == 3
