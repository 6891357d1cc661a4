"""Validate a result.json document against sequoia_clinic/schemas/result.schema.json (JSON Schema 2020-12)."""

from __future__ import annotations

import functools
import json
from typing import Any

from jsonschema import Draft202012Validator

from sequoia_clinic.errors import ResultSchemaError
from sequoia_clinic.locations import package_path

RESULT_SCHEMA_PATH = package_path("sequoia_clinic", "schemas", "result.schema.json")
RESULT_SCHEMA_VERSION = "1.0.0"


@functools.cache
def _validator() -> Draft202012Validator:
    schema = json.loads(RESULT_SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def validate_result(obj: dict[str, Any]) -> None:
    """Raise :class:`ResultSchemaError` naming the first offending field if ``obj`` breaks the schema."""
    errors = sorted(_validator().iter_errors(obj), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(part) for part in first.absolute_path) or "(top level)"
        raise ResultSchemaError(
            # The validator's own message quotes the offending value, which may be a patient identifier.
            f"result does not match the schema at {where}: fails the {first.validator!r} rule "
            f"({len(errors)} error(s) in all)",
            path=RESULT_SCHEMA_PATH,
        )
