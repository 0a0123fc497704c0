"""The WebSocket opening handshakes (RFC 6455 §4): the client's upgrade request and its
checks of the answer, and the daemon's answer to an upgrade request whose head
``_wire/http.py`` already read (and checked for Origin and the token)."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from collections.abc import Sequence
from typing import Final

import trio

from .http import HeadTooLong, read_head
from .transport import TransportClosed
from .websocket import WebSocket

log = logging.getLogger("exec_runtime.websocket")

_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_HEAD: Final = 64 * 1024


class HandshakeError(Exception):
    """The client's upgrade did not become a WebSocket."""


class HandshakeFailed(HandshakeError):
    """The server answered the upgrade with something that is not a WebSocket."""


class UpgradeRejected(HandshakeError):
    """The server answered the upgrade with an HTTP status other than 101."""

    def __init__(self, status_code: int, headers: tuple[tuple[bytes, bytes], ...], body: bytes):
        super().__init__(f"the server answered HTTP {status_code}")
        self.status_code = status_code
        self.headers = headers
        self.body = body


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


async def handshake(
    stream: trio.abc.Stream,
    host: str,
    resource: str,
    *,
    subprotocols: Sequence[str] = (),
    extra_headers: Sequence[tuple[bytes, bytes]] = (),
    max_message_size: int = 64 * 1024 * 1024,
) -> WebSocket:
    """Upgrade ``stream``. Raises :class:`UpgradeRejected` for any status
    but 101 (e.g. 401 for a missing token), HandshakeFailed for a bad upgrade, and
    TransportClosed if the server hangs up first."""
    key = base64.b64encode(os.urandom(16))
    lines = [
        f"GET {resource} HTTP/1.1".encode(),
        b"Host: " + host.encode("idna"),
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Key: " + key,
        b"Sec-WebSocket-Version: 13",
    ]
    if subprotocols:
        lines.append(b"Sec-WebSocket-Protocol: " + ", ".join(subprotocols).encode())
    lines += [name + b": " + value for name, value in extra_headers]
    try:
        await stream.send_all(b"\r\n".join(lines) + b"\r\n\r\n")
        status, headers, rest = await _read_response_head(stream)
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise TransportClosed(f"connection lost during the handshake: {exc}") from None
    if status != 101:
        body = await _read_body(stream, headers, rest)
        raise UpgradeRejected(status, tuple(headers), body)
    fields = {name.lower(): value for name, value in headers}
    if fields.get(b"upgrade", b"").lower() != b"websocket":
        raise HandshakeFailed("the server did not upgrade to websocket")
    if fields.get(b"sec-websocket-accept") != accept_key(key):
        raise HandshakeFailed("the server's Sec-WebSocket-Accept does not match our key")
    if fields.get(b"sec-websocket-extensions"):
        raise HandshakeFailed("the server agreed to an extension we did not offer")
    chosen = fields.get(b"sec-websocket-protocol")
    subprotocol = chosen.decode() if chosen else None
    if subprotocol is not None and subprotocol not in subprotocols:
        raise HandshakeFailed(f"the server chose a subprotocol we did not offer: {subprotocol}")
    return WebSocket(stream, subprotocol, rest, max_message_size)


async def _read_response_head(
    stream: trio.abc.Stream,
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    try:
        raw = await read_head(stream, _MAX_HEAD)
    except HeadTooLong:
        raise HandshakeFailed("the server's response head is too long") from None
    except EOFError:
        raise TransportClosed("the connection closed during the handshake") from None
    head, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise HandshakeFailed(f"not an HTTP response: {status_line[:80]!r}")
    headers = []
    for line in header_lines:
        name, sep, value = line.partition(b":")
        if sep:
            headers.append((name.strip().lower(), value.strip()))
    return int(parts[1]), headers, rest


async def _read_body(
    stream: trio.abc.Stream, headers: list[tuple[bytes, bytes]], rest: bytes
) -> bytes:
    """A rejection's body (for the error), bounded; empty if it does not say its length."""
    length = next((value for name, value in headers if name == b"content-length"), b"0")
    wanted = min(int(length) if length.isdigit() else 0, _MAX_HEAD)
    body = bytearray(rest)
    with trio.move_on_after(1):
        while len(body) < wanted:
            try:
                data = await stream.receive_some(wanted - len(body))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                break
            if not data:
                break
            body += data
    return bytes(body[:wanted])




def _valid_key(key: str) -> bool:
    """16 random bytes in base64 (RFC 6455 §4.1)."""
    try:
        return len(base64.b64decode(key.encode("ascii"), validate=True)) == 16
    except (UnicodeEncodeError, ValueError):  # binascii.Error is a ValueError
        return False


async def accept(
    stream: trio.abc.Stream,
    headers: dict[str, str],
    buffered: bytes,
    *,
    subprotocols: Sequence[str],
    max_message_size: int,
) -> WebSocket | None:
    """Answer an upgrade request (its head already read and checked for auth and
    origin): 101 and an open server connection, or 400 and None.

    ``headers`` has lower-cased names; ``buffered`` is what followed the head.
    Of the client's offered subprotocols, the first in ``subprotocols`` is chosen.
    """
    key = headers.get("sec-websocket-key", "")
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    problem = None
    if headers.get("upgrade", "").lower() != "websocket" or "upgrade" not in tokens:
        problem = "not a WebSocket upgrade"
    elif headers.get("sec-websocket-version") != "13":
        problem = "only WebSocket version 13 is spoken here"
    elif not _valid_key(key):
        problem = "a bad Sec-WebSocket-Key"
    if problem is not None:
        log.debug("refused an upgrade: %s", problem)
        body = problem.encode() + b"\n"
        await stream.send_all(
            b"HTTP/1.1 400 Bad Request\r\nSec-WebSocket-Version: 13\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
        return None
    offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")]
    chosen = next((p for p in subprotocols if p in offered), None)
    lines = [
        b"HTTP/1.1 101 Switching Protocols",
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Accept: " + accept_key(key.encode()),
    ]
    if chosen is not None:
        lines.append(b"Sec-WebSocket-Protocol: " + chosen.encode())
    await stream.send_all(b"\r\n".join(lines) + b"\r\n\r\n")
    log.debug("upgraded to a WebSocket (subprotocol %s)", chosen)
    return WebSocket(stream, chosen, buffered, max_message_size, client=False)
