"""Params: JSON Schema validation, conf overrides, required params, serialization."""

from __future__ import annotations

import json

import pytest

from engine.exceptions import ParamValidationError
from engine.sdk.params import NOTSET, DagParam, Param, ParamsDict


def test_plain_values_are_wrapped():
    params = ParamsDict({"a": 1, "b": Param("x", type="string")})
    assert isinstance(params["a"], Param) and params["a"].value == 1 and params["a"].schema == {}
    assert params["b"].schema == {"type": "string"}


def test_setting_a_plain_value_keeps_the_existing_schema():
    params = ParamsDict({"n": Param(1, type="integer", minimum=0, description="count")})
    params["n"] = 5
    assert params["n"].value == 5
    assert params["n"].schema == {"type": "integer", "minimum": 0}
    assert params["n"].description == "count"


def test_resolve_merges_conf_over_defaults():
    params = ParamsDict(
        {"n": Param(1, type="integer"), "mode": Param("fast", enum=["fast", "slow"])}
    )
    assert params.resolve(None) == {"n": 1, "mode": "fast"}
    assert params.resolve({"mode": "slow"}) == {"n": 1, "mode": "slow"}
    # conf keys that are not params pass through, as in Airflow
    assert params.resolve({"extra": [1]}) == {"n": 1, "mode": "fast", "extra": [1]}


@pytest.mark.parametrize(
    ("param", "value", "fragment"),
    [
        (Param(1, type="integer"), "abc", "'abc' is not of type 'integer'"),
        (Param(1, type="integer", minimum=1), 0, "0 is less than the minimum of 1"),
        (Param("a", enum=["a", "b"]), "c", "'c' is not one of ['a', 'b']"),
        (Param("x", type="string", maxLength=3), "long", "is too long"),
        (Param([], type="array", items={"type": "integer"}), [1, "x"], "'x' is not of type"),
        (Param("2026-01-01", type="string", format="date"), "not a date", "is not a 'date'"),
    ],
)
def test_validation_errors_name_param_value_and_problem(param, value, fragment):
    params = ParamsDict({"p": param})
    with pytest.raises(ParamValidationError) as info:
        params.resolve({"p": value})
    message = str(info.value)
    assert message.startswith(f"param 'p': value {value!r} is not valid")
    assert fragment in message
    assert "schema" in message


def test_missing_required_param():
    params = ParamsDict({"target": Param(type="string"), "ok": 1})
    with pytest.raises(ParamValidationError, match="param 'target' is required"):
        params.resolve({})
    assert params.resolve({"target": "prod"}) == {"target": "prod", "ok": 1}


def test_none_is_a_value_not_a_missing_default():
    param = Param(None, type=["null", "string"])
    assert param.has_value and param.resolve(name="x") is None
    assert not Param().has_value and Param().value is NOTSET


def test_validate_checks_defaults_only():
    ParamsDict({"required": Param(type="integer")}).validate()
    with pytest.raises(ParamValidationError, match="param 'bad'"):
        ParamsDict({"bad": Param("x", type="integer")}).validate()


def test_invalid_schema_is_reported():
    with pytest.raises(ParamValidationError, match="invalid schema"):
        Param(1, type="no-such-type").resolve(name="x")


def test_dump_and_load_round_trip():
    params = ParamsDict(
        {"n": Param(3, type="integer", description="how many"), "req": Param(type="string")}
    )
    dumped = json.loads(json.dumps(params.dump()))
    assert dumped["req"] == {
        "default": None,
        "has_default": False,
        "description": None,
        "schema": {"type": "string"},
    }
    loaded = ParamsDict.load(dumped)
    assert loaded["n"].value == 3 and loaded["n"].description == "how many"
    assert not loaded["req"].has_value
    with pytest.raises(ParamValidationError, match="required"):
        loaded.resolve({})


def test_dump_refuses_non_json_defaults():
    params = ParamsDict({"when": Param(object())})
    with pytest.raises(
        ParamValidationError, match="param 'when' of DAG 'd' is not JSON-serializable"
    ):
        params.dump(owner="DAG 'd'")


def test_dag_param_resolves_from_context():
    placeholder = DagParam("size", default=2)
    assert placeholder.resolve({"params": {"size": 9}}) == 9
    assert placeholder.resolve({"params": {}}) == 2
    assert str(placeholder) == "{{ params['size'] }}"
    with pytest.raises(ParamValidationError, match="'other' has no value"):
        DagParam("other").resolve({"params": {}})


def test_params_dict_is_a_mutable_mapping():
    params = ParamsDict({"a": 1})
    params["b"] = 2
    del params["a"]
    assert list(params) == ["b"] and len(params) == 1
    assert params.defaults() == {"b": 2}
    copied = params.copy()
    copied["c"] = 3
    assert "c" not in params
