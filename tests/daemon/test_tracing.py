"""Request spans parented on the ``trace`` carrier (PROTOCOL §2), recorded by an
OpenTelemetry SDK provider given to the daemon, and the client's propagation of the
host's active span."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trio
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import exec_runtime
from exec_runtime import ServerConfig

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
PARENT_ID = 0x00F067AA0BA902B7
TRACEPARENT = f"00-{TRACE_ID:032x}-{PARENT_ID:016x}-01"

EXPORTER = InMemorySpanExporter()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))


@pytest.fixture
def server_config() -> Iterator[ServerConfig]:
    EXPORTER.clear()
    yield ServerConfig(tracer_provider=PROVIDER)


def spans_named(name: str) -> list[ReadableSpan]:
    return [span for span in EXPORTER.get_finished_spans() if span.name == name]


async def test_a_request_span_is_parented_on_the_carrier(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        trace = {"traceparent": TRACEPARENT, "tracestate": "congo=t61rcWkgMzE"}
        reply = await client.request("environment/status", None, trace=trace)
        assert reply["result"] == {"status": "ready"}
        (span,) = spans_named("environment/status")
        assert span.kind is SpanKind.SERVER
        assert span.parent is not None and span.parent.span_id == PARENT_ID
        assert span.parent.is_remote
        assert span.context is not None and span.context.trace_id == TRACE_ID
        assert span.context.trace_state.to_header() == "congo=t61rcWkgMzE"
        assert span.attributes is not None and span.attributes["rpc.method"] == (
            "environment/status"
        )


@pytest.mark.parametrize(
    "trace",
    [
        None,
        {},
        {"traceparent": "not-a-traceparent"},
        {"traceparent": f"00-{0:032x}-{PARENT_ID:016x}-01"},  # an all-zero trace id
        {"traceparent": 12},
        "a string",
        [TRACEPARENT],
    ],
)
async def test_without_a_valid_carrier_the_span_is_a_root(connect: Any, trace: Any) -> None:
    """An invalid carrier is ignored, never an error: the request is served, and its
    span starts a trace of its own."""
    with trio.fail_after(5):
        client = await connect()
        extra = {} if trace is None else {"trace": trace}
        reply = await client.request("environment/status", None, **extra)
        assert reply["result"] == {"status": "ready"}
        (span,) = spans_named("environment/status")
        assert span.parent is None


async def test_an_error_reply_marks_its_span(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        reply = await client.request("process/read", {"processId": "nope"})
        assert reply["error"]["code"] == -32600
        (span,) = spans_named("process/read")
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes is not None
        assert span.attributes["rpc.jsonrpc.error_code"] == -32600


async def test_the_client_carries_the_hosts_active_span(
    nursery: trio.Nursery, server_config: ServerConfig
) -> None:
    """An agent host's span around ``client.run`` is the parent of the daemon's
    ``process/start`` span: one trace from the host through the daemon."""
    with trio.fail_after(10):
        url = await nursery.start(exec_runtime.serve, server_config)
        async with exec_runtime.open_client(url) as client:
            host = PROVIDER.get_tracer("agent-host")
            with host.start_as_current_span("tool call") as tool_call:
                await client.run(["true"])
            await client.run(["true"])  # no active span: no carrier
        starts = spans_named("process/start")
        assert len(starts) == 2
        joined, alone = starts
        assert joined.parent is not None
        assert joined.parent.span_id == tool_call.get_span_context().span_id
        assert joined.context is not None
        assert joined.context.trace_id == tool_call.get_span_context().trace_id
        assert alone.parent is None
