"""`lawlab schema` is a JSON Schema an editor can use: plugin names as enums, ratio
bounds, each plugin's params; the shipped specs pass it and typical mistakes do not."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from jsonschema import Draft4Validator, Draft202012Validator

from lawlab.cli.main import main
from lawlab.spec.load import tomllib  # tomllib, or tomli before Python 3.11

SPECS = sorted((Path(__file__).parents[1] / "specs").glob("*.toml"))


@pytest.fixture(scope="module")
def schema() -> dict:
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["schema"]) == 0
    return json.loads(buf.getvalue())


def errors(schema: dict, doc: dict) -> list[str]:
    # taplo validates with an older draft: the schema must mean the same under draft 4
    found = []
    for validator in (Draft202012Validator(schema), Draft4Validator(schema)):
        found += [e.message for e in validator.iter_errors(doc)]
    return found


def test_the_shipped_specs_pass(schema):
    Draft202012Validator.check_schema(schema)
    for path in SPECS:
        assert errors(schema, tomllib.loads(path.read_text())) == [], path.name


def test_names_are_enums_and_ratios_are_bounded(schema):
    defs = schema["$defs"]
    assert "slicegpt" in defs["MethodEntry"]["properties"]["method"]["enum"]
    assert "compression-law" in defs["LawEntry"]["properties"]["form"]["enum"]
    assert "pack" in defs["ModelEntry"]["properties"]["source"]["enum"]
    assert defs["MethodEntry"]["properties"]["ratios"]["items"] == {"type": "number", "minimum": 0,
                                                                   "exclusiveMaximum": 1}
    assert any(k.startswith("pruners.") for k in defs) or any(
        "calibration_samples" in json.dumps(c) for c in defs["MethodEntry"]["anyOf"])


@pytest.mark.parametrize("change, where", [
    (lambda s: s["methods"][0].update(method="slicegtp"), "slicegtp"),
    (lambda s: s["methods"][0].update(ratios=[0.1, 1.5]), "1.5"),
    (lambda s: s["methods"][1]["params"].update(calibration_sample=16), "calibration_sample"),
    (lambda s: s["methods"][1]["params"].update(calibration_samples="many"), "many"),
    (lambda s: s["laws"][0].update(form="compresion-law"), "compresion-law"),
    (lambda s: s["laws"][0].update(group_by=["models"]), "models"),
])
def test_typical_mistakes_are_flagged(schema, change, where):
    quickstart = tomllib.loads((Path(__file__).parents[1] / "specs" / "quickstart.toml").read_text())
    spec = copy.deepcopy(quickstart)
    change(spec)
    found = errors(schema, spec)
    assert found, where
