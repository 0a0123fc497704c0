"""JSON-RPC envelopes (PROTOCOL.md §2): request, notification, response, error."""

from __future__ import annotations

from typing import Any

import msgspec

from ._base import WireStruct

RequestId = int | str


class TraceContext(WireStruct):
    """W3C trace carrier; an invalid carrier is ignored, never an error."""

    traceparent: str | None = None
    tracestate: str | None = None


class ErrorObject(WireStruct):
    code: int
    message: str
    data: Any = None


class IncomingMessage(WireStruct):
    """Any message, decoded lazily: ``params``/``result`` stay raw until the method is known.

    ``id`` is UNSET for a notification. ``trace`` is raw so a malformed carrier never
    fails the envelope.
    """

    id: RequestId | msgspec.UnsetType | None = msgspec.UNSET
    method: str | None = None
    # Raw fields default to an empty Raw, which means "absent".
    params: msgspec.Raw = msgspec.Raw()
    result: msgspec.Raw = msgspec.Raw()
    error: ErrorObject | None = None
    trace: msgspec.Raw = msgspec.Raw()


class Request(WireStruct):
    id: RequestId
    method: str
    params: Any = None
    trace: TraceContext | None = None


class Notification(WireStruct):
    method: str
    params: Any = None
    trace: TraceContext | None = None


class Response(WireStruct, omit_defaults=False):
    id: RequestId
    result: Any


class ErrorResponse(WireStruct, omit_defaults=False):
    id: RequestId
    error: ErrorObject
