"""RFC 6455 frames without I/O: a parser that is fed bytes and hands out events, and the
serializers for the frames this runtime sends. The WebSocket I/O shell owns the socket
and the close handshake; everything about bytes on the wire is here.

The parser has h11's shape. The shell feeds what it read with ``receive_data`` and
pulls events with ``next_event`` until it returns ``NEED_DATA``:

    parser = FrameParser(client=True, max_message_size=...)
    parser.receive_data(data)
    while (event := parser.next_event()) is not NEED_DATA:
        ...  # Message, Ping, Pong or Close

A peer that breaks the protocol makes ``next_event`` raise ``ProtocolError``, whose
``code`` is the close code to fail the connection with (1002 protocol error, 1007
invalid payload, 1009 message too big). The parser is then done: every later
``next_event`` raises the same error. Once a ``Close`` event was returned, every
later call returns that same event and further data is dropped (RFC 6455 §5.5.1:
nothing follows a close frame).

States, per frame: the parser reads a frame's header (2 to 14 bytes) as soon as it
has all of it, and checks it at once (reserved bits, opcode, masking, control frame
rules, minimal length encoding, message size, continuation order). Then the payload:

- all of it already fed: taken (unmasked if masked), one copy;
- a data frame of ``DIRECT_RECEIVE_BYTES`` to ``DIRECT_RECEIVE_MAX`` not all fed yet:
  the parser allocates a buffer of the payload's size and moves what it has into it.
  ``get_buffer`` then returns a writable view of the rest, which the shell fills
  straight from the socket (``recv_into``) and reports with ``buffer_updated``: the
  payload is copied once, never joined from pieces. (asyncio's BufferedProtocol has
  the same two calls.) Bytes given to ``receive_data`` meanwhile fill it too;
- anything else: the parser waits for more; bytes that span reads are joined. A
  frame past ``DIRECT_RECEIVE_MAX`` grows only as its bytes arrive, so a header alone
  never makes this end reserve a whole ``max_message_size``.

Then per message: a data frame with FIN set and a non-zero opcode is a whole message
(the usual case; a text message is checked for UTF-8 then). Otherwise it starts or
continues a fragmented message; each fragment of a text message goes through an
incremental UTF-8 decoder, so bad UTF-8 fails the connection at the fragment that
holds it, before later control frames are reported (wsproto does the same). Control
frames (ping, pong, close) may come between fragments and are reported as they come.

Close frames are checked as RFC 6455 §7.4 says: an empty payload is code 1005 (none
given); one byte, or a code that may not be sent (``close_code_is_valid``), fails the
connection with 1002; a reason that is not UTF-8 fails it with 1007.

``receive_data`` parses straight from the object it was given when nothing is left
over (no copy), so a caller must not modify that object afterwards. All of this runs
in the caller's task: no thread, no hand-off.
"""

from __future__ import annotations

import codecs
import os
import struct
from typing import Final, NamedTuple

__all__ = [
    "BINARY",
    "CLOSE",
    "CONTINUATION",
    "DIRECT_RECEIVE_BYTES",
    "DIRECT_RECEIVE_MAX",
    "GOING_AWAY",
    "INVALID_PAYLOAD",
    "MAX_CLOSE_REASON_BYTES",
    "MESSAGE_TOO_BIG",
    "NEED_DATA",
    "NORMAL_CLOSURE",
    "NO_STATUS_RECEIVED",
    "PING",
    "PONG",
    "PROTOCOL_ERROR",
    "TEXT",
    "Close",
    "Event",
    "FrameParser",
    "Message",
    "NeedData",
    "Ping",
    "Pong",
    "ProtocolError",
    "client_frame",
    "close_code_is_valid",
    "close_payload",
    "control_frame",
    "mask",
    "server_frame_header",
    "truncate_utf8",
]

CONTINUATION: Final = 0x0
TEXT: Final = 0x1
BINARY: Final = 0x2
CLOSE: Final = 0x8
PING: Final = 0x9
PONG: Final = 0xA

