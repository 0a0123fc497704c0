"""Encoders and decoders, built once per codec and per type.

Two codecs share one interface: JSON text (the default) and msgpack binary frames
(the ``exec-runtime.msgpack.v1`` subprotocol, where bytes travel as ``bin``).
"""

from __future__ import annotations

import binascii
from typing import Any, Final, TypeVar

import msgspec
import pybase64

from ._base import WireStruct
from .envelope import IncomingMessage, Notification
from .process import ProcessOutputParams, StreamName

T = TypeVar("T")

MSGPACK_SUBPROTOCOL: Final = "exec-runtime.msgpack.v1"
_EMPTY_OBJECT: Final = {"json": b"{}", "msgpack": b"\x80"}
# What an absent or null ``params``/``result`` looks like: an empty Raw, or null.
# Exact bytes, not stripped: in msgpack b" " is the integer 32, not whitespace.
_NULLS: Final = {"json": (b"", b"null"), "msgpack": (b"", b"\xc0")}


class MalformedMessage(ValueError):
    """The frame is not a JSON-RPC message at all (-32600 with id -1)."""


class InvalidParams(ValueError):
    """The params do not match the method's type (-32602); the message names the field."""


class _OutputParamsText(WireStruct, omit_defaults=False):
    """``ProcessOutputParams`` as JSON carries it: the chunk as its base64 text.

    Output is nearly all of a stream's bytes, and msgspec's own base64 costs about
    2 ms per MB to encode and 3 ms per MB to decode on the benchmark machine;
    pybase64 (SIMD) is 20 times faster. So JSON output notifications are encoded and
    decoded through this mirror struct, with pybase64 doing the base64. The bytes on
    the wire are the same.
    """

    process_id: str
    seq: int
    stream: StreamName
    chunk: str


class Codec:
    """Encode and decode messages for one wire format. Stateless and safe to share."""

    def __init__(self, name: str) -> None:
        if name not in _EMPTY_OBJECT:
            raise ValueError(f"unknown codec {name!r}")
        self.name = name
        self.binary = name == "msgpack"
        self._empty = msgspec.Raw(_EMPTY_OBJECT[name])
        self._nulls = _NULLS[name]
        self._decoders: dict[type, Any] = {}
        if self.binary:
            self._encoder: Any = msgspec.msgpack.Encoder()
            self._envelope_decoder: Any = msgspec.msgpack.Decoder(IncomingMessage)
        else:
            self._encoder = msgspec.json.Encoder()
            self._envelope_decoder = msgspec.json.Decoder(IncomingMessage)

    def encode(self, message: Any) -> bytes:
        if (
            not self.binary
            and isinstance(message, Notification)
            and isinstance(message.params, ProcessOutputParams)
        ):
            params = message.params
            text = pybase64.b64encode(params.chunk).decode("ascii")
            message = Notification(
                method=message.method,
                params=_OutputParamsText(
                    process_id=params.process_id, seq=params.seq, stream=params.stream, chunk=text
                ),
                trace=message.trace,
            )
        return self._encoder.encode(message)  # type: ignore[no-any-return]

    def decode_message(self, data: bytes | str) -> IncomingMessage:
        if self.binary and isinstance(data, str):
            # A text frame on a msgpack connection: garbage, not a crash (TypeError).
            raise MalformedMessage("malformed message: msgpack messages travel in binary frames")
        try:
            return self._envelope_decoder.decode(data)  # type: ignore[no-any-return]
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise MalformedMessage(f"malformed message: {exc}") from None

    def decode(self, raw: msgspec.Raw | bytes | None, type_: type[T]) -> T:
        """Decode ``params`` or ``result``; absent or null decode as ``{}``."""
        if type_ is ProcessOutputParams and not self.binary:
            text = self._decode(raw, _OutputParamsText)
            try:
                chunk = pybase64.b64decode(text.chunk.encode("ascii"), validate=True)
            except (UnicodeEncodeError, binascii.Error, ValueError) as exc:
                message = f"invalid params: invalid base64 data - at `$.chunk`: {exc}"
                raise InvalidParams(message) from None
            return ProcessOutputParams(  # type: ignore[return-value]
                process_id=text.process_id, seq=text.seq, stream=text.stream, chunk=chunk
            )
        return self._decode(raw, type_)

    def _decode(self, raw: msgspec.Raw | bytes | None, type_: type[T]) -> T:
        decoder = self._decoders.get(type_)
        if decoder is None:
            module = msgspec.msgpack if self.binary else msgspec.json
            decoder = self._decoders[type_] = module.Decoder(type_)
        if raw is None or (len(raw) <= 4 and bytes(raw) in self._nulls):
            raw = self._empty
        try:
            return decoder.decode(raw)  # type: ignore[no-any-return]
        except msgspec.ValidationError as exc:
            # msgspec names the field: "Expected `int`, got `str` - at `$.processId`".
            raise InvalidParams(f"invalid params: {exc}") from None
        except msgspec.DecodeError as exc:
            raise InvalidParams(f"invalid params: {exc}") from None


JSON: Final = Codec("json")
MSGPACK: Final = Codec("msgpack")


def codec_for_subprotocol(subprotocol: str | None) -> Codec:
    return MSGPACK if subprotocol == MSGPACK_SUBPROTOCOL else JSON
