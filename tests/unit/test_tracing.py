"""W3C traceparent: a valid parent's trace continues with a new span; anything else starts one."""

from __future__ import annotations

import pytest

from socialflow.lib import telemetry
from socialflow.lib.tracing import child_traceparent, trace_id

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_a_valid_parent_keeps_its_trace_and_gets_a_new_span() -> None:
    child = child_traceparent(PARENT)
    assert trace_id(child) == "0af7651916cd43dd8448eb211c80319c"
    assert child.split("-")[2] != "b7ad6b7169203331"
    assert child.endswith("-01")


@pytest.mark.parametrize(
    "parent",
    [None, "", "garbage", "00-" + "0" * 32 + "-b7ad6b7169203331-01", PARENT.upper()],
)
def test_a_missing_or_invalid_parent_starts_a_new_trace(parent: str | None) -> None:
    child = child_traceparent(parent)
    assert trace_id(child) != "0af7651916cd43dd8448eb211c80319c"
    assert len(trace_id(child)) == 32


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),  # the default: no span, no patch
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
    ],
)
def test_traces_are_on_only_when_the_otel_variables_ask(env: dict[str, str], on: bool) -> None:
    assert telemetry.wanted(env) is on


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_TRACES_EXPORTER": "zipkin"},
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
    ],
)
def test_an_exporter_not_supported_leaves_traces_off_instead_of_stopping_the_process(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert telemetry.configure("test") is False
    assert not telemetry.TRACING.on
