"""result.json: the schema is valid 2020-12, accepts a real result, rejects broken ones, and only the
volatile keys differ between two builds of the same data."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
from example_report import example_report_data
from jsonschema import Draft202012Validator

from sequoia_clinic.errors import ResultSchemaError
from sequoia_clinic.report.result import result_dict, without_volatile
from sequoia_clinic.report.schema import RESULT_SCHEMA_PATH, validate_result


@pytest.fixture(scope="module")
def good() -> dict:
    return result_dict(example_report_data(seed=1))


def test_schema_is_valid_draft_2020_12() -> None:
    schema = json.loads(RESULT_SCHEMA_PATH.read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_good_result_validates_and_is_plain_json(good: dict) -> None:
    validate_result(good)
    again = json.loads(json.dumps(good, allow_nan=False))
    validate_result(again)
    data = example_report_data(seed=1)
    assert good["risk"]["group"] == data.risk.group
    assert good["risk"]["absolute_risk"][1] == {
        "horizon": 10.0,
        "time_unit": "years",
        "risk": 0.263,
        "lower": 0.178,
        "upper": 0.351,
    }
    assert good["risk"]["out_of_range"] == {"linear_predictor": False, "genes": ["AURKA"]}
    assert len(good["signature"]["genes"]) == 16
    assert good["timings"]["total"] == pytest.approx(sum(data.timings.values()))
    assert good["demo"] is True and good["models"]["bundle"]["trained"] is False
    assert any("untrained" in w for w in good["qc"]["warnings"])


def _broken(good: dict, path: tuple, value: object) -> dict:
    doc = copy.deepcopy(good)
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("risk", "score"), 100.5),
        (("risk", "group_names"), ["Only"]),
        (("slide", "sha256"), "not-a-hash"),
        (("qc", "tissue_fraction"), 1.2),
        (("signature", "genes"), []),
        (("patient", "pseudonymised"), KeyError),
        (("created",), "yesterday"),
        (("timings", "tiles"), -1.0),
        (("surprise",), 1),
        (("risk", "absolute_risk", 0, "risk"), "12%"),
    ],
)
def test_bad_results_are_rejected(good: dict, path: tuple, value: object) -> None:
    with pytest.raises(ResultSchemaError, match="does not match the schema"):
        validate_result(_broken(good, path, value))


def test_error_message_does_not_leak_values(good: dict) -> None:
    doc = _broken(good, ("patient", "name"), ["Doe, Jane"])
    with pytest.raises(ResultSchemaError) as info:
        validate_result(doc)
    assert "Doe" not in str(info.value) and "patient/name" in str(info.value)


def test_only_volatile_keys_differ(good: dict) -> None:
    data = example_report_data(seed=1)
    later = dataclasses.replace(data, created="2030-01-01T00:00:00Z", timings={"tiles": 99.0})
    other = result_dict(later)
    assert other != good
    assert without_volatile(other) == without_volatile(good)
