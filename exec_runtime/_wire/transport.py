"""Message transports: one JSON-RPC message per frame (WebSocket), per line (stdio), or
per in-memory item. The connection logic only sees :class:`MessageTransport`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import trio

import protocol_schema as wire

CLIENT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""The biggest message our client takes (the daemon's default ``max_message_bytes``)."""


class TransportClosed(Exception):
    """The peer went away or the transport was closed."""


class MessageTooBig(TransportClosed):
    """We closed the connection on a message over our size limit (WebSocket 1009)."""


class InputEnded(TransportClosed):
    """The peer ended its input cleanly but may still read ours (stdio: EOF on stdin
    while stdout stays open), so replies to what it sent are still owed."""


Frame = bytes | tuple[bytes, ...]
"""One encoded message, whole or in pieces that are joined on the wire (so a big
output chunk is copied once, into the write, not first into its message)."""


class MessageTransport(Protocol):
    codec: wire.Codec

    async def send_message(self, data: bytes) -> None: ...

    async def send_messages(self, messages: Sequence[Frame]) -> None:
        """Send several messages, in order, in as few writes as the transport allows."""
        ...

    async def receive_message(self) -> bytes | bytearray | str: ...

    async def aclose(self) -> None: ...


def joined(message: Frame) -> bytes:
    return message if isinstance(message, bytes) else b"".join(message)


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

    async def send_messages(self, messages: Sequence[Frame]) -> None:
        lines = b"".join([joined(message) + b"\n" for message in messages])
        async with self._send_lock:
            try:
                await self._send.send_all(lines)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise TransportClosed(str(exc)) from None

    async def receive_message(self) -> bytes:
        while True:
            newline = self._buffer.find(b"\n", self._scanned)
            if newline > self._max_line or (newline < 0 and len(self._buffer) > self._max_line):
                raise TransportClosed("line exceeds the message size limit")
            if newline >= 0:
                line = bytes(self._buffer[:newline]).rstrip(b"\r")
                del self._buffer[: newline + 1]
                self._scanned = 0
                if line.strip():
                    return line
                continue
            self._scanned = len(self._buffer)
            try:
                data = await self._receive.receive_some(256 * 1024)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise TransportClosed(str(exc)) from None
            if not data:
                if self._buffer.strip():
                    line = bytes(self._buffer)
                    self._buffer.clear()
                    return line
                raise InputEnded("end of stream")
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

    async def send_messages(self, messages: Sequence[Frame]) -> None:
        for message in messages:
            await self.send_message(joined(message))

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
