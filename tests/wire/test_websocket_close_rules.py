"""The WebSocket I/O shell's close frames, both ends, as RFC 6455 §7.4 says: what it
answers to a peer's close frame, what it fails the connection with, and what it sends.
The peer is raw bytes over an in-memory stream, written here from the spec."""

from __future__ import annotations

import struct

import pytest
import trio
import trio.testing

from exec_runtime._wire.transport import TransportClosed
from exec_runtime._wire.websocket import WebSocket

CLOSE = 0x8
TEXT = 0x1
KEY = b"\x0f\x1e\x2d\x3c"


def peer_frame(opcode: int, payload: bytes, *, to_client: bool) -> bytes:
    """A final frame from the peer: unmasked to a client, masked to a server (§5.3)."""
    header = bytes([0x80 | opcode, len(payload) | (0 if to_client else 0x80)])
    assert len(payload) < 126
    if to_client:
        return header + payload
    return header + KEY + bytes(b ^ KEY[i % 4] for i, b in enumerate(payload))


class Peer:
    """The raw end: reads this end's frames (unmasking a client's)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def _fill(self, size: int) -> None:
        while len(self.buffer) < size:
            data = await self.stream.receive_some(1024)
            if not data:
                raise EOFError(bytes(self.buffer))
            self.buffer += data

    async def frame(self) -> tuple[int, bytes]:
        await self._fill(2)
        opcode, second = self.buffer[0] & 0x0F, self.buffer[1]
        length, offset = second & 0x7F, 2
        assert length < 126  # only control frames here
        key = b""
        if second & 0x80:
            await self._fill(6)
            key, offset = bytes(self.buffer[2:6]), 6
        await self._fill(offset + length)
        payload = bytes(self.buffer[offset : offset + length])
        del self.buffer[: offset + length]
        if key:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        return opcode, payload

    async def close_code(self) -> int:
        opcode, payload = await self.frame()
        assert opcode == CLOSE, opcode
        return int(struct.unpack("!H", payload[:2])[0])


def pair(client: bool) -> tuple[WebSocket, Peer]:
    ours, theirs = trio.testing.memory_stream_pair()
    return WebSocket(ours, None, b"", 1 << 20, client=client), Peer(theirs)


async def answer_to(payload: bytes, *, client: bool) -> int:
    """The close code this end sends after the peer's close frame with ``payload``."""
    ws, peer = pair(client)
    await peer.stream.send_all(peer_frame(CLOSE, payload, to_client=client))
    with pytest.raises(TransportClosed):
        await ws.receive_message()
    await ws.aclose()
    return await peer.close_code()


ENDS = pytest.mark.parametrize("client", [True, False], ids=["client", "server"])


@ENDS
@pytest.mark.parametrize("code", [1005, 1006, 1015])
async def test_a_peer_close_with_a_reporting_only_code_is_failed_with_1002_not_echoed(
    code: int, client: bool
) -> None:
    with trio.fail_after(5):
        assert await answer_to(struct.pack("!H", code), client=client) == 1002


@ENDS
@pytest.mark.parametrize("code", [0, 999, 1004, 1016, 2999, 5000, 65535])
async def test_a_peer_close_with_an_invalid_code_is_failed_with_1002(
    code: int, client: bool
) -> None:
    with trio.fail_after(5):
        assert await answer_to(struct.pack("!H", code) + b"why", client=client) == 1002


@ENDS
async def test_a_one_byte_close_payload_is_failed_with_1002(client: bool) -> None:
    with trio.fail_after(5):
        assert await answer_to(b"\x03", client=client) == 1002


@ENDS
async def test_a_close_reason_that_is_not_utf8_is_failed_with_1007(client: bool) -> None:
    with trio.fail_after(5):
        assert await answer_to(struct.pack("!H", 1000) + b"bad \xff", client=client) == 1007


@ENDS
@pytest.mark.parametrize("code", [1000, 1001, 1011, 1014, 3000, 4999])
async def test_a_valid_peer_close_is_echoed(code: int, client: bool) -> None:
    with trio.fail_after(5):
        assert (
            await answer_to(struct.pack("!H", code) + "ok \u00e9".encode(), client=client) == code
        )


@ENDS
async def test_a_peer_close_without_a_code_is_answered_with_1000(client: bool) -> None:
    with trio.fail_after(5):
        assert await answer_to(b"", client=client) == 1000


@ENDS
async def test_a_text_message_that_is_not_utf8_is_failed_with_1007(client: bool) -> None:
    ws, peer = pair(client)
    with trio.fail_after(5):
        await peer.stream.send_all(peer_frame(TEXT, b"caf\xc3", to_client=client))
        with pytest.raises(TransportClosed, match="UTF-8"):
            await ws.receive_message()
        await ws.aclose()
        assert await peer.close_code() == 1007


@ENDS
async def test_a_long_close_reason_is_cut_to_123_bytes_between_characters(client: bool) -> None:
    ws, peer = pair(client)
    reason = "a" + "\u00e9" * 100  # 201 bytes: a cut at 120 or 123 bytes splits an é
    sent: list[bytes] = []

    async def answer() -> None:
        opcode, payload = await peer.frame()
        assert opcode == CLOSE
        sent.append(payload)
        await peer.stream.send_all(peer_frame(CLOSE, payload[:2], to_client=client))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer)
            await ws.aclose(1001, reason)
    (payload,) = sent
    assert payload[:2] == struct.pack("!H", 1001)
    assert len(payload) <= 125
    assert payload[2:].decode() == "a" + "\u00e9" * 61  # as much as fits, whole


@ENDS
async def test_a_code_that_may_not_be_sent_is_refused(client: bool) -> None:
    ws, _ = pair(client)
    with pytest.raises(ValueError, match="1006"):
        await ws.aclose(1006)
