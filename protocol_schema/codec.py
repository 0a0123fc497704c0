"""Encoders and decoders, built once per codec and per type.

Two codecs share one interface: JSON text (the default) and msgpack binary frames
(the ``exec-runtime.msgpack.v1`` subprotocol, where bytes travel as ``bin``).
"""

from __future__ import annotations

from typing import Any, Final, TypeVar

import msgspec

from .envelope import IncomingMessage

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
