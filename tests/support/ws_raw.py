"""Raw RFC 6455 bytes for the WebSocket tests, written by hand from the spec (not with
the code under test)."""

from __future__ import annotations

import struct

import trio

TEST_MASK = b"\x01\x02\x03\x04"


def frame(
    opcode: int, payload: bytes, *, fin: bool = True, masked: bool = False, rsv: int = 0
) -> bytes:
    first = (0x80 if fin else 0) | rsv | opcode
    length = len(payload)
    mask_bit = 0x80 if masked else 0
    if length < 126:
        header = bytes([first, mask_bit | length])
    elif length < 1 << 16:
        header = bytes([first, mask_bit | 126]) + struct.pack("!H", length)
    else:
        header = bytes([first, mask_bit | 127]) + struct.pack("!Q", length)
    if masked:
        return header + TEST_MASK + unmask(payload, TEST_MASK)
    return header + payload


def unmask(data: bytes, key: bytes) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


class RawEnd:
    """One end of a connection that reads HTTP heads and frames byte by byte."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def fill(self, size: int) -> None:
        while len(self.buffer) < size:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError(bytes(self.buffer))
            self.buffer += data

    async def head(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            await self.fill(len(self.buffer) + 1)
        end = self.buffer.index(b"\r\n\r\n")
        head = bytes(self.buffer[:end])
        del self.buffer[: end + 4]
        return head

    async def read_frame(self, *, masked: bool) -> tuple[int, bool, bytes, bytes]:
        """(opcode, fin, mask key, payload unmasked); asserts the masking is ``masked``."""
        await self.fill(2)
        first, second = self.buffer[0], self.buffer[1]
        assert bool(second & 0x80) == masked, "the frame is masked the wrong way"
        length, offset = second & 0x7F, 2
        if length == 126:
            await self.fill(4)
            (length,) = struct.unpack_from("!H", self.buffer, 2)
            offset = 4
        elif length == 127:
            await self.fill(10)
            (length,) = struct.unpack_from("!Q", self.buffer, 2)
            offset = 10
        key = b""
        if masked:
            await self.fill(offset + 4)
            key = bytes(self.buffer[offset : offset + 4])
            offset += 4
        await self.fill(offset + length)
        payload = bytes(self.buffer[offset : offset + length])
        del self.buffer[: offset + length]
        if masked:
            payload = unmask(payload, key)
        return first & 0x0F, bool(first & 0x80), key, payload