NORMAL_CLOSURE: Final = 1000
GOING_AWAY: Final = 1001
PROTOCOL_ERROR: Final = 1002
NO_STATUS_RECEIVED: Final = 1005
"""Reported for a close frame without a code; never sent (RFC 6455 §7.4.1)."""
INVALID_PAYLOAD: Final = 1007
MESSAGE_TOO_BIG: Final = 1009

MAX_CONTROL_PAYLOAD: Final = 125
MAX_CLOSE_REASON_BYTES: Final = MAX_CONTROL_PAYLOAD - 2

DIRECT_RECEIVE_BYTES: Final = 64 * 1024
DIRECT_RECEIVE_MAX: Final = 1 << 20
"""A data frame of DIRECT_RECEIVE_BYTES to DIRECT_RECEIVE_MAX that is not all fed yet
is read into its own buffer, sized from its header (an output chunk's frame is at
most ~350 KB). Bigger frames grow as their bytes arrive."""


# --- close codes (RFC 6455 §7.4) ------------------------------------------------------


def close_code_is_valid(code: int) -> bool:
    """Whether ``code`` may be sent in a close frame (and so accepted in one).

    1000-1003 and 1007-1011 are RFC 6455's; 1012-1014 are registered with IANA
    (restart, try again later, bad gateway); 3000-4999 belong to libraries and
    applications. 1004 is reserved; 1005, 1006 and 1015 are for reporting only and
    must never be on the wire; the rest of 1000-2999 is unassigned and everything
    below 1000 or from 5000 is invalid.
    """
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def truncate_utf8(data: bytes, limit: int) -> bytes:
    """The longest prefix of UTF-8 ``data`` of at most ``limit`` bytes that does not cut
    a character."""
    if len(data) <= limit:
        return data
    end = limit
    while end > 0 and data[end] & 0xC0 == 0x80:  # data[end] continues a character
        end -= 1
    return data[:end]


def close_payload(code: int, reason: str = "") -> bytes:
    """A close frame's payload: ``code`` and as much of ``reason`` as fits in 125 bytes,
    cut between characters. Raises ValueError for a code that may not be sent."""
    if not close_code_is_valid(code):
        raise ValueError(f"close code {code} may not be sent (RFC 6455 §7.4)")
    return struct.pack("!H", code) + truncate_utf8(reason.encode(), MAX_CLOSE_REASON_BYTES)


# --- serializing ----------------------------------------------------------------------


def mask(payload: bytes | bytearray | memoryview, key: bytes) -> bytes:
    """``payload`` XOR the repeating 4-byte ``key`` (one big-integer XOR: C speed)."""
    length = len(payload)
    if not length:
        return b""
    keystream = (key * (length // 4 + 1))[:length]
    masked = int.from_bytes(payload, "little") ^ int.from_bytes(keystream, "little")
    return masked.to_bytes(length, "little")


def client_frame(opcode: int, payload: bytes, key: bytes | None = None) -> bytes:
    """One final frame, masked with ``key`` (a fresh random one if None, RFC 6455 §5.3)."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    if key is None:
        key = os.urandom(4)
    return header + key + mask(payload, key)


def server_frame_header(opcode: int, length: int) -> bytes:
    """The header of one unmasked, final frame; the payload follows as it is."""
    if length < 126:
        return struct.pack("!BB", 0x80 | opcode, length)
    if length < 1 << 16:
        return struct.pack("!BBH", 0x80 | opcode, 126, length)
    return struct.pack("!BBQ", 0x80 | opcode, 127, length)


def control_frame(opcode: int, payload: bytes, *, client: bool) -> bytes:
    """A ping, pong or close frame from this end (masked if ``client``)."""
    if len(payload) > MAX_CONTROL_PAYLOAD:
        raise ValueError(f"a control frame's payload is at most {MAX_CONTROL_PAYLOAD} bytes")
    if client:
        return client_frame(opcode, payload)
    return server_frame_header(opcode, len(payload)) + payload


# --- events ---------------------------------------------------------------------------


class NeedData:
    """``next_event`` has nothing more to report until more bytes are fed."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()


class Message(NamedTuple):
    """A whole data message: ``opcode`` is TEXT (``payload`` is valid UTF-8) or BINARY.

    A tuple, so the shell hands it on as its ``(opcode, payload)`` without a copy."""

    opcode: int
    payload: bytes | bytearray

    def __repr__(self) -> str:
        kind = "TEXT" if self.opcode == TEXT else "BINARY"
        return f"Message({kind}, {bytes(self.payload[:40])!r}, {len(self.payload)} bytes)"


class _Control:
    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, _Control)
            and type(other) is type(self)
            and (self.payload == other.payload)
        )

    def __hash__(self) -> int:
        return hash((type(self), self.payload))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.payload!r})"


