"""WebSocket connections (RFC 6455) for both ends, once open (the handshakes are in
``websocket_handshake.py``): the I/O shell around the sans-IO frame parser and
serializers of ``_core/websocket_frames.py``, which hold every rule about bytes on
the wire. This module owns the stream, the send lock, pings and the close handshake.

Why not trio-websocket: measured on the benchmark machine, wsproto's frame parser
costs about 2 ms per MB (each payload is copied through its buffer several times),
and trio-websocket adds a reader task with a channel hand-off per message, a
scheduler round each, which was a large share of a one-shot command's latency. Here
``receive_message`` feeds what ``receive_some`` returned to the parser and pulls
events, in the caller's task; a big frame is read straight into the buffer of its
size the parser offers (``get_buffer``); a payload is copied once. The test suite
keeps trio-websocket as an independent peer on the other end of both sides, and
tests/core checks the parser against wsproto.

What this protocol needs and nothing more: no extensions, no outgoing fragmentation;
incoming fragmented messages, pings (answered), pongs and the close handshake are
handled. Client frames are masked and server frames are not (RFC 6455 §5.3); each
side fails the connection (1002) on a frame masked the wrong way, and on a close
frame RFC 6455 §7.4 does not allow (1002, or 1007 for a reason that is not UTF-8).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import trio

import protocol_schema as wire

from .._core.websocket_frames import (
    BINARY,
    CLOSE,
    CONTINUATION,
    MESSAGE_TOO_BIG,
    NEED_DATA,
    NO_STATUS_RECEIVED,
    NORMAL_CLOSURE,
    PING,
    PONG,
    TEXT,
    Close,
    FrameParser,
    Message,
    Ping,
    Pong,
    ProtocolError,
    client_frame,
    close_code_is_valid,
    close_payload,
    control_frame,
    mask,
    server_frame_header,
)
from .streams import send_all_pieces
from .transport import Frame, MessageTooBig, TransportClosed, joined

__all__ = [
    "BINARY",
    "CLOSE",
    "CONTINUATION",
    "PING",
    "PONG",
    "TEXT",
    "WebSocket",
    "WebSocketMessageTransport",
    "mask",
]

RECEIVE_SIZE: Final = 256 * 1024


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
        self._parser = FrameParser(client=client, max_message_size=max_message_size)
        if buffered:
            self._parser.receive_data(buffered)
        self._send_lock = trio.StrictFIFOLock()
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
        return control_frame(opcode, payload, client=self.is_client)

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
        payload = close_payload(code, reason)  # the reason cut to fit, between characters
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
        parser = self._parser
        while True:
            try:
                event = parser.next_event()
            except ProtocolError as exc:
                raise self._fail(exc.code, str(exc)) from None
            if type(event) is Message:
                return event  # an (opcode, payload) tuple
            if event is NEED_DATA:
                view = parser.get_buffer()
                if view is None:
                    await self._receive_more()
                else:
                    # The rest of a big frame, straight into its buffer. Each read is
                    # recorded as it lands, so a cancel between reads loses nothing.
                    with view:
                        filled, size = 0, len(view)
                        while filled < size:
                            count = await self._receive_into(view[filled:])
                            parser.buffer_updated(count)
                            filled += count
            elif type(event) is Ping:
                try:
                    await self._send(self._control_frame(PONG, event.payload))
                except TransportClosed:
                    pass
            elif type(event) is Pong:
                waiting = self._pongs.get(event.payload)
                if waiting is not None:
                    waiting.set()
            elif type(event) is Close:
                await self._peer_close(event)

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
        self._parser.receive_data(data)

    @property
    def _peer(self) -> str:
        return "server" if self.is_client else "client"

    def _lost(self, reason: str) -> TransportClosed:
        """The stream ended or broke under a read: note why, for every later call."""
        self.close_reason = reason
        return TransportClosed(reason)

    async def _peer_close(self, close: Close) -> None:
        """The peer's close frame (valid: the parser checked it): answer, then end."""
        self.close_reason = (
            f"the {self._peer} closed the connection: {close.code} {close.reason}".rstrip()
        )
        # Echo the peer's code (RFC 6455 §5.5.1); 1005 means it gave none, and is never sent.
        await self._send_close(close.code if close.code != NO_STATUS_RECEIVED else NORMAL_CLOSURE)
        await self._close_stream()
        raise TransportClosed(self.close_reason)

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
        if not close_code_is_valid(code):
            raise ValueError(f"close code {code} may not be sent (RFC 6455 §7.4)")
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
        parser = self._parser
        while True:
            try:
                event = parser.next_event()
            except ProtocolError:
                return
            if type(event) is Close:
                return
            if event is NEED_DATA:
                data = await self._stream.receive_some(RECEIVE_SIZE)
                if not data:
                    return
                parser.receive_data(data)

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
