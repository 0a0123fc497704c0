"""The client's own WebSocket connection against a scripted server on a real socket.

The server side here writes and parses raw RFC 6455 bytes by hand, so every rule the
client relies on (framing, masking, fragmentation, control frames, the close
handshake, the upgrade checks) is checked against the spec, not against itself.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.lowlevel
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from exec_runtime._wire.transport import TransportClosed
from exec_runtime._wire.websocket import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    WebSocket,
    mask,
)
from exec_runtime._wire.websocket_handshake import HandshakeFailed, UpgradeRejected, handshake
from tests.support.ws_raw import RawEnd, frame

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class RawServerSide(RawEnd):
    """The server end of one connection: reads the upgrade, then raw frames."""

    request_head = b""

    async def read_request(self) -> dict[bytes, bytes]:
        self.request_head = await self.head()
        headers = {}
        for line in self.request_head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return headers

    async def accept(self, subprotocol: bytes | None = None, accept: bytes | None = None) -> None:
        headers = await self.read_request()
        key = headers[b"sec-websocket-key"]
        accept = accept or base64.b64encode(hashlib.sha1(key + GUID).digest())
        lines = [
            b"HTTP/1.1 101 Switching Protocols",
            b"Upgrade: websocket",
            b"Connection: Upgrade",
            b"Sec-WebSocket-Accept: " + accept,
        ]
        if subprotocol is not None:
            lines.append(b"Sec-WebSocket-Protocol: " + subprotocol)
        await self.stream.send_all(b"\r\n".join(lines) + b"\r\n\r\n")

    async def read_frame(self) -> tuple[int, bool, bytes, bytes]:  # type: ignore[override]
        """(opcode, fin, mask key, unmasked payload); asserts the client masked it."""
        return await super().read_frame(masked=True)


Script = Callable[[RawServerSide], Awaitable[None]]


@asynccontextmanager
async def scripted_server(
    script: Script,
) -> AsyncIterator[tuple[trio.SocketStream, list[BaseException]]]:
    """A loopback listener running ``script`` for one connection; yields a client stream."""
    errors: list[BaseException] = []
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]

        async def serve_one() -> None:
            stream = await listeners[0].accept()
            try:
                await script(RawServerSide(stream))
            except BaseException as exc:  # surfaced by the test
                errors.append(exc)
            finally:
                await stream.aclose()
                await listeners[0].aclose()

        nursery.start_soon(serve_one)
        client_stream = await trio.open_tcp_stream("127.0.0.1", port)
        try:
            yield client_stream, errors
        finally:
            await client_stream.aclose()


async def connect(stream: trio.SocketStream, **kwargs: object) -> WebSocket:
    return await handshake(stream, "127.0.0.1:1", "/", **kwargs)  # type: ignore[arg-type]


async def test_handshake_sends_an_upgrade_and_checks_the_answer() -> None:
    seen: dict[bytes, bytes] = {}

    async def script(server: RawServerSide) -> None:
        await server.accept(subprotocol=b"exec-runtime.msgpack.v1")
        seen.update(
            {
                k: v
                for k, v in (
                    line.split(b": ", 1) for line in server.request_head.split(b"\r\n")[1:]
                )
            }
        )
        await server.stream.send_all(frame(BINARY, b"hello"))

    with trio.fail_after(5):
        async with scripted_server(script) as (stream, errors):
            ws = await connect(
                stream,
                subprotocols=["exec-runtime.msgpack.v1"],
                extra_headers=[(b"Authorization", b"Bearer t0k")],
            )
            assert ws.subprotocol == "exec-runtime.msgpack.v1"
            assert await ws.receive_message() == (BINARY, b"hello")
    assert not errors
    assert seen[b"Upgrade"] == b"websocket"
    assert seen[b"Connection"] == b"Upgrade"
    assert seen[b"Sec-WebSocket-Version"] == b"13"
    assert len(base64.b64decode(seen[b"Sec-WebSocket-Key"])) == 16
    assert seen[b"Sec-WebSocket-Protocol"] == b"exec-runtime.msgpack.v1"
    assert seen[b"Authorization"] == b"Bearer t0k"


async def test_a_rejection_raises_connection_rejected_with_status_and_body() -> None:
    async def script(server: RawServerSide) -> None:
        await server.read_request()
        await server.stream.send_all(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 12\r\n\r\nbad token..."
        )

    with trio.fail_after(5):
        async with scripted_server(script) as (stream, _):
            with pytest.raises(UpgradeRejected) as caught:
                await connect(stream)
    assert caught.value.status_code == 401
    assert caught.value.body == b"bad token..."


@pytest.mark.parametrize(
    ("accept", "subprotocol", "match"),
    [
        (b"d3JvbmcgYWNjZXB0IGtleQ==", None, "Accept"),
        (None, b"something-else", "did not offer"),
    ],
)
async def test_a_bad_upgrade_is_refused(
    accept: bytes | None, subprotocol: bytes | None, match: str
) -> None:
    async def script(server: RawServerSide) -> None:
        await server.accept(subprotocol=subprotocol, accept=accept)

    with trio.fail_after(5):
        async with scripted_server(script) as (stream, _):
            with pytest.raises(HandshakeFailed, match=match):
                await connect(stream, subprotocols=["exec-runtime.msgpack.v1"])


async def test_a_server_that_hangs_up_during_the_handshake() -> None:
    async def script(server: RawServerSide) -> None:
        await server.read_request()

    with trio.fail_after(5):
        async with scripted_server(script) as (stream, _):
            with pytest.raises(TransportClosed, match="closed during the handshake"):
                await connect(stream)


@given(
    sizes=st.lists(
        st.sampled_from([0, 1, 125, 126, 127, 65535, 65536, 70000]), min_size=1, max_size=6
    ),
    cuts=st.lists(st.integers(min_value=1, max_value=90000), max_size=8),
)
async def test_frames_of_every_length_class_survive_any_tcp_split(
    sizes: list[int], cuts: list[int]
) -> None:
    messages = [bytes([i % 251]) * size for i, size in enumerate(sizes)]
    wire = b"".join(frame(BINARY if i % 2 else TEXT, m) for i, m in enumerate(messages))

    async def script(server: RawServerSide) -> None:
        await server.accept()
        position = 0
        for cut in sorted(cuts):  # arbitrary TCP segment boundaries
            if position < cut < len(wire):
                await server.stream.send_all(wire[position:cut])
                await trio.lowlevel.checkpoint()
                position = cut
        await server.stream.send_all(wire[position:])

    with trio.fail_after(10):
        async with scripted_server(script) as (stream, errors):
            ws = await connect(stream)
            for i, message in enumerate(messages):
                assert await ws.receive_message() == (BINARY if i % 2 else TEXT, message)
    assert not errors


async def test_a_receive_cancelled_inside_a_big_frame_loses_nothing() -> None:
    """A big frame is read into its own buffer; a receive cancelled halfway puts what it
    read back, so the next receive returns the whole message."""
    big = bytes(range(256)) * 1024  # 256 KiB: read straight into its own buffer
    wire = frame(BINARY, big) + frame(TEXT, b"after")
    half_sent = trio.Event()
    go_on = trio.Event()

    async def script(server: RawServerSide) -> None:
        await server.accept()
        await server.stream.send_all(wire[:100_000])
        half_sent.set()
        await go_on.wait()
        await server.stream.send_all(wire[100_000:])

    with trio.fail_after(10):
        async with scripted_server(script) as (stream, errors):
            ws = await connect(stream)
            await half_sent.wait()
            with trio.move_on_after(0.2) as scope:
                await ws.receive_message()
            assert scope.cancelled_caught
            go_on.set()
            assert await ws.receive_message() == (BINARY, big)
            assert await ws.receive_message() == (TEXT, b"after")
    assert not errors


async def test_a_huge_frame_header_alone_reserves_nothing() -> None:
    """Past DIRECT_RECEIVE_MAX a frame's buffer grows with what arrives: a peer that
    sends only a header claiming megabytes makes this end hold no more than it sent."""
    huge = bytes(range(256)) * (12 * 1024)  # 3 MiB
    wire = frame(BINARY, huge)
    part_sent = trio.Event()
    go_on = trio.Event()

    async def script(server: RawServerSide) -> None:
        await server.accept()
        await server.stream.send_all(wire[:100_000])
        part_sent.set()
        await go_on.wait()
        await server.stream.send_all(wire[100_000:])

    with trio.fail_after(10):
        async with scripted_server(script) as (stream, errors):
            ws = await connect(stream, max_message_size=1 << 23)
            async with trio.open_nursery() as nursery:
                received: list[tuple[int, bytes | bytearray]] = []

                async def receive() -> None:
                    received.append(await ws.receive_message())

                tracemalloc.start()
                try:
                    nursery.start_soon(receive)
                    await part_sent.wait()
                    # The receiver has taken in what was sent and waits for the rest.
                    await trio.testing.wait_all_tasks_blocked(cushion=0.01)
                    held, _ = tracemalloc.get_traced_memory()
                finally:
                    tracemalloc.stop()
                assert held < 1_000_000  # not the 3 MiB the header claims
                go_on.set()
            assert received == [(BINARY, huge)]
    assert not errors


async def test_a_hang_up_inside_a_big_frame_ends_the_connection() -> None:
    async def script(server: RawServerSide) -> None:
        await server.accept()
        await server.stream.send_all(frame(BINARY, b"x" * 200_000)[:150_000])

    with trio.fail_after(5):
        async with scripted_server(script) as (stream, _):
            ws = await connect(stream)
            with pytest.raises(TransportClosed, match="in the middle of a frame"):
                await ws.receive_message()


async def test_a_send_cancelled_mid_frame_ends_the_connection() -> None:
    """A write cut off by a cancel leaves part of a frame on the wire; anything sent
    after it would be read as that frame's payload. So the connection ends there: the
    peer sees the stream end inside the frame, and later sends raise TransportClosed.
    A cancel that lands before the first byte leaves the connection as it was."""
    big = b"x" * (32 << 20)  # far more than loopback's socket buffers hold
    release = trio.Event()
    received = bytearray()

    async def script(server: RawServerSide) -> None:
        await server.accept()
        opcode, fin, _, payload = await server.read_frame()
        assert (opcode, fin, payload) == (TEXT, True, b"before")
        await release.wait()
        received.extend(server.buffer)  # read past that frame already, if anything
        while data := await server.stream.receive_some(1 << 20):
            received.extend(data)

    with trio.fail_after(10):
        async with scripted_server(script) as (stream, errors):
            ws = await connect(stream)
            with trio.CancelScope() as already_cancelled:
                already_cancelled.cancel()
                await ws.send_messages([b"ignored"], TEXT)
            assert ws.close_reason is None  # nothing was written
            await ws.send_messages([b"before"], TEXT)
            with trio.move_on_after(0.2) as scope:
                await ws.send_messages([big], BINARY)
            assert scope.cancelled_caught
            assert ws.close_reason == "a write was interrupted mid-frame"
            with pytest.raises(TransportClosed):
                await ws.send_messages([b"after"], TEXT)
            release.set()
    assert not errors
    header = received[:14]
    assert header[0] == 0x80 | BINARY and header[1] == 0x80 | 127
    assert struct.unpack("!Q", header[2:10]) == (len(big),)
    assert 0 < len(received) - 14 < len(big)  # the frame's start, then the end of the stream


async def test_fragments_are_joined_and_a_ping_in_between_is_answered() -> None:
    pongs: list[bytes] = []

    async def script(server: RawServerSide) -> None:
        await server.accept()
        await server.stream.send_all(
            frame(TEXT, b"hel", fin=False)
            + frame(PING, b"are you there")
            + frame(CONTINUATION, b"lo ", fin=False)
            + frame(PONG, b"unsolicited")
            + frame(CONTINUATION, b"world")
        )
        opcode, _, _, payload = await server.read_frame()
        assert opcode == PONG
        pongs.append(payload)

    with trio.fail_after(5):
        async with scripted_server(script) as (stream, errors):
            ws = await connect(stream)
            assert await ws.receive_message() == (TEXT, b"hello world")
    assert not errors
    assert pongs == [b"are you there"]


async def test_client_frames_are_masked_with_fresh_keys() -> None:
    received: list[tuple[int, bool, bytes, bytes]] = []
    big = bytes(range(256)) * 1000

    async def script(server: RawServerSide) -> None:
        await server.accept()
        for _ in range(3):
            received.append(await server.read_frame())

    with trio.fail_after(5):
        async with scripted_server(script) as (stream, errors):
            ws = await connect(stream)
            await ws.send_messages([b"one", b"two"], BINARY)
            await ws.send_messages([big], TEXT)
    assert not errors
    assert [(op, fin, payload) for op, fin, _, payload in received] == [
        (BINARY, True, b"one"),
        (BINARY, True, b"two"),
        (TEXT, True, big),
    ]
    assert len({key for _, _, key, _ in received}) == 3


@pytest.mark.parametrize(
    ("bad_frame", "code", "match"),
    [
        (frame(BINARY, b"x", masked=True), 1002, "masked frame"),
        (frame(BINARY, b"x", rsv=0x40), 1002, "reserved bits"),
        (frame(CONTINUATION, b"x"), 1002, "continuation"),
        (frame(0x3, b"x"), 1002, "unknown opcode"),
        (frame(PING, b"x", fin=False), 1002, "control frame"),
        (frame(BINARY, b"x" * 2000), 1009, "larger than"),
    ],
)
async def test_a_protocol_violation_fails_the_connection_with_its_close_code(
    bad_frame: bytes, code: int, match: str
) -> None:
    close_codes: list[int] = []

    async def script(server: RawServerSide) -> None:
        await server.accept()
        await server.stream.send_all(bad_frame)
        opcode, _, _, payload = await server.read_frame()
        assert opcode == CLOSE
        close_codes.append(struct.unpack("!H", payload[:2])[0])

    with trio.fail_after(5):
        async with scripted_server(script) as (stream, errors):
            ws = await connect(stream, max_message_size=1000)
            with pytest.raises(TransportClosed, match=match):
                await ws.receive_message()
            await ws.aclose()
    assert not errors
    assert close_codes == [code]


async def test_a_close_from_the_server_is_answered_and_ends_the_connection() -> None:
    answer: list[bytes] = []

    async def script(server: RawServerSide) -> None:
        await server.accept()
        await server.stream.send_all(frame(CLOSE, struct.pack("!H", 1001) + b"going away"))
        opcode, _, _, payload = await server.read_frame()
        assert opcode == CLOSE
        answer.append(payload)

    with trio.fail_after(5):
        async with scripted_server(script) as (stream, errors):
            ws = await connect(stream)
            with pytest.raises(TransportClosed, match="1001 going away"):
                await ws.receive_message()
            with pytest.raises(TransportClosed):
                await ws.send_messages([b"late"], BINARY)
    assert not errors
    assert answer == [struct.pack("!H", 1001)]


async def test_aclose_sends_a_normal_close_and_waits_for_the_answer() -> None:
    got: list[tuple[int, bytes]] = []

    async def script(server: RawServerSide) -> None:
        await server.accept()
        opcode, _, _, payload = await server.read_frame()
        got.append((opcode, payload))
        await server.stream.send_all(frame(CLOSE, payload))

    with trio.fail_after(5):
        async with scripted_server(script) as (stream, errors):
            ws = await connect(stream)
            await ws.aclose()
    assert not errors
    assert got == [(CLOSE, struct.pack("!H", 1000))]


async def test_aclose_while_another_task_is_receiving() -> None:
    async def script(server: RawServerSide) -> None:
        await server.accept()
        opcode, _, _, payload = await server.read_frame()
        assert opcode == CLOSE
        await server.stream.send_all(frame(CLOSE, payload))

    with trio.fail_after(5):
        async with scripted_server(script) as (stream, errors), trio.open_nursery() as nursery:
            ws = await connect(stream)
            ended = trio.Event()

            async def reader() -> None:
                with pytest.raises(TransportClosed):
                    await ws.receive_message()
                ended.set()

            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked(cushion=0.01)  # the reader waits
            await ws.aclose()
            await ended.wait()
    assert not errors


async def test_end_of_stream_without_a_close_frame() -> None:
    async def script(server: RawServerSide) -> None:
        await server.accept()

    with trio.fail_after(5):
        async with scripted_server(script) as (stream, _):
            ws = await connect(stream)
            with pytest.raises(TransportClosed, match="without a close frame"):
                await ws.receive_message()


@given(payload=st.binary(max_size=5000), key=st.binary(min_size=4, max_size=4))
def test_mask_is_the_rfc_xor_and_its_own_inverse(payload: bytes, key: bytes) -> None:
    expected = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    assert mask(payload, key) == expected
    assert mask(mask(payload, key), key) == payload