class Ping(_Control):
    """A ping: the shell answers it with a pong of the same ``payload``."""

    __slots__ = ()


class Pong(_Control):
    """A pong (solicited or not)."""

    __slots__ = ()


class Close:
    """The peer's close frame, checked: ``code`` is valid to send, or 1005 if the frame
    had none; ``reason`` is its decoded text."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str = "") -> None:
        self.code = code
        self.reason = reason

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Close) and (self.code, self.reason) == (
            other.code,
            other.reason,
        )

    def __hash__(self) -> int:
        return hash((self.code, self.reason))

    def __repr__(self) -> str:
        return f"Close({self.code}, {self.reason!r})"


Event = Message | Ping | Pong | Close


class ProtocolError(Exception):
    """The peer broke RFC 6455 (or this end's size limit): fail the connection with
    ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# --- parsing --------------------------------------------------------------------------


def _is_utf8(data: bytes | bytearray) -> bool:
    if data.isascii():  # JSON with base64 nearly always is: no decoding needed
        return True
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


_Utf8Decoder = codecs.getincrementaldecoder("utf-8")
_new_message = tuple.__new__
"""``_new_message(Message, (opcode, payload))`` is ``Message(opcode, payload)`` without the
Python-level ``__new__`` of a NamedTuple: the parser's one allocation per message."""


class FrameParser:
    """The receiving half of one end: bytes in, events out (see the module docstring).

    ``client`` is True on the client end, which receives unmasked frames; the server
    end receives masked ones. Either fails the connection (1002) on a frame masked the
    wrong way (RFC 6455 §5.1). A message bigger than ``max_message_size`` fails it
    with 1009 as soon as a frame header says so.
    """

    __slots__ = (
        "_buffer",
        "_client",
        "_direct",
        "_direct_frame",
        "_filled",
        "_final",
        "_max_message_size",
        "_offset",
        "_owned",
        "_parts",
        "_parts_opcode",
        "_parts_size",
        "_text",
    )

    def __init__(self, *, client: bool, max_message_size: int) -> None:
        self._client = client
        self._max_message_size = max_message_size
        self._buffer: bytes | bytearray = b""
        self._offset = 0
        """``_buffer[_offset:]`` is what was fed and not yet parsed."""
        self._owned = False
        """Whether ``_buffer`` is a bytearray of ours (else it is the caller's object)."""
        self._direct: bytearray | None = None
        """The payload buffer of a frame being read straight into it (see get_buffer)."""
        self._filled = 0
        self._direct_frame: tuple[bool, int, bytes | None] = (True, 0, None)
        self._parts: list[bytes | bytearray] = []
        self._parts_size = 0
        self._parts_opcode = 0
        self._text: codecs.IncrementalDecoder | None = None
        self._final: Close | ProtocolError | None = None
        """The peer's close frame or the error: what every later next_event gives."""

    # --- feeding ----------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray) -> None:
        """Feed bytes read from the peer (not to be modified afterwards)."""
        if self._final is not None:
            return  # nothing after a close frame counts; nothing after an error parses
        direct = self._direct
        if direct is not None:
            room = len(direct) - self._filled
            if room:
                taken = min(room, len(data))
                with memoryview(data) as view:
                    direct[self._filled : self._filled + taken] = view[:taken]
                self._filled += taken
                if taken == len(data):
                    return
                data = data[taken:]
        if self._offset >= len(self._buffer):
            self._buffer, self._offset, self._owned = data, 0, False
        elif self._owned:
            buffer = self._buffer
            assert isinstance(buffer, bytearray)
            del buffer[: self._offset]
            buffer += data
            self._offset = 0
        else:  # the rest of a frame that spans reads: joined in a bytearray of ours
            with memoryview(self._buffer) as view:
                joined = bytearray(view[self._offset :])
            joined += data
            self._buffer, self._offset, self._owned = joined, 0, True

    def get_buffer(self) -> memoryview | None:
        """A writable view of the rest of a big frame's payload, to read into directly
        (then call ``buffer_updated``); None when bytes should come by ``receive_data``.
        Release the view before ``next_event`` returns the message."""
        direct = self._direct
        if direct is None or self._filled >= len(direct):
            return None
        return memoryview(direct)[self._filled :]

    def buffer_updated(self, count: int) -> None:
        """``count`` bytes were written at the start of the last ``get_buffer`` view."""
        direct = self._direct
        if direct is None or not 0 <= count <= len(direct) - self._filled:
            raise ValueError("buffer_updated without a matching get_buffer")
        self._filled += count

    # --- events -----------------------------------------------------------------------

    @property
    def in_message(self) -> bool:
        """Whether the parser holds part of a frame or of a fragmented message."""
        return bool(
            self._direct is not None or self._parts_opcode or self._offset < len(self._buffer)
        )

    def next_event(self) -> Event | NeedData:
        """The next event, or NEED_DATA. Raises ProtocolError (the same one on every
        later call) if the peer broke the protocol."""
        final = self._final
        if final is not None:
            if type(final) is Close:
                return final
            assert isinstance(final, ProtocolError)
            raise final
        while True:
            payload: bytes | bytearray
            key: bytes | None
            direct = self._direct
            if direct is not None:
                if self._filled < len(direct):
                    return NEED_DATA
                fin, opcode, key = self._direct_frame
                self._direct = None
                payload = mask(direct, key) if key is not None else direct
            else:
                buffer, pos = self._buffer, self._offset
                if len(buffer) - pos < 2:
                    return NEED_DATA
                first, second = buffer[pos], buffer[pos + 1]
                opcode = first & 0x0F
                fin = first >= 0x80
                if first & 0x70:
                    raise self._fail(PROTOCOL_ERROR, "reserved bits set: no extension was agreed")
                length = second & 0x7F
                if opcode < CLOSE:
                    if opcode > BINARY:
                        raise self._fail(PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
                else:
                    if opcode > PONG:
                        raise self._fail(PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
                    if not fin:
                        raise self._fail(PROTOCOL_ERROR, "a control frame is fragmented")
                    if length > MAX_CONTROL_PAYLOAD:
                        raise self._fail(PROTOCOL_ERROR, "a control frame is longer than 125")
                masked = second >= 0x80
                if masked == self._client:
                    raise self._fail(
                        PROTOCOL_ERROR,
                        "the server sent a masked frame"
                        if masked
                        else "a client frame is not masked",
                    )
                start = pos + 2
                if length == 126:
                    if len(buffer) - pos < 4:
                        return NEED_DATA
                    (length,) = struct.unpack_from("!H", buffer, start)
                    start += 2
                    if length < 126:
                        raise self._fail(PROTOCOL_ERROR, "a length not in its shortest form")
                elif length == 127:
                    if len(buffer) - pos < 10:
                        return NEED_DATA
                    (length,) = struct.unpack_from("!Q", buffer, start)
                    start += 8
                    if length < 1 << 16 or length >> 63:
                        raise self._fail(PROTOCOL_ERROR, "a length not in its shortest form")
                key = None
                if masked:
                    if len(buffer) < start + 4:
                        return NEED_DATA
                    key = bytes(buffer[start : start + 4])
                    start += 4
                if opcode < CLOSE:
                    if opcode == CONTINUATION:
                        if not self._parts_opcode:
                            raise self._fail(PROTOCOL_ERROR, "a continuation frame starts nothing")
                    elif self._parts_opcode:
                        raise self._fail(PROTOCOL_ERROR, "a new message inside a fragmented one")
                    if length > self._max_message_size - self._parts_size:
                        raise self._fail(
                            MESSAGE_TOO_BIG, f"message larger than {self._max_message_size}"
                        )
                end = start + length
                if len(buffer) < end:
                    if opcode < CLOSE and DIRECT_RECEIVE_BYTES <= length <= DIRECT_RECEIVE_MAX:
                        self._start_direct(fin, opcode, key, start, length)
                    return NEED_DATA
                if key is not None:
                    with memoryview(buffer) as view:
                        payload = mask(view[start:end], key)
                elif type(buffer) is bytes:
                    payload = buffer[start:end]  # one copy, as below, without a memoryview
                else:
                    with memoryview(buffer) as view:
                        payload = bytes(view[start:end])
                self._offset = end
            if opcode >= CLOSE:
                return self._control(opcode, bytes(payload))
            if fin and opcode:  # the usual case: one frame, one message
                if opcode == TEXT and not _is_utf8(payload):
                    raise self._fail(INVALID_PAYLOAD, "a text message is not valid UTF-8")
                return _new_message(Message, (opcode, payload))
            message = self._fragment(fin, opcode, payload)
            if message is not None:
                return message

    def _start_direct(
        self, fin: bool, opcode: int, key: bytes | None, start: int, length: int
    ) -> None:
        buffer = self._buffer
        payload = bytearray(length)
        filled = len(buffer) - start
        with memoryview(buffer) as view:
            payload[:filled] = view[start:]
        self._direct, self._filled, self._direct_frame = payload, filled, (fin, opcode, key)
        self._buffer, self._offset, self._owned = b"", 0, False

    def _fragment(self, fin: bool, opcode: int, payload: bytes | bytearray) -> Message | None:
        if opcode:  # the first fragment (the header checks ruled out the rest)
            self._parts_opcode = opcode
            self._text = _Utf8Decoder() if opcode == TEXT else None
        self._parts.append(payload)
        self._parts_size += len(payload)
        if self._text is not None:
            try:
                self._text.decode(payload, fin)
            except UnicodeDecodeError:
                raise self._fail(INVALID_PAYLOAD, "a text message is not valid UTF-8") from None
        if not fin:
            return None
        message = Message(self._parts_opcode, b"".join(self._parts))
        self._parts, self._parts_size, self._parts_opcode, self._text = [], 0, 0, None
        return message

    def _control(self, opcode: int, payload: bytes) -> Event:
        if opcode == PING:
            return Ping(payload)
        if opcode == PONG:
            return Pong(payload)
        if not payload:
            close = Close(NO_STATUS_RECEIVED)
        elif len(payload) == 1:
            raise self._fail(PROTOCOL_ERROR, "a close frame with a 1-byte payload")
        else:
            (code,) = struct.unpack_from("!H", payload)
            if not close_code_is_valid(code):
                raise self._fail(PROTOCOL_ERROR, f"a close frame with code {code}")
            try:
                reason = payload[2:].decode()
            except UnicodeDecodeError:
                raise self._fail(
                    INVALID_PAYLOAD, "a close frame's reason is not valid UTF-8"
                ) from None
            close = Close(code, reason)
        self._final = close
        self._buffer, self._offset, self._owned, self._direct = b"", 0, False, None
        return close

    def _fail(self, code: int, message: str) -> ProtocolError:
        error = self._final = ProtocolError(code, message)
        return error
