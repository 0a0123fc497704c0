"""Request spans (PROTOCOL §2): each request runs in a span parented on the W3C trace
carrier it brought, if any.

Only the OpenTelemetry API is used. Without an SDK configured (the default) spans cost
a few microseconds and go nowhere; a daemon run under ``opentelemetry-instrument``, or
an embedding host that installed a ``TracerProvider`` (or passed one in
``ServerConfig.tracer_provider``), gets them exported, joined to the client's trace.
"""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager, nullcontext

import msgspec
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

import protocol_schema as wire

_PROPAGATOR = TraceContextTextMapPropagator()


def request_span(
    provider: trace.TracerProvider | None, method: str, parent: Context | None
) -> AbstractContextManager[trace.Span]:
    """The span one request runs in. With no SDK behind the provider, none at all:
    it would record nothing, and even a no-op span costs ~18 µs here."""
    provider = provider or trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return nullcontext(trace.INVALID_SPAN)
    return _tracer(provider).start_as_current_span(
        method,
        context=parent,
        kind=trace.SpanKind.SERVER,
        attributes={"rpc.system": "jsonrpc", "rpc.method": method},
        record_exception=False,
        set_status_on_exception=False,
    )


@functools.lru_cache(maxsize=8)
def _tracer(provider: trace.TracerProvider) -> trace.Tracer:
    return provider.get_tracer("exec_runtime")


def parent_of(codec: wire.Codec, raw: msgspec.Raw) -> Context | None:
    """The context a request's ``trace`` member names; None when it is absent or not a
    carrier at all. A malformed ``traceparent`` yields a context with no span in it,
    so the request's span starts a trace of its own: ignored, never an error."""
    if not raw:
        return None
    try:
        carrier = codec.decode(raw, wire.TraceContext)
    except (wire.InvalidParams, msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        return None
    fields = {"traceparent": carrier.traceparent, "tracestate": carrier.tracestate}
    headers = {name: value for name, value in fields.items() if value is not None}
    return _PROPAGATOR.extract(headers) if headers else None


def current_carrier() -> wire.TraceContext | None:
    """The caller's active span as a ``trace`` carrier for a request, so the daemon's
    span joins the host's trace; None when no span is active."""
    headers: dict[str, str] = {}
    _PROPAGATOR.inject(headers)
    if "traceparent" not in headers:
        return None
    return wire.TraceContext(
        traceparent=headers["traceparent"], tracestate=headers.get("tracestate")
    )
