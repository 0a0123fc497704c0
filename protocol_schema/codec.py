"""Encoders and decoders, built once per codec and per type.

Two codecs share one interface: JSON text (the default) and msgpack binary frames
(the ``exec-runtime.msgpack.v1`` subprotocol, where bytes travel as ``bin``).
"""

from __future__ import annotations

import binascii
import struct
from typing import Any, Final, Generic, TypeVar

import msgspec
import pybase64

from ._base import WireStruct
from .envelope import ErrorObject, IncomingMessage, Notification, Request, RequestId, Response
from .process import (
    ProcessOutputParams,
    ProcessReadResult,
    ProcessWriteParams,
    ReadChunk,
    StreamName,
    WriteId,
)

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


_EMPTY_CHUNK: Final = b'"chunk":""'
_CHUNK_OPEN: Final = b'"chunk":"'
_QUOTE: Final = ord('"')


def _msgpack_bin_header(length: int) -> bytes:
    if length < 1 << 8:
        return struct.pack("!BB", 0xC4, length)
    if length < 1 << 16:
        return struct.pack("!BH", 0xC5, length)
    return struct.pack("!BI", 0xC6, length)


class _OutputParamsText(WireStruct, omit_defaults=False):
    """``ProcessOutputParams`` as JSON carries it: the chunk as its base64 text.

    Output is nearly all of a stream's bytes, and msgspec's own base64 costs about
    2 ms per MB to encode and 3 ms per MB to decode on the benchmark machine;
    pybase64 (SIMD) is 20 times faster. So JSON output notifications are encoded and
    decoded through these mirror structs, with pybase64 doing the base64. The bytes
    on the wire are the same.
    """

    process_id: str
    seq: int
    stream: StreamName
    chunk: str


class _OutputParamsRaw(WireStruct):
    """``ProcessOutputParams`` with the chunk's JSON text left undecoded."""

    process_id: str
    seq: int
    stream: StreamName
    chunk: msgspec.Raw


class _ReadChunkRaw(WireStruct):
    """``ReadChunk`` with the chunk's JSON text left undecoded (pybase64 decodes it)."""

    seq: int
    stream: StreamName
    chunk: msgspec.Raw


class _ReadResultRaw(WireStruct, omit_defaults=False):
    """``ProcessReadResult`` as the JSON fast path decodes it: a read's chunks are a
    Codex-style host's whole output, and msgspec's base64 costs ~1.2 ms per MB each way."""

    chunks: list[_ReadChunkRaw]
    next_seq: int
    exited: bool
    exit_code: int | None
    closed: bool
    failure: str | None
    sandbox_denied: bool
    earliest_retained_seq: int | None = None


class _WriteParamsRaw(WireStruct, omit_defaults=False):
    """``ProcessWriteParams`` with the chunk's JSON text left undecoded: a JSON host's
    stdin, base64 through pybase64 as output is."""

    process_id: str
    write_id: WriteId
    chunk: msgspec.Raw = msgspec.Raw(b'""')
    close_stdin: bool = False


P = TypeVar("P", ProcessOutputParams, _OutputParamsRaw)


class _OutputMessage(WireStruct, Generic[P]):
    """``IncomingMessage`` of a ``process/output`` notification, its params typed: one
    pass over the frame instead of two (the envelope, then its raw params). The other
    fields mirror the envelope's, so that whatever it would reject, this rejects too.
    JSON uses ``_OutputParamsRaw`` (the base64 is decoded by pybase64), msgpack
    ``ProcessOutputParams`` (the chunk is a ``bin``: nothing to scan)."""

    method: str
    params: P
    id: RequestId | msgspec.UnsetType | None = msgspec.UNSET
    result: msgspec.Raw = msgspec.Raw()
    error: ErrorObject | None = None
    trace: msgspec.Raw = msgspec.Raw()


