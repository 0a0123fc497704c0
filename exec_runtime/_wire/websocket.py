"""WebSocket connections (RFC 6455) for both ends, once open (the handshakes are in
``_websocket_handshake.py``): frames read in the task that asks for a message.

Why not trio-websocket: measured on the benchmark machine, wsproto's frame parser
costs about 2 ms per MB (each payload is copied through its buffer several times),
and trio-websocket adds a reader task with a channel hand-off per message, a
scheduler round each, which was a large share of a one-shot command's latency. Here
``receive_message`` parses frames straight out of what ``receive_some`` returned, in
the caller's task, and reads a big frame straight into a buffer of its size; a payload
is copied once. The test suite keeps trio-websocket as
an independent peer on the other end of both sides.

What this protocol needs and nothing more: no extensions, no outgoing fragmentation;
incoming fragmented messages, pings (answered), pongs and the close handshake are
handled. Client frames are masked and server frames are not (RFC 6455 §5.3); each
side fails the connection (1002) on a frame masked the wrong way.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from typing import Final

import trio

import protocol_schema as wire

from .streams import send_all_pieces
from .transport import Frame, MessageTooBig, TransportClosed, joined

RECEIVE_SIZE: Final = 256 * 1024
DIRECT_RECEIVE_BYTES: Final = 64 * 1024
DIRECT_RECEIVE_MAX: Final = 1 << 20
"""A frame of DIRECT_RECEIVE_BYTES to DIRECT_RECEIVE_MAX that is not all read yet is
read into its own buffer, sized from its header: no joining of reads, and no copy out
of a shared buffer (an output chunk's frame is at most ~350 KB). Bigger frames grow as
their bytes arrive, so a header alone never makes this end reserve a whole
``max_message_size``."""

CONTINUATION: Final = 0x0
TEXT: Final = 0x1
BINARY: Final = 0x2
CLOSE: Final = 0x8
PING: Final = 0x9
PONG: Final = 0xA

NORMAL_CLOSURE: Final = 1000
PROTOCOL_ERROR: Final = 1002
INVALID_PAYLOAD: Final = 1007
MESSAGE_TOO_BIG: Final = 1009


def mask(payload: bytes | bytearray | memoryview, key: bytes) -> bytes:
    """``payload`` XOR the repeating 4-byte ``key`` (one big-integer XOR: C speed)."""
    length = len(payload)
    if not length:
        return b""
    keystream = (key * (length // 4 + 1))[:length]
    masked = int.from_bytes(payload, "little") ^ int.from_bytes(keystream, "little")
    return masked.to_bytes(length, "little")


def _is_utf8(data: bytes | bytearray) -> bool:
    if data.isascii():  # JSON with base64 nearly always is: no decoding needed
        return True
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked frame."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    key = os.urandom(4)
    return header + key + mask(payload, key)


def server_frame_header(opcode: int, length: int) -> bytes:
    """The header of one unmasked, final frame; the payload follows as it is."""
    if length < 126:
        return struct.pack("!BB", 0x80 | opcode, length)
    if length < 1 << 16:
        return struct.pack("!BBH", 0x80 | opcode, 126, length)
    return struct.pack("!BBQ", 0x80 | opcode, 127, length)


class WebSocket:
    """An open connection, either end. ``receive_message`` may run in one task at a
    time; sending is safe from several (whole writes go out under a lock)."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        subprotocol: str | None,
        buffered: bytes,
        max_message_size: int,
        *,
        client: bool = True,
    ) -> None:
        self.is_client = client
        self.subprotocol = subprotocol
        self._stream = stream
        self._pending: bytes | bytearray = buffered
        self._offset = 0
        """``_pending[_offset:]`` is what was read and not yet parsed."""
        self._max_message_size = max_message_size
        self._send_lock = trio.StrictFIFOLock()
        self._parts: list[bytes | bytearray] = []
        self._parts_size = 0
        self._parts_opcode = 0
        self.close_reason: str | None = None
        self._close_sent = False
        self._stream_closed = False
        self._fail_code = NORMAL_CLOSURE
        self._receiving = False
        self._peer_closed = trio.Event()
        self._pongs: dict[bytes, trio.Event] = {}

    # --- sending ----------------------------------------------------------------------

    async def send_messages(self, messages: Sequence[Frame], opcode: int) -> None:
        if self.is_client:
            await self._send(
                b"".join([client_frame(opcode, joined(message)) for message in messages])
            )
            return
        # Headers and payloads (or their pieces) go out as pieces of one write: on TCP
        # the kernel gathers them, so a big chunk is never copied in user space.
        parts: list[bytes] = []
        for message in messages:
            if isinstance(message, bytes):
                parts += (server_frame_header(opcode, len(message)), message)
            else:
                length = sum(len(piece) for piece in message)
                parts += (server_frame_header(opcode, length), *message)
        await self._send(parts)

    def _control_frame(self, opcode: int, payload: bytes) -> bytes:
        if self.is_client:
            return client_frame(opcode, payload)
        return server_frame_header(opcode, len(payload)) + payload

    async def ping(self, payload: bytes) -> None:
        """Send a ping and wait for the pong that echoes ``payload``. Only a task that is
        receiving sees the pong, so this waits as long as nobody reads."""
        arrived = self._pongs[payload] = trio.Event()
        try:
            await self._send(self._control_frame(PING, payload))
            await arrived.wait()
        finally:
            self._pongs.pop(payload, None)

    async def _send(self, data: bytes | list[bytes], *, closing: bool = False) -> None:
        """Write ``data`` (or its pieces, in order) whole, one write at a time."""
        if self._close_sent or (self.close_reason is not None and not closing):
            raise TransportClosed(self.close_reason or "the connection is closing")
        try:
            self._send_lock.acquire_nowait()  # uncontended: no scheduler round
        except trio.WouldBlock:
            await self._send_lock.acquire()
        try:
            # A cancel that is already due lands here, before a byte is written.
            await trio.lowlevel.checkpoint_if_cancelled()
        except BaseException:
            self._send_lock.release()
            raise
        try:
            if isinstance(data, bytes):
                await self._stream.send_all(data)
            else:
                await send_all_pieces(self._stream, data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.close_reason = self.close_reason or f"connection lost: {exc}"
            raise TransportClosed(self.close_reason) from None
        except BaseException:
            # Cancelled while the peer was not reading: part of a frame may be on the
            # wire, and whatever followed it would be read as its payload. The
            # connection is over; the task reading it finds it closed.
            self.close_reason = self.close_reason or "a write was interrupted mid-frame"
            await self._close_stream()
            raise
        finally:
            self._send_lock.release()

    async def _send_close(self, code: int, reason: str = "") -> None:
        if self._close_sent or self._stream_closed:
            return
        payload = struct.pack("!H", code) + reason.encode()[:120]
        try:
            await self._send(self._control_frame(CLOSE, payload), closing=True)
        except TransportClosed:
            pass
        self._close_sent = True

    # --- receiving --------------------------------------------------------------------

    async def receive_message(self) -> tuple[int, bytes | bytearray]:
        """The next whole message as ``(TEXT or BINARY, payload)``.

        Raises TransportClosed once the connection is closed (by either side).
        """
        self._receiving = True
        try:
            return await self._receive_message()
        except TransportClosed:
            self._peer_closed.set()
            raise
        finally:
            self._receiving = False

    async def _receive_message(self) -> tuple[int, bytes | bytearray]:
        while True:
            header = self._next_header()
            if header is None:
                await self._receive_more()
                continue
            fin, opcode, start, end, key = header
            payload: bytes | bytearray
            if len(self._pending) >= end:
                payload = self._take_payload(start, end, key)
            elif DIRECT_RECEIVE_BYTES <= end - start <= DIRECT_RECEIVE_MAX:
                payload = await self._receive_payload(start, end, key)
            else:
                await self._receive_more()
                continue
            if opcode >= CLOSE:
                await self._control(opcode, bytes(payload))  # at most 125 bytes
                continue
            message = self._assemble(fin, opcode, payload)
            if message is not None:
                if message[0] == TEXT and not _is_utf8(message[1]):
                    # RFC 6455 §8.1: a text message that is not UTF-8 fails the connection.
                    raise self._fail(INVALID_PAYLOAD, "a text message is not valid UTF-8")
                return message

    def _next_frame(self) -> tuple[bool, int, bytes] | None:
        """The next whole frame already read, as ``(fin, opcode, payload)``, or None."""
        header = self._next_header()
        if header is None or len(self._pending) < header[3]:
            return None
        fin, opcode, start, end, key = header
        return fin, opcode, self._take_payload(start, end, key)

    def _next_header(self) -> tuple[bool, int, int, int, bytes] | None:
        """The next frame's ``(fin, opcode, payload start, payload end, mask key)`` in
        ``_pending`` once its header is read (the payload may not be), else None.
        Raises (failing the connection) on a frame this end must refuse."""
        buffer, pos = self._pending, self._offset
        if len(buffer) - pos < 2:
            return None
        first, second = buffer[pos], buffer[pos + 1]
        masked = bool(second & 0x80)
        if masked == self.is_client:
            raise self._fail(
                PROTOCOL_ERROR,
                "the server sent a masked frame" if masked else "a client frame is not masked",
            )
        if first & 0x70:
            raise self._fail(PROTOCOL_ERROR, "reserved bits set: no extension was agreed")
        length, start = second & 0x7F, pos + 2
        if length == 126:
            if len(buffer) - pos < 4:
                return None
            (length,) = struct.unpack_from("!H", buffer, pos + 2)
            start += 2
        elif length == 127:
            if len(buffer) - pos < 10:
                return None
            (length,) = struct.unpack_from("!Q", buffer, pos + 2)
            start += 8
        key = b""
        if masked:
            if len(buffer) < start + 4:
                return None
            key = bytes(buffer[start : start + 4])
            start += 4
        opcode = first & 0x0F
        if length > self._max_message_size - self._parts_size:
            raise self._fail(MESSAGE_TOO_BIG, f"message larger than {self._max_message_size}")
        if opcode >= CLOSE and (length > 125 or not first & 0x80):
            raise self._fail(PROTOCOL_ERROR, "a control frame is fragmented or too long")
        return bool(first & 0x80), opcode, start, start + length, key

    def _take_payload(self, start: int, end: int, key: bytes) -> bytes:
        buffer = self._pending
        if key:
            with memoryview(buffer) as view:
                payload = mask(view[start:end], key)
        elif isinstance(buffer, bytes):
            payload = buffer[start:end]  # the whole buffer when one read held one frame
        else:
            with memoryview(buffer) as view:
                payload = bytes(view[start:end])
        self._offset = end
        return payload

    async def _receive_payload(self, start: int, end: int, key: bytes) -> bytes | bytearray:
        """Read the rest of a big frame straight into a buffer of its size."""
        buffer = self._pending
        payload = bytearray(end - start)
        filled = len(buffer) - start
        with memoryview(buffer) as read:
            payload[:filled] = read[start:]
        header = bytes(buffer[self._offset : start])
        self._pending, self._offset = b"", 0
        try:
            with memoryview(payload) as view:
                while filled < len(payload):
                    filled += await self._receive_into(view[filled:])
        except BaseException:
            # Cancelled (or the connection broke) mid-frame: what was read goes back,
            # so the next receive starts this frame again from its header.
            self._pending = header + payload[:filled]
            raise
        return mask(payload, key) if key else payload

    async def _receive_into(self, view: memoryview) -> int:
        stream = self._stream
        try:
            if isinstance(stream, trio.SocketStream):
                count = await stream.socket.recv_into(view)
            else:
                data = await stream.receive_some(len(view))
                count = len(data)
                view[:count] = data
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise self._lost(f"connection lost: {exc}") from None
        if not count:
            raise self._lost(f"the {self._peer} closed the connection in the middle of a frame")
        return count

    async def _receive_more(self) -> None:
        if self.close_reason is not None and not self._close_sent:
            raise TransportClosed(self.close_reason)
        try:
            data = await self._stream.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise self._lost(f"connection lost: {exc}") from None
        if not data:
            raise self._lost(f"the {self._peer} closed the connection without a close frame")
        self._append(data)

    @property
    def _peer(self) -> str:
        return "server" if self.is_client else "client"

    def _lost(self, reason: str) -> TransportClosed:
        """The stream ended or broke under a read: note why, for every later call."""
        self.close_reason = reason
        return TransportClosed(reason)

    def _append(self, data: bytes | bytearray) -> None:
        # Parse straight from the read when nothing is left over (no copy); join the
        # rest of a frame that spans reads in a bytearray.
        if self._offset >= len(self._pending):
            self._pending = data
        elif isinstance(self._pending, bytearray):
            del self._pending[: self._offset]
            self._pending += data
        else:
            self._pending = bytearray(self._pending[self._offset :]) + data
        self._offset = 0

    def _assemble(
        self, fin: bool, opcode: int, payload: bytes | bytearray
    ) -> tuple[int, bytes | bytearray] | None:
        if opcode == CONTINUATION:
            if not self._parts_opcode:
                raise self._fail(PROTOCOL_ERROR, "a continuation frame starts nothing")
        elif opcode in (TEXT, BINARY):
            if self._parts_opcode:
                raise self._fail(PROTOCOL_ERROR, "a new message inside a fragmented one")
            if fin:
                return opcode, payload  # the usual case: one frame, one message
            self._parts_opcode = opcode
        else:
            raise self._fail(PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
        self._parts.append(payload)
        self._parts_size += len(payload)
        if not fin:
            return None
        message = (self._parts_opcode, b"".join(self._parts))
        self._parts, self._parts_size, self._parts_opcode = [], 0, 0
        return message

    async def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == PING:
            try:
                await self._send(self._control_frame(PONG, payload))
            except TransportClosed:
                pass
        elif opcode == PONG:
            waiting = self._pongs.get(payload)
            if waiting is not None:
                waiting.set()
        elif opcode == CLOSE:
            code = struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else 1005
            reason = payload[2:].decode(errors="replace")
            self.close_reason = f"the {self._peer} closed the connection: {code} {reason}".rstrip()
            await self._send_close(code if code != 1005 else NORMAL_CLOSURE)
            await self._close_stream()
            raise TransportClosed(self.close_reason)
        else:
            raise self._fail(PROTOCOL_ERROR, f"unknown control opcode {opcode:#x}")

    def _fail(self, code: int, message: str) -> TransportClosed:
        """A protocol violation by the server: note it; the close frame goes out in aclose."""
        self.close_reason = f"{message} (closing with {code})"
        self._fail_code = code
        if code == MESSAGE_TOO_BIG:
            return MessageTooBig(self.close_reason)
        return TransportClosed(self.close_reason)

    # --- closing ----------------------------------------------------------------------

    async def aclose(self, code: int = NORMAL_CLOSURE, reason: str = "") -> None:
        """Close handshake (bounded by the caller's deadline), then close the stream.

        The peer answers our close frame with its own (and a server then closes TCP).
        If a task is in ``receive_message``, it reads that answer (and raises
        TransportClosed); only one task may read the stream, so then we just wait.
        """
        try:
            if self.close_reason is None:
                self.close_reason = "closed by the " + ("client" if self.is_client else "server")
                await self._send_close(code, reason)
                with trio.move_on_after(1):
                    if self._receiving:
                        await self._peer_closed.wait()
                    else:
                        await self._await_close_answer()
            elif not self._close_sent:
                await self._send_close(self._fail_code)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await self._close_stream()

    async def _await_close_answer(self) -> None:
        """Read (discarding data) until the peer's close frame or the end of the stream."""
        while True:
            try:
                frame = self._next_frame()
            except TransportClosed:
                return
            if frame is not None:
                if frame[1] == CLOSE:
                    return
                continue
            data = await self._stream.receive_some(RECEIVE_SIZE)
            if not data:
                return
            self._append(data)

    async def _close_stream(self) -> None:
        if not self._stream_closed:
            self._stream_closed = True
            await trio.aclose_forcefully(self._stream)


class WebSocketMessageTransport:
    """A :class:`MessageTransport` on either end: one message per frame (PROTOCOL §1)."""

    def __init__(self, ws: WebSocket, codec: wire.Codec) -> None:
        self.ws = ws
        self.codec = codec
        self._opcode = BINARY if codec.binary else TEXT

    async def send_message(self, data: bytes) -> None:
        await self.ws.send_messages((data,), self._opcode)

    async def send_messages(self, messages: Sequence[Frame]) -> None:
        await self.ws.send_messages(messages, self._opcode)

    async def receive_message(self) -> bytes | bytearray | str:
        opcode, payload = await self.ws.receive_message()
        if opcode == TEXT and self.codec.binary:
            # Not msgpack: as text, the codec rejects it as a malformed message.
            return payload.decode(errors="replace")
        return payload  # JSON is decoded from UTF-8 bytes directly

    async def aclose(self) -> None:
        await self.ws.aclose()
