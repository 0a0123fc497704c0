"""The daemon at the wire: transports, the JSON-RPC dialect, handshake and sessions
(PROTOCOL.md §1-§3, §7), driven through a real WebSocket with a raw JSON client."""

from __future__ import annotations

import json
import os
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio
import trio_websocket
from conftest import RawClient, WireError

from exec_runtime import ServerConfig

INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
SESSION_ATTACHED = -32010


async def wait_messages(client: RawClient, count: int) -> list[dict[str, Any]]:
    """Every message the client has received, once there are at least ``count``."""
    while len(client.all_messages) < count:
        await trio.sleep(0.005)
    return client.all_messages


async def http_exchange(url: str, request: bytes) -> bytes:
    """Send raw bytes to the daemon's TCP port; return everything until it closes."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    async with stream:
        await stream.send_all(request)
        received = b""
        while data := await stream.receive_some(65536):
            received += data
    return received


def upgrade_request(url: str, extra: str = "") -> bytes:
    host = urlsplit(url).netloc
    return (
        f"GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"{extra}\r\n"
    ).encode()


async def resume(connect: Any, session_id: str) -> RawClient:
    """A new connection resuming ``session_id``; retries -32010 while the daemon has not
    yet seen the old connection go away (the protocol marks -32010 retryable)."""
    client: RawClient = await connect(handshake=False)
    for _ in range(200):
        reply = await client.request(
            "initialize", {"clientName": "test", "resumeSessionId": session_id}
        )
        if "error" not in reply:
            await client.notify("initialized")
            client.session_id = reply["result"]["sessionId"]
            return client
        assert reply["error"]["code"] == SESSION_ATTACHED, reply
        await trio.sleep(0.01)
    raise AssertionError("the session never became resumable")


# --- §1 transports and framing ---------------------------------------------------------


async def test_readyz_answers_200_with_an_empty_body(daemon: str) -> None:
    with trio.fail_after(5):
        host = urlsplit(daemon).netloc
        reply = await http_exchange(daemon, f"GET /readyz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.split(b"\r\n")[0] == b"HTTP/1.1 200 OK"
        assert b"content-length: 0" in head.lower()
        assert body == b""


async def test_a_browser_origin_is_refused_with_403(daemon: str) -> None:
    with trio.fail_after(5):
        reply = await http_exchange(
            daemon, upgrade_request(daemon, "Origin: http://evil.example\r\n")
        )
        assert reply.split(b"\r\n")[0] == b"HTTP/1.1 403 Forbidden"
        # The same handshake without Origin upgrades.
        parts = urlsplit(daemon)
        assert parts.hostname is not None and parts.port is not None
        stream = await trio.open_tcp_stream(parts.hostname, parts.port)
        async with stream:
            await stream.send_all(upgrade_request(daemon))
            head = b""
            while b"\r\n\r\n" not in head:
                data = await stream.receive_some(65536)
                assert data
                head += data
            assert head.split(b"\r\n")[0].startswith(b"HTTP/1.1 101")


async def test_the_daemon_answers_with_text_frames(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect(handshake=False)
        await client.send_raw(json.dumps({"id": 1, "method": "initialize", "params": {"clientName": "t"}}))
        data = await client.ws.get_message() if False else None  # reader task owns the socket
        assert data is None
        await wait_messages(client, 1)
        # trio-websocket yields str for text frames; RawClient parsed it, so check the raw
        # type by asking for one more reply on a bare socket below.
        ws = await trio_websocket.connect_websocket_url(client._nursery, client_url(client))  # type: ignore[attr-defined]
        del ws


def client_url(client: RawClient) -> str:  # pragma: no cover - placeholder
    raise NotImplementedError


async def test_binary_frames_holding_json_are_accepted(connect: Any) -> None:
    with trio.fail_after(5):
        client = await connect()
        await client.send_raw(json.dumps({"id": 50, "method": "environment/status"}).encode())
        messages = await wait_messages(client, 2)
        assert messages[-1] == {"id": 50, "result": {"status": "ready"}}


async def test_an_oversized_message_closes_the_connection(
    connect: Any,
) -> None:
    pytest.skip("replaced below")
