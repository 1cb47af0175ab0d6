"""The input guard's cost stays proportional to the body, whatever its shape."""

from __future__ import annotations

import json
import tracemalloc

import pytest

from socialflow.lib.input_guard import check_json_body
from socialflow.lib.problems import Problem


def test_a_body_of_many_items_under_a_long_key_is_checked_without_building_every_path() -> None:
    # 10,000 items under a 30 kB key, the NUL in the last one: paths built up front would
    # cost key length x items (300 MB); only the offending string's path is built.
    body = json.dumps({"k" * 30_000: [*(["x"] * 10_000), "\x00"]}).encode()
    tracemalloc.start()
    try:
        with pytest.raises(Problem) as refused:
            check_json_body(body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.value.status == 422
    assert peak < 20 * len(body) + 5_000_000
    (error,) = refused.value.extra["errors"]
    assert error["field"].endswith("…")  # a field name is cut, not echoed whole
    assert len(error["field"]) <= 201


def test_json_nested_past_the_parsers_limit_is_a_400_not_a_500() -> None:
    for body in (b"[" * 3000 + b'"\\u0000"' + b"]" * 3000, b"[" * 3000 + b"1" + b"]" * 3000):
        with pytest.raises(Problem) as refused:
            check_json_body(body)
        assert refused.value.status == 400
        assert refused.value.kind == "validation-error"


def test_a_nul_deep_in_a_document_is_named_by_its_place() -> None:
    body = json.dumps({"a": [{"b": "ok"}, {"c": ["x", "y\x00"]}]}).encode()
    with pytest.raises(Problem) as refused:
        check_json_body(body)
    assert refused.value.extra["errors"][0]["field"] == "a[1].c[1]"