_OUTPUT_PREFIX: Final = {
    # How our daemon (and any encoder that keeps the envelope's field order) starts an
    # output notification: only a hint for the fast path, never a requirement.
    "json": b'{"method":"process/output","params":{',
    "msgpack": b"\xa6method\xaeprocess/output\xa6params",
}


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
        self._output_prefix = _OUTPUT_PREFIX[name]
        if self.binary:
            self._encoder: Any = msgspec.msgpack.Encoder()
            self._envelope_decoder: Any = msgspec.msgpack.Decoder(IncomingMessage)
        else:
            self._encoder = msgspec.json.Encoder()
            self._envelope_decoder = msgspec.json.Decoder(IncomingMessage)

    def encode(self, message: Any) -> bytes:
        pieces = self.encode_pieces(message)
        return pieces if isinstance(pieces, bytes) else b"".join(pieces)

    def encode_pieces(self, message: Any) -> bytes | tuple[bytes, ...]:
        """``encode``, but an output notification comes as pieces to be joined: the
        chunk itself (msgpack) or its base64 (JSON) is never copied into a message.
        The joined bytes are exactly what ``encode`` returns."""
        if isinstance(message, Notification) and isinstance(message.params, ProcessOutputParams):
            return self._encode_output(message, message.params)
        if (
            not self.binary
            and isinstance(message, Response)
            and isinstance(message.result, ProcessReadResult)
            and message.result.chunks
        ):
            return self._encode_read_text(message, message.result)
        if (
            not self.binary
            and isinstance(message, Request)
            and isinstance(message.params, ProcessWriteParams)
            and message.params.chunk
        ):
            return self._encode_write_text(message, message.params)
        return self._encoder.encode(message)  # type: ignore[no-any-return]

    def _encode_write_text(
        self, message: Request, params: ProcessWriteParams
    ) -> bytes | tuple[bytes, ...]:
        # As ``_encode_output``; the chunk is not the last member here, which does not
        # matter: the pattern still can't be inside a string value.
        frame: bytes = self._encoder.encode(
            msgspec.structs.replace(message, params=msgspec.structs.replace(params, chunk=b""))
        )
        before, found, after = frame.partition(_EMPTY_CHUNK)
        if not found or _EMPTY_CHUNK in after:  # pragma: no cover - msgspec changed
            return self._encoder.encode(message)  # type: ignore[no-any-return]
        return before + _CHUNK_OPEN, pybase64.b64encode(params.chunk), b'"' + after

    def _encode_read_text(
        self, message: Response, result: ProcessReadResult
    ) -> bytes | tuple[bytes, ...]:
        # As ``_encode_output``: encoded with empty chunks, then each chunk's pybase64
        # text put in its place, in order (a chunk is the last member of its object,
        # and the pattern can't be inside a string value, whose quotes are escaped).
        empty = [ReadChunk(seq=c.seq, stream=c.stream, chunk=b"") for c in result.chunks]
        frame: bytes = self._encoder.encode(
            msgspec.structs.replace(message, result=msgspec.structs.replace(result, chunks=empty))
        )
        parts = frame.split(_EMPTY_CHUNK)
        if len(parts) != len(empty) + 1:  # pragma: no cover - msgspec changed
            return self._encoder.encode(message)  # type: ignore[no-any-return]
        pieces = [parts[0]]
        for chunk, after in zip(result.chunks, parts[1:], strict=True):
            pieces += (_CHUNK_OPEN, pybase64.b64encode(chunk.chunk), b'"' + after)
        return tuple(pieces)

    def _encode_output(
        self, message: Notification, params: ProcessOutputParams
    ) -> bytes | tuple[bytes, ...]:
        # Encode with an empty chunk, then put the chunk in its place: msgspec never
        # copies (or, in JSON, base64-encodes and scans) the big value.
        if self.binary:
            if message.trace is not None:
                return self._encoder.encode(message)  # type: ignore[no-any-return]
            empty = Notification(
                method=message.method,
                params=ProcessOutputParams(
                    process_id=params.process_id, seq=params.seq, stream=params.stream, chunk=b""
                ),
            )
            frame: bytes = self._encoder.encode(empty)
            # The chunk is the last value: an empty bin 8 (c4 00) ends the message.
            if not frame.endswith(b"\xc4\x00"):  # pragma: no cover - msgspec changed
                return self._encoder.encode(message)  # type: ignore[no-any-return]
            return frame[:-2] + _msgpack_bin_header(len(params.chunk)), params.chunk
        empty_text = Notification(
            method=message.method,
            params=_OutputParamsText(
                process_id=params.process_id, seq=params.seq, stream=params.stream, chunk=""
            ),
            trace=message.trace,
        )
        frame = self._encoder.encode(empty_text)
        # Found from the right, and can't be inside a string value (its quotes would
        # be escaped there).
        at = frame.rindex(_EMPTY_CHUNK) + len(_EMPTY_CHUNK) - 1
        return frame[:at], pybase64.b64encode(params.chunk), frame[at:]

    def decode_message(self, data: bytes | bytearray | str) -> IncomingMessage:
        if self.binary and isinstance(data, str):
            # A text frame on a msgpack connection: garbage, not a crash (TypeError).
            raise MalformedMessage("malformed message: msgpack messages travel in binary frames")
        try:
            return self._envelope_decoder.decode(data)  # type: ignore[no-any-return]
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise MalformedMessage(f"malformed message: {exc}") from None

    def decode_output_notification(
        self, data: bytes | bytearray | str
    ) -> ProcessOutputParams | None:
        """The params of a well-formed ``process/output`` notification, decoded in one
        pass; None for any other message (``decode_message`` then takes it, and names
        what is wrong with it).

        Output is nearly every message a client receives, and in JSON each pass over a
        frame scans the whole base64 text.
        """
        if isinstance(data, str):
            return None
        prefix = self._output_prefix
        if self.binary:
            # A map of 2 to 6 entries (fixmap), "method" first.
            if not data or not 0x82 <= data[0] <= 0x86 or data[1 : 1 + len(prefix)] != prefix:
                return None
        elif data[: len(prefix)] != prefix:
            return None
        decoder = self._decoders.get(_OutputMessage)
        if decoder is None:
            module = msgspec.msgpack if self.binary else msgspec.json
            typed = (
                _OutputMessage[ProcessOutputParams]
                if self.binary
                else _OutputMessage[_OutputParamsRaw]
            )
            decoder = self._decoders[_OutputMessage] = module.Decoder(typed)
        try:
            message = decoder.decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return None
        if message.method != "process/output":  # a duplicate "method" key, say
            return None
        if self.binary:
            return message.params  # type: ignore[no-any-return]
        return self._output_from_raw(message.params)

    def decode(self, raw: msgspec.Raw | bytes | None, type_: type[T]) -> T:
        """Decode ``params`` or ``result``; absent or null decode as ``{}``."""
        if type_ is ProcessOutputParams and not self.binary:
            return self._decode_output(raw)  # type: ignore[return-value]
        if type_ is ProcessReadResult and not self.binary:
            return self._decode_read(raw)  # type: ignore[return-value]
        if type_ is ProcessWriteParams and not self.binary:
            return self._decode_write(raw)  # type: ignore[return-value]
        return self._decode(raw, type_)

    def _decode_write(self, raw: msgspec.Raw | bytes | None) -> ProcessWriteParams:
        # As ``_decode_output``.
        fast = self._decode(raw, _WriteParamsRaw)
        chunk = _base64_of(fast.chunk)
        if chunk is None:
            return self._decode(raw, ProcessWriteParams)
        return ProcessWriteParams(
            process_id=fast.process_id,
            write_id=fast.write_id,
            chunk=chunk,
            close_stdin=fast.close_stdin,
        )

    def _decode_read(self, raw: msgspec.Raw | bytes | None) -> ProcessReadResult:
        # As ``_decode_output``, chunk by chunk; any chunk pybase64 can't take as it
        # is sends the whole result down msgspec's path, which decodes it or names
        # the error.
        fast = self._decode(raw, _ReadResultRaw)
        chunks = []
        for item in fast.chunks:
            data = _base64_of(item.chunk)
            if data is None:
                return self._decode(raw, ProcessReadResult)
            chunks.append(ReadChunk(seq=item.seq, stream=item.stream, chunk=data))
        return ProcessReadResult(
            chunks=chunks,
            next_seq=fast.next_seq,
            exited=fast.exited,
            exit_code=fast.exit_code,
            closed=fast.closed,
            failure=fast.failure,
            sandbox_denied=fast.sandbox_denied,
            earliest_retained_seq=fast.earliest_retained_seq,
        )

    def _decode_output(self, raw: msgspec.Raw | bytes | None) -> ProcessOutputParams:
        # The chunk stays raw (a view of the frame, no copy) and pybase64 decodes the
        # text between its quotes. Base64 needs no JSON escapes; whatever pybase64
        # rejects (an escaped slash, or no base64 at all) takes msgspec's own path,
        # which decodes it or names the error.
        output = self._output_from_raw(self._decode(raw, _OutputParamsRaw))
        return output if output is not None else self._decode(raw, ProcessOutputParams)

    @staticmethod
    def _output_from_raw(params: _OutputParamsRaw) -> ProcessOutputParams | None:
        """None when pybase64 can't take the chunk's text as it is."""
        chunk = _base64_of(params.chunk)
        if chunk is None:
            return None
        return ProcessOutputParams(
            process_id=params.process_id, seq=params.seq, stream=params.stream, chunk=chunk
        )

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


def _base64_of(raw: msgspec.Raw) -> bytes | None:
    """The bytes a JSON string of plain base64 holds; None when pybase64 can't take the
    text as it is (an escape, not a string, not base64)."""
    text = memoryview(raw)
    if len(text) < 2 or text[0] != _QUOTE or text[-1] != _QUOTE:
        return None
    try:
        return pybase64.b64decode(text[1:-1], validate=True)
    except (binascii.Error, ValueError):
        return None


JSON: Final = Codec("json")
MSGPACK: Final = Codec("msgpack")


def codec_for_subprotocol(subprotocol: str | None) -> Codec:
    return MSGPACK if subprotocol == MSGPACK_SUBPROTOCOL else JSON
