"""The daemon's own WebSocket server end, driven with raw RFC 6455 bytes on a real socket:
the upgrade checks, client masking, fragmentation, pings and close codes."""

from __future__ import annotations

import base64
import json
import struct

import trio

from exec_runtime._wire.websocket import BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT
from tests.support.ws_raw import RawEnd, frame

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: " + KEY + b"\r\nSec-WebSocket-Version: 13\r\n"
)


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True) -> bytes:
    return frame(opcode, payload, fin=fin, masked=masked)


class RawPeer(RawEnd):
    async def frame(self) -> tuple[int, bytes]:
        opcode, _, _, payload = await self.read_frame(masked=False)  # servers never mask
        return opcode, payload


async def upgraded(daemon: str, extra: bytes = b"") -> RawPeer:
    host, port = daemon.removeprefix("ws://").rsplit(":", 1)
    peer = RawPeer(await trio.open_tcp_stream(host, int(port)))
    await peer.stream.send_all(UPGRADE + extra + b"\r\n")
    head = await peer.head()
    assert head.startswith(b"HTTP/1.1 101"), head
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head  # RFC 6455's example
    return peer


def request(request_id: int, method: str, params: object = None) -> bytes:
    message: dict[str, object] = {"id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return json.dumps(message).encode()


async def test_a_bad_version_gets_400_and_a_good_upgrade_chooses_msgpack(daemon: str) -> None:
    host, port = daemon.removeprefix("ws://").rsplit(":", 1)
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(UPGRADE.replace(b"Version: 13", b"Version: 8") + b"\r\n")
            reply = await stream.receive_some(65536)
        assert reply.startswith(b"HTTP/1.1 400") and b"Sec-WebSocket-Version: 13" in reply
        for bad_key in (b"not base64!!", b"c2hvcnQ=", "k\u00e9y".encode()):
            stream = await trio.open_tcp_stream(host, int(port))
            async with stream:
                await stream.send_all(UPGRADE.replace(KEY, bad_key) + b"\r\n")
                reply = await stream.receive_some(65536)
            assert reply.startswith(b"HTTP/1.1 400"), (bad_key, reply)
        peer = await upgraded(daemon, b"Sec-WebSocket-Protocol: other, exec-runtime.msgpack.v1\r\n")
        async with peer.stream:
            pass


async def test_pings_are_answered_and_fragments_joined(daemon: str) -> None:
    with trio.fail_after(5):
        peer = await upgraded(daemon)
        async with peer.stream:
            body = request(1, "initialize", {"clientName": "raw"})
            await peer.stream.send_all(
                client_frame(TEXT, body[:10], fin=False)
                + client_frame(PING, b"hello?")
                + client_frame(CONTINUATION, body[10:20], fin=False)
                + client_frame(CONTINUATION, body[20:])
            )
            assert await peer.frame() == (PONG, b"hello?")
            opcode, payload = await peer.frame()
            assert opcode == TEXT and "sessionId" in json.loads(payload)["result"]


async def test_a_big_masked_frame_in_pieces_and_big_output_arrive_whole(daemon: str) -> None:
    """A request bigger than one read, trickled in, is unmasked whole; 1 MB of output
    comes back in frames whose pieces (header, head, chunk) were written gathered."""
    with trio.fail_after(10):
        peer = await upgraded(daemon)
        async with peer.stream:
            hello = request(1, "initialize", {"clientName": "raw"})
            await peer.stream.send_all(client_frame(TEXT, hello))
            assert "result" in json.loads((await peer.frame())[1])
            await peer.stream.send_all(client_frame(TEXT, b'{"method":"initialized"}'))
            script = "import sys; sys.stdout.write('ab' * 500_000)"
            padding = "x" * 300_000  # an unknown field: ignored, but read and unmasked
            start = {
                "processId": "p",
                "argv": ["python3", "-c", script],
                "cwd": "file:///",
                "env": {},
                "tty": False,
                "padding": padding,
            }
            wire = client_frame(TEXT, request(2, "process/start", start))
            for at in range(0, len(wire), 70_000):
                await peer.stream.send_all(wire[at : at + 70_000])
                await trio.sleep(0.01)
            output = b""
            while True:
                opcode, payload = await peer.frame()
                assert opcode == TEXT
                message = json.loads(payload)
                assert message.get("id") != 2 or "result" in message, message
                if message.get("method") == "process/output":
                    output += base64.b64decode(message["params"]["chunk"])
                if message.get("method") == "process/closed":
                    break
            assert output == b"ab" * 500_000


async def test_an_unmasked_client_frame_fails_the_connection_with_1002(daemon: str) -> None:
    with trio.fail_after(5):
        peer = await upgraded(daemon)
        async with peer.stream:
            await peer.stream.send_all(client_frame(BINARY, b"x", masked=False))
            opcode, payload = await peer.frame()
    assert opcode == CLOSE and struct.unpack("!H", payload[:2])[0] == 1002


async def test_a_client_close_is_answered_with_the_same_code(daemon: str) -> None:
    with trio.fail_after(5):
        peer = await upgraded(daemon)
        async with peer.stream:
            await peer.stream.send_all(client_frame(CLOSE, struct.pack("!H", 1000) + b"bye"))
            opcode, payload = await peer.frame()
    assert opcode == CLOSE and struct.unpack("!H", payload[:2])[0] == 1000
