"""The store's JSON: orjson, and json for what orjson refuses (nothing json takes is lost)."""

from __future__ import annotations

import json
import math

import pytest

from mailhouse.store.sqlite import jsontext


@pytest.mark.parametrize(
    "value",
    [
        {"a": [1, 2.5, None, True, "é"], "b": {"c": ""}},
        ["x", ("tuple", "as", "list")],
        "\udcff surrogate-escaped byte",  # orjson refuses lone surrogates
        2**70,  # orjson refuses integers past 64 bits
    ],
)
def test_round_trip(value: object) -> None:
    expected = json.loads(json.dumps(value))
    assert jsontext.loads(jsontext.dumps(value)) == expected


def test_reads_what_json_wrote() -> None:
    # Older rows were written by json: spaces, escapes, NaN.
    assert jsontext.loads(json.dumps({"k": "é", "n": [1, 2]})) == {"k": "é", "n": [1, 2]}
    assert math.isnan(jsontext.loads(json.dumps({"x": float("nan")}))["x"])
    assert jsontext.loads(json.dumps("\udcff")) == "\udcff"


def test_compact_and_refuses_what_json_refuses() -> None:
    assert jsontext.dumps({"a": [1, 2]}) == '{"a":[1,2]}'
    with pytest.raises(TypeError):
        jsontext.dumps({"a": b"bytes"})
    with pytest.raises(ValueError):
        jsontext.loads("{not json")
