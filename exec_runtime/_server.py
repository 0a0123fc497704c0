"""The daemon: listeners, the HTTP pre-handshake, connections, and shutdown.

Ownership: ``serve`` opens one nursery. Sessions run in it (each its own nursery of
processes); connections run in a child nursery. Cancelling ``serve`` cancels both, and
every process task kills its group on the way out.
"""

from __future__ import annotations

import logging
import os
import sys
from functools import partial
from urllib.parse import urlsplit

import trio
import trio_websocket

import protocol_schema as wire

from ._config import ServerConfig
from ._connection import Connection
from ._http import BadRequest, ReplayStream, read_request_head, response
from ._session import SessionRegistry
from ._transport import StreamLineTransport, WebSocketTransport

log = logging.getLogger("exec_runtime.server")

HANDSHAKE_TIMEOUT = 10.0
PING_INTERVAL = 30.0
"""Seconds between the daemon's WebSocket pings (PROTOCOL §1)."""
WS_RECEIVE_BUFFER = 256 * 1024  # trio-websocket's 4 KiB default costs a wakeup per 4 KiB


def parse_listen(listen: str) -> tuple[str, str, int]:
    """``ws://IP:PORT`` → ("ws", host, port); ``stdio`` → ("stdio", "", 0)."""
    if listen == "stdio":
        return "stdio", "", 0
    parts = urlsplit(listen)
    if parts.scheme != "ws" or parts.hostname is None:
        raise ValueError(f"--listen must be ws://IP:PORT or stdio, got {listen!r}")
    try:
        port = parts.port or 0
    except ValueError:
        raise ValueError(f"bad port in {listen!r}") from None
    return parts.scheme, parts.hostname, port


async def serve(
    config: ServerConfig, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the daemon until cancelled. ``task_status.started`` receives the bound URL.

    Embed it with ``url = await nursery.start(exec_runtime.serve, config)``.
    """
    scheme, host, port = parse_listen(config.listen)
    async with trio.open_nursery() as nursery:
        registry = SessionRegistry(nursery, config)
        try:
            if scheme == "stdio":
                task_status.started("stdio")
                await _serve_stdio(registry)
            else:
                listeners = await trio.open_tcp_listeners(port, host=host)
                bound_port = listeners[0].socket.getsockname()[1]
                url = f"ws://{_url_host(host)}:{bound_port}"
                log.info("listening on %s", url)
                task_status.started(url)
                await trio.serve_listeners(partial(_handle_tcp, registry), listeners)
        finally:
            registry.close_all()
            nursery.cancel_scope.cancel()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def _serve_stdio(registry: SessionRegistry) -> None:
    receive = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    send = trio.lowlevel.FdStream(os.dup(sys.stdout.fileno()))
    transport = StreamLineTransport(receive, send, registry.config.max_message_bytes)
    try:
        await Connection(transport, registry).serve()
    finally:
        with trio.CancelScope(shield=True):
            await transport.aclose()


async def _handle_tcp(registry: SessionRegistry, stream: trio.SocketStream) -> None:
    async with stream:
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                head = await read_request_head(stream)
        except (BadRequest, trio.TooSlowError, trio.BrokenResourceError, OSError) as exc:
            log.debug("bad handshake: %s", exc)
            await _try_send(stream, response(400, "Bad Request"))
            return
        if head.method == "GET" and head.path == "/readyz" and not head.is_upgrade:
            await _try_send(stream, response(200, "OK"))
            return
        if "origin" in head.headers:
            await _try_send(stream, response(403, "Forbidden", b"browser origins are refused\n"))
            return
        if not head.is_upgrade:
            await _try_send(
                stream, response(426, "Upgrade Required", extra="Upgrade: websocket\r\n")
            )
            return
        await _serve_websocket(registry, ReplayStream(stream, head.raw))


async def _serve_websocket(registry: SessionRegistry, stream: ReplayStream) -> None:
    """Serve one WebSocket; always end with a close handshake, bounded by 2 s.

    trio-websocket's reader task must stay alive to receive the peer's answer to our
    close frame, so its nursery is shielded from the daemon's shutdown: cancelling
    ``serve`` reaches the connection through ``connection_scope`` instead (via the
    watcher below), and the close then completes as soon as the peer answers rather
    than always waiting out the timeout.
    """
    connection_scope = trio.CancelScope()

    async def cancel_connection_with_outer_scope() -> None:
        try:
            await trio.sleep_forever()
        finally:
            connection_scope.cancel()

    async with trio.open_nursery() as watcher:
        watcher.start_soon(cancel_connection_with_outer_scope)
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as ws_nursery:
                with connection_scope:
                    await _run_websocket(registry, stream, ws_nursery)
                ws_nursery.cancel_scope.cancel()
        watcher.cancel_scope.cancel()


async def _run_websocket(
    registry: SessionRegistry, stream: ReplayStream, ws_nursery: trio.Nursery
) -> None:
    request = await trio_websocket.wrap_server_stream(
        ws_nursery,
        stream,
        max_message_size=registry.config.max_message_bytes,
        receive_buffer_size=WS_RECEIVE_BUFFER,
    )
    offered = request.proposed_subprotocols
    subprotocol = wire.MSGPACK_SUBPROTOCOL if wire.MSGPACK_SUBPROTOCOL in offered else None
    ws = await request.accept(subprotocol=subprotocol)
    ws_nursery.start_soon(_keepalive, ws)
    try:
        await Connection(
            WebSocketTransport(ws, wire.codec_for_subprotocol(subprotocol)), registry
        ).serve()
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await ws.aclose()


async def _keepalive(ws: trio_websocket.WebSocketConnection) -> None:
    """Ping every PING_INTERVAL (PROTOCOL §1), so idle connections stay open through
    proxies. A missing pong is not fatal: a client held up by backpressure may not
    read (nor answer pings) for a while."""
    while True:
        await trio.sleep(PING_INTERVAL)
        with trio.move_on_after(PING_INTERVAL):
            try:
                await ws.ping()
            except trio_websocket.ConnectionClosed:
                return


async def _try_send(stream: trio.abc.SendStream, data: bytes) -> None:
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
