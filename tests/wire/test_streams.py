"""``send_all_pieces``: the gathered write (sendmsg) sends exactly the joined bytes, in
order, through partial sends and past the iovec limit, on a real socket pair."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.lowlevel
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from exec_runtime._wire.streams import IOV_MAX, WrappedStream, send_all_pieces


async def _receive_all(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    received = bytearray()
    while len(received) < size:
        data = await stream.receive_some(65536)
        assert data, "the stream ended early"
        received += data
        await trio.lowlevel.checkpoint()  # let the sender meet a full buffer now and then
    return bytes(received)


async def _socket_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    left, right = trio.socket.socketpair()
    # A small send buffer: a big gathered write goes out in many partial sends.
    left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    return trio.SocketStream(left), trio.SocketStream(right)


piece_lists = st.lists(
    st.one_of(
        st.integers(0, 40).map(lambda n: bytes([n % 251]) * n),
        st.integers(60_000, 300_000).map(lambda n: bytes([n % 251]) * n),
    ),
    max_size=12,
) | st.integers(IOV_MAX, IOV_MAX + 300).map(
    lambda n: [bytes([i % 251]) * (i % 97 + 1) for i in range(n)] + [b"z" * 70_000]
)


@settings(max_examples=40)
@given(pieces=piece_lists, wrapped=st.booleans())
async def test_gathered_writes_send_the_joined_bytes(pieces: list[bytes], wrapped: bool) -> None:
    with trio.fail_after(20):
        sender, receiver = await _socket_pair()
        async with sender, receiver:
            expected = b"".join(pieces)
            target: trio.abc.SendStream = WrappedStream(sender) if wrapped else sender
            async with trio.open_nursery() as nursery:
                received: list[bytes] = []

                async def receive() -> None:
                    received.append(await _receive_all(receiver, len(expected)))

                nursery.start_soon(receive)
                await send_all_pieces(target, pieces)
            assert received == [expected]


async def test_other_streams_get_the_joined_bytes() -> None:
    with trio.fail_after(5):
        sender, receiver = trio.testing.memory_stream_pair()
        await send_all_pieces(sender, [b"a", b"b" * 100_000, b"c"])
        assert await _receive_all(receiver, 100_002) == b"a" + b"b" * 100_000 + b"c"


async def test_a_closed_peer_is_a_broken_resource() -> None:
    with trio.fail_after(5):
        sender, receiver = await _socket_pair()
        await receiver.aclose()
        async with sender:
            with pytest.raises(trio.BrokenResourceError):
                for _ in range(10):  # the first write may land before the reset
                    await send_all_pieces(sender, [b"h", b"x" * 200_000])
