"""Byte streams: a delegating base for wrappers, and a gathering ``send_all``.

A WebSocket frame that carries output is a few small pieces (frame header, message
head) around one big chunk. ``send_all_pieces`` hands them to the kernel as they are
(``sendmsg`` with one iovec per piece) where the stream is a plain TCP socket, instead
of joining them into one buffer first: a copy of every output byte fewer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import trio

GATHER_MIN_BYTES: Final = 64 * 1024
"""Below this, joining the pieces costs less than a gathered write."""
IOV_MAX: Final = 1024
"""Linux's limit on iovecs per sendmsg."""


class WrappedStream(trio.abc.Stream):
    """Delegates every call to ``inner``: a base for a stream that watches its use."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def send_all_pieces(self, pieces: Sequence[bytes]) -> None:
        await send_all_pieces(self.inner, pieces)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        if isinstance(self.inner, trio.abc.HalfCloseableStream):
            await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def send_all_pieces(stream: trio.abc.SendStream, pieces: Sequence[bytes]) -> None:
    """``stream.send_all(b"".join(pieces))``, without the join on a TCP socket."""
    if isinstance(stream, WrappedStream):
        await stream.send_all_pieces(pieces)
    elif isinstance(stream, trio.SocketStream) and sum(map(len, pieces)) >= GATHER_MIN_BYTES:
        await _send_gathered(stream.socket, pieces)
    else:
        await stream.send_all(b"".join(pieces))


async def _send_gathered(sock: trio.socket.SocketType, pieces: Sequence[bytes]) -> None:
    # What SocketStream.send_all does (a checkpoint even when it could skip the wait,
    # OSError as BrokenResourceError), with sendmsg for send.
    views = [memoryview(piece) for piece in pieces if piece]
    first = 0
    try:
        while first < len(views):
            sent = await sock.sendmsg(views[first : first + IOV_MAX])
            while first < len(views) and sent >= len(views[first]):
                sent -= len(views[first])
                first += 1
            if sent:
                views[first] = views[first][sent:]
    except OSError as exc:
        raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
