"""The HTTP side of the WebSocket listener: read the opening request ourselves, answer
``/readyz`` and refusals (403 for a browser Origin, 401 for a bad token) before any
upgrade, then hand the bytes read past the head to the WebSocket handshake
(``_wire/websocket_handshake.py``). The client reads the handshake response with the same
head reader."""

from __future__ import annotations

import hmac
from typing import Final

import attrs
import trio

MAX_HEAD_BYTES: Final = 64 * 1024


class BadRequest(Exception):
    pass


@attrs.frozen
class RequestHead:
    method: str
    target: str
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    raw: bytes

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def is_upgrade(self) -> bool:
        return "websocket" in self.headers.get("upgrade", "").lower()


class HeadTooLong(BadRequest):
    pass


async def read_head(
    stream: trio.abc.ReceiveStream, max_bytes: int = MAX_HEAD_BYTES, *, reject_tls: bool = False
) -> bytes:
    """An HTTP head (request or response) up to its blank line, and whatever followed it.

    Raises HeadTooLong past ``max_bytes``, EOFError if the stream ends first; with
    ``reject_tls``, BadRequest at once for a TLS ClientHello (a ``wss://`` client of a
    plain listener), which otherwise waits for a blank line that never comes.
    """
    buffer = bytearray()
    searched = 0  # the blank line cannot end before this
    while True:
        end = buffer.find(b"\r\n\r\n", max(0, searched - 3))
        if end >= 0:
            if end + 4 > max_bytes:  # the limit is the head's, through its blank line
                raise HeadTooLong("the head is too large")
            return bytes(buffer)
        if len(buffer) >= max_bytes:
            raise HeadTooLong("the head is too large")
        searched = len(buffer)
        data = await stream.receive_some(16 * 1024)
        if not data:
            raise EOFError
        buffer += data
        if reject_tls and buffer.startswith(b"\x16\x03"):  # a TLS handshake record
            raise BadRequest("a TLS handshake on a plain ws:// listener")


async def read_request_head(stream: trio.abc.ReceiveStream) -> RequestHead:
    try:
        raw = await read_head(stream, reject_tls=True)
    except HeadTooLong:
        raise BadRequest("request head too large") from None
    except EOFError:
        raise BadRequest("connection closed before the request head ended") from None
    return parse_request_head(raw)


def parse_request_head(raw: bytes) -> RequestHead:
    head, _, _ = raw.partition(b"\r\n\r\n")
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
    except ValueError:
        raise BadRequest("malformed request line") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise BadRequest("malformed header line")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return RequestHead(method, target, headers, raw)


def bearer_refusal(headers: dict[str, str], token: str) -> str | None:
    """Why the request's ``Authorization`` does not carry ``Bearer <token>``, or None if
    it does. Compared in constant time; the reason never quotes what was sent."""
    value = headers.get("authorization")
    if value is None:
        return "no Authorization header"
    scheme, _, credentials = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return "the Authorization header is not a Bearer token"
    # Headers were decoded as latin-1: encoding back gives the bytes that were sent.
    sent = credentials.strip().encode("latin-1")
    if not hmac.compare_digest(sent, token.encode("ascii")):
        return "wrong token"
    return None


def response(status: int, reason: str, body: bytes = b"", extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n{extra}\r\n"
    ).encode() + body
