"""Message transports: one JSON-RPC message per frame (WebSocket), per line (stdio), or
per in-memory item. The connection logic only sees :class:`MessageTransport`."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any, Final, Protocol

import trio
import trio_websocket
import wsproto.events

import protocol_schema as wire


class TransportClosed(Exception):
    """The peer went away or the transport was closed."""


class MessageTransport(Protocol):
    codec: wire.Codec

    async def send_message(self, data: bytes) -> None: ...

    async def send_messages(self, messages: Sequence[bytes]) -> None:
        """Send several messages, in order, in as few writes as the transport allows."""
        ...

    async def receive_message(self) -> bytes | str: ...

    async def aclose(self) -> None: ...


_TEXT: Final = 0x1
_BINARY: Final = 0x2
_FIN: Final = 0x80


def server_frame_header(opcode: int, length: int) -> bytes:
    """The header of one unmasked, final WebSocket frame (RFC 6455 §5.2), as a server
    sends it; the payload follows as it is."""
    if length < 126:
        return struct.pack("!BB", _FIN | opcode, length)
    if length < 1 << 16:
        return struct.pack("!BBH", _FIN | opcode, 126, length)
    return struct.pack("!BBQ", _FIN | opcode, 127, length)


class WebSocketTransport:
    """A trio-websocket connection carrying one message per frame.

    Sending bypasses ``WebSocketConnection.send_message`` for two reasons measured in
    the one-shot benchmark: its send lock costs a scheduler round even when nobody
    else holds it, and it writes each message on its own (one syscall, and one wake-up
    of the peer, per message). Here several messages are framed and written with one
    ``send_all``, through trio-websocket's stream and under its send lock (taken without
    a yield when free), so pings and the close handshake still interleave only between
    whole writes. This is what lets ``exited`` and ``closed`` reach the client in one
    segment and bulk output cost fewer syscalls.

    Server frames are unmasked and trio-websocket negotiates no extensions, so a
    :func:`server_frame_header` and the payload are exactly what wsproto would send,
    without its copies; JSON from msgspec is valid UTF-8 and goes out as a text frame
    as it is. Client frames must be masked: there wsproto frames them (our own client
    has its own connection, in ``_ws_client.py``; this path serves the test proxy).
    """

    def __init__(self, ws: trio_websocket.WebSocketConnection, codec: wire.Codec) -> None:
        self.ws = ws
        self.codec = codec
        self._opcode = _BINARY if codec.binary else _TEXT
        # The private members the fast path needs; without them (another trio-websocket
        # release), fall back to one send_message per message.
        needed = ("_wsproto", "_stream", "_stream_lock", "_close_reason", "_abort_web_socket")
        self.batched = all(hasattr(ws, name) for name in needed)

    def _frames(self, messages: Sequence[bytes]) -> bytes:
        if not self.ws.is_client:
            # Headers and payloads joined once: a 256 KiB payload is copied one time.
            opcode = self._opcode
            parts: list[bytes] = []
            for message in messages:
                parts += (server_frame_header(opcode, len(message)), message)
            return b"".join(parts)
        events: list[wsproto.events.Event]
        if self.codec.binary:
            events = [wsproto.events.BytesMessage(data=message) for message in messages]
        else:
            events = [wsproto.events.TextMessage(data=message.decode()) for message in messages]
        return b"".join([self.ws._wsproto.send(event) for event in events])

    async def send_message(self, data: bytes) -> None:
        await self.send_messages((data,))

    async def send_messages(self, messages: Sequence[bytes]) -> None:
        if not self.batched:
            for data in messages:
                try:
                    # Text frames for JSON, binary frames for msgpack (PROTOCOL §1).
                    await self.ws.send_message(data if self.codec.binary else data.decode())
                except trio_websocket.ConnectionClosed as exc:
                    raise TransportClosed(str(exc)) from None
            return
        ws: Any = self.ws
        if ws._close_reason is not None:
            raise TransportClosed(str(ws._close_reason))
        data = self._frames(messages)
        lock: trio.StrictFIFOLock = ws._stream_lock
        try:
            lock.acquire_nowait()  # uncontended (the usual case): no scheduler round
        except trio.WouldBlock:
            await lock.acquire()
        try:
            await ws._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await ws._abort_web_socket()
            raise TransportClosed(str(ws._close_reason)) from None
        finally:
            lock.release()

    async def receive_message(self) -> bytes | str:
        try:
            return await self.ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise TransportClosed(str(exc)) from None

    async def aclose(self) -> None:
        await self.ws.aclose()


class StreamLineTransport:
    """One JSON message per line on a byte stream (stdio); blank lines are skipped."""

    def __init__(
        self,
        receive: trio.abc.ReceiveStream,
        send: trio.abc.SendStream,
        max_line: int = 64 * 1024 * 1024,
    ) -> None:
        self.codec = wire.JSON
        self._receive = receive
        self._send = send
        self._max_line = max_line
        self._buffer = bytearray()
        self._scanned = 0
        self._send_lock = trio.Lock()

    async def send_message(self, data: bytes) -> None:
        await self.send_messages((data,))

    async def send_messages(self, messages: Sequence[bytes]) -> None:
        lines = b"".join([line for message in messages for line in (message, b"\n")])
        async with self._send_lock:
            try:
                await self._send.send_all(lines)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise TransportClosed(str(exc)) from None

    async def receive_message(self) -> bytes:
        while True:
            newline = self._buffer.find(b"\n", self._scanned)
            if newline >= 0:
                line = bytes(self._buffer[:newline]).rstrip(b"\r")
                del self._buffer[: newline + 1]
                self._scanned = 0
                if line.strip():
                    return line
                continue
            self._scanned = len(self._buffer)
            if len(self._buffer) > self._max_line:
                raise TransportClosed("line exceeds the message size limit")
            try:
                data = await self._receive.receive_some(256 * 1024)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise TransportClosed(str(exc)) from None
            if not data:
                if self._buffer.strip():
                    line = bytes(self._buffer)
                    self._buffer.clear()
                    return line
                raise TransportClosed("end of stream")
            self._buffer += data

    async def aclose(self) -> None:
        await self._send.aclose()
        await self._receive.aclose()


class MemoryTransport:
    """One end of an in-process pair: the whole stack without a socket."""

    def __init__(
        self,
        send: trio.MemorySendChannel[bytes],
        receive: trio.MemoryReceiveChannel[bytes],
        codec: wire.Codec,
    ) -> None:
        self.codec = codec
        self._send = send
        self._receive = receive

    async def send_message(self, data: bytes) -> None:
        try:
            await self._send.send(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise TransportClosed(str(exc) or "peer closed") from None

    async def send_messages(self, messages: Sequence[bytes]) -> None:
        for data in messages:
            await self.send_message(data)

    async def receive_message(self) -> bytes:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError) as exc:
            raise TransportClosed(str(exc) or "peer closed") from None

    async def aclose(self) -> None:
        await self._send.aclose()
        await self._receive.aclose()


def memory_transport_pair(
    codec: wire.Codec = wire.JSON, capacity: float = 64
) -> tuple[MemoryTransport, MemoryTransport]:
    """Two connected transports. Bounded ``capacity`` gives real backpressure."""
    a_send, b_receive = trio.open_memory_channel[bytes](capacity)
    b_send, a_receive = trio.open_memory_channel[bytes](capacity)
    return MemoryTransport(a_send, a_receive, codec), MemoryTransport(b_send, b_receive, codec)
