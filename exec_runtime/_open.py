"""The two ways to get an :class:`ExecClient`: over a socket, or in-process."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio_websocket

import protocol_schema as wire

from ._client import ExecClient
from ._config import ServerConfig
from ._connection import Connection
from ._session import SessionRegistry
from ._transport import MessageTransport, WebSocketTransport, memory_transport_pair

WS_RECEIVE_BUFFER = 256 * 1024


class WebSocketConnector:
    """Dials the daemon; offers msgpack frames and falls back to JSON if not accepted."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        msgpack: bool = True,
        connect_timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.token = token
        self.ssl_context = ssl_context
        self.msgpack = msgpack
        self.connect_timeout = connect_timeout

    async def connect(self, nursery: trio.Nursery) -> MessageTransport:
        headers = []
        if self.token is not None:
            headers.append((b"authorization", f"Bearer {self.token}".encode()))
        with trio.fail_after(self.connect_timeout):
            ws = await trio_websocket.connect_websocket_url(
                nursery,
                self.url,
                self.ssl_context,
                subprotocols=[wire.MSGPACK_SUBPROTOCOL] if self.msgpack else None,
                extra_headers=headers,
                max_message_size=64 * 1024 * 1024,
                receive_buffer_size=WS_RECEIVE_BUFFER,
            )
        return WebSocketTransport(ws, wire.codec_for_subprotocol(ws.subprotocol))


class LocalConnector:
    """Connects to a daemon running inside this Trio run, over an in-memory pair."""

    def __init__(self, registry: SessionRegistry, codec: wire.Codec = wire.MSGPACK) -> None:
        self.registry = registry
        self.codec = codec
        self.connections: list[MessageTransport] = []

    async def connect(self, nursery: trio.Nursery) -> MessageTransport:
        client_end, daemon_end = memory_transport_pair(self.codec)
        self.connections.append(client_end)
        nursery.start_soon(_serve_local, Connection(daemon_end, self.registry))
        return client_end


async def _serve_local(connection: Connection) -> None:
    try:
        await connection.serve()
    finally:
        with trio.CancelScope(shield=True):
            await connection.transport.aclose()


@asynccontextmanager
async def open_client(
    url: str,
    *,
    token: str | None = None,
    client_name: str = "exec-runtime",
    ssl_context: ssl.SSLContext | None = None,
    msgpack: bool = True,
    recovery_deadline: float = 25.0,
    final_read: bool = False,
) -> AsyncIterator[ExecClient]:
    """Connect to ``exec-runtime serve`` (``ws://`` or ``wss://``) and start a session.

    The client reconnects and resumes the session on its own if the connection drops.
    """
    connector = WebSocketConnector(url, token=token, ssl_context=ssl_context, msgpack=msgpack)
    async with _client_from(
        connector, client_name, recovery_deadline=recovery_deadline, final_read=final_read
    ) as client:
        yield client


@asynccontextmanager
async def open_local(
    config: ServerConfig | None = None, *, client_name: str = "exec-runtime"
) -> AsyncIterator[ExecClient]:
    """An in-process runtime with the client's interface: no socket, same code paths.

    Processes belong to this context: leaving it kills every process group.
    """
    async with trio.open_nursery() as nursery:
        registry = SessionRegistry(nursery, config or ServerConfig())
        try:
            async with _client_from(LocalConnector(registry), client_name) as client:
                yield client
        finally:
            registry.close_all()
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def _client_from(
    connector: WebSocketConnector | LocalConnector,
    client_name: str,
    *,
    recovery_deadline: float = 25.0,
    final_read: bool = False,
) -> AsyncIterator[ExecClient]:
    async with trio.open_nursery() as nursery:
        client = ExecClient(
            connector,
            nursery,
            client_name=client_name,
            recovery_deadline=recovery_deadline,
            final_read=final_read,
        )
        await nursery.start(client._supervise)
        try:
            yield client
        finally:
            await client.aclose()
            nursery.cancel_scope.cancel()
