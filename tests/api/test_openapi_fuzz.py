"""schemathesis against the served OpenAPI document: no 5xx, every 4xx is the JSON error shape.

The schema is the document the server generates (asserted equal to what /api/v3/openapi.json serves),
and every generated request goes over real HTTP to a real master.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from master.api.openapi import document
from tests.conftest import AGENT_TOKEN, API_TOKEN, RunningMaster

# The observe streams never end by design (tests/api/test_observe.py drives them); everything else is fuzzed.
schema = schemathesis.openapi.from_dict(document()).exclude(path_regex=r"/observe$")


def test_served_document_is_the_generated_one(shared_master: RunningMaster) -> None:
    served = shared_master.api("GET", "/api/v3/openapi.json").json()
    assert served == document()
    assert served["openapi"].startswith("3.")


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_never_5xx_and_errors_are_json(case: schemathesis.Case, shared_master: RunningMaster) -> None:
    agent_channel = "agentBearer" in str(case.operation.definition.raw.get("security", ""))
    token = AGENT_TOKEN if agent_channel else API_TOKEN
    response = case.call(base_url=shared_master.url, headers={"Authorization": f"Bearer {token}"})
    case.validate_response(response, checks=[not_a_server_error, status_code_conformance,
                                             content_type_conformance, response_schema_conformance])
    if 400 <= response.status_code < 500:
        body = response.json()
        assert isinstance(body["error"], str) and body["error"]
        assert isinstance(body["fields"], list)
