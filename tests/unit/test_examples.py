"""The examples the README tours are valid job descriptors."""

import json
from pathlib import Path

import pytest

from master.api.models import JobDescriptor

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.json"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_a_valid_job(path: Path) -> None:
    descriptor = JobDescriptor.model_validate(json.loads(path.read_text()))
    assert descriptor.applicationName


def test_both_tour_examples_exist() -> None:
    assert {p.name for p in EXAMPLES} >= {"hello-batch.json", "web-service.json"}
