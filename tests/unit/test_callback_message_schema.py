"""The schema file: a versioned contract, strict except for the producer's `metadata`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest

SCHEMA = json.loads(
    (Path(__file__).parents[2] / "schemas" / "callback-message.schema.json").read_text()
)
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
URL = (
    "https://workflowexecutions.googleapis.com/v1/projects/p/locations/l/workflows/w"
    "/executions/e/callbacks/c"
)


def test_the_id_names_the_contract_version() -> None:
    assert re.fullmatch(r"https://\S+/callback-message/v[0-9]+\.schema\.json", SCHEMA["$id"])
    assert SCHEMA["$id"].endswith("/v1.schema.json")


def test_the_description_says_how_an_optional_field_is_added() -> None:
    description = SCHEMA["description"]
    assert "relays first, producers last" in description
    assert "metadata" in description


@pytest.mark.parametrize(
    "metadata", [{}, {"job_id": "42", "worker": {"host": "w1", "attempt": 2}, "x": None}]
)
def test_metadata_is_an_optional_object_of_anything(metadata: object) -> None:
    assert VALIDATOR.is_valid({"callback_url": URL})
    assert VALIDATOR.is_valid({"callback_url": URL, "metadata": metadata})


@pytest.mark.parametrize("metadata", [None, "job-42", 42, ["job", 42], True])
def test_metadata_that_is_not_an_object_is_refused(metadata: object) -> None:
    assert not VALIDATOR.is_valid({"callback_url": URL, "metadata": metadata})


@pytest.mark.parametrize("field", ["callbackUrl", "payloa", "result", "meta", "Metadata"])
def test_every_other_field_stays_strict(field: str) -> None:
    assert not VALIDATOR.is_valid({"callback_url": URL, field: {}})
