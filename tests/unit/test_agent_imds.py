"""The agent's IMDSv2 adapter against our own IMDSv2 responder on 127.0.0.1."""

from __future__ import annotations

import pytest
import requests

from agent.imds import ImdsError, InstanceIdentity, read_identity
from agent.main import config_from
from tests.fixtures.imds import EC2_METADATA, imds
from titus.config import ConfigError


def test_reads_the_identity_with_a_session_token() -> None:
    with imds(EC2_METADATA) as server:
        identity = read_identity(server.url)
        by_agent = list(server.requests)
        # The responder really refuses IMDSv1: a bare GET gets 401.
        assert requests.get(f"{server.url}/latest/meta-data/instance-id", timeout=2).status_code == 401
    assert identity == InstanceIdentity("i-0123456789abcdef0", "us-east-1b", "m5.xlarge")
    assert by_agent[0][:2] == ("PUT", "/latest/api/token")
    assert [valid for method, _, valid in by_agent if method == "GET"] == [True, True, True]


def test_agent_reports_instance_id_zone_and_type_from_imds() -> None:
    with imds(EC2_METADATA) as server:
        config, *_ = config_from(
            {
                "TITUS_AGENT_TOKEN": "t" * 20,
                "TITUS_AGENT_ID": "ip-10-42-16-25",
                "TITUS_IMDS": "true",
                "TITUS_IMDS_URL": server.url,
                "TITUS_TIER": "critical",
            }
        )
    assert config.agent_id == "ip-10-42-16-25"
    assert config.attributes["instanceId"] == "i-0123456789abcdef0"
    assert config.attributes["zone"] == "us-east-1b"
    assert config.attributes["instanceType"] == "m5.xlarge"


def test_explicit_settings_win_over_imds_and_no_imds_means_no_instance_id() -> None:
    with imds(EC2_METADATA) as server:
        config, *_ = config_from(
            {
                "TITUS_AGENT_TOKEN": "t" * 20,
                "TITUS_IMDS": "true",
                "TITUS_IMDS_URL": server.url,
                "TITUS_ZONE": "rack-7",
            }
        )
    assert config.attributes["zone"] == "rack-7"
    assert config.attributes["instanceType"] == "m5.xlarge"
    local, *_ = config_from({"TITUS_AGENT_TOKEN": "t" * 20})
    assert "instanceId" not in local.attributes
    assert (local.attributes["zone"], local.attributes["instanceType"]) == ("local", "local")


def test_missing_metadata_refuses_to_start_the_agent() -> None:
    with imds({"instance-id": "i-1"}) as server:  # no zone, no type
        with pytest.raises(ImdsError, match="placement/availability-zone answered 404"):
            read_identity(server.url, attempts=1)
        with pytest.raises(ConfigError, match="TITUS_IMDS is true"):
            config_from({"TITUS_AGENT_TOKEN": "t" * 20, "TITUS_IMDS": "true", "TITUS_IMDS_URL": server.url})


def test_unreachable_imds_is_an_error_not_a_made_up_identity() -> None:
    with imds(EC2_METADATA) as server:
        url = server.url
    with pytest.raises(ImdsError, match="unreadable after 2 attempts"):
        read_identity(url, timeout_s=0.5, attempts=2)
