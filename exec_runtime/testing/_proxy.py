"""A real loopback WebSocket proxy that applies a fault plan between client and daemon."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

import protocol_schema as wire

from .._wire.transport import CLIENT_MAX_MESSAGE_BYTES, Frame, TransportClosed, joined
from ._faults import FaultController, FaultPlan, FaultyTransport

if TYPE_CHECKING:
    import trio_websocket


class FaultProxy:
    def __init__(self, url: str, controller: FaultController) -> None:
        self.url = url
        self.controller = controller

    def drop(self) -> None:
        self.controller.drop()

    def partition(self) -> None:
        """Cut the current connection and refuse new ones until :meth:`heal`."""
        self.controller.partition()

    def heal(self) -> None:
        self.controller.heal()


class WebSocketTransport:
    """A trio-websocket connection carrying one message per frame: the proxy speaks it
    on both sides, so it is an independent WebSocket implementation between our client
    and our daemon (both of which use ``_wire/websocket.py``)."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, codec: wire.Codec) -> None:
        self.ws = ws
        self.codec = codec

    async def send_message(self, data: bytes) -> None:
        try:
            # Text frames for JSON, binary frames for msgpack (PROTOCOL §1).
            await self.ws.send_message(data if self.codec.binary else data.decode())
        except _connection_closed() as exc:
            raise TransportClosed(str(exc)) from None

    async def send_messages(self, messages: Sequence[Frame]) -> None:
        for message in messages:
            await self.send_message(joined(message))

    async def receive_message(self) -> bytes | str:
        try:
            return await self.ws.get_message()
        except _connection_closed() as exc:
            raise TransportClosed(str(exc)) from None

    async def aclose(self) -> None:
        await self.ws.aclose()



@asynccontextmanager
async def fault_proxy(
    daemon_url: str, plan: FaultPlan | None = None
) -> AsyncIterator[FaultProxy]:
    """Listen on 127.0.0.1; forward each WebSocket connection to ``daemon_url``.

    Frames from the daemon pass through a :class:`FaultyTransport`, so drops, delays,
    duplicates, reordering and stalls happen on the real socket path.
    """
    # trio-websocket (a test dependency: ``exec-runtime[test]``) is the proxy's own
    # WebSocket implementation, independent of the ends it sits between.
    import trio_websocket

    controller = FaultController(plan or FaultPlan())

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        if controller.partitioned:
            controller.refused += 1
            await request.reject(503, body=b"fault: network partitioned")
            return
        offered = request.proposed_subprotocols
        async with trio.open_nursery() as nursery:
            upstream_ws = await trio_websocket.connect_websocket_url(
                nursery,
                daemon_url,
                subprotocols=list(offered) or None,
                max_message_size=CLIENT_MAX_MESSAGE_BYTES,
            )
            client_ws = await request.accept(subprotocol=upstream_ws.subprotocol)
            codec = wire.codec_for_subprotocol(upstream_ws.subprotocol)
            upstream = FaultyTransport(
                WebSocketTransport(upstream_ws, codec), controller, controller.connections
            )
            controller.connections += 1
            controller.current = upstream
            downstream = WebSocketTransport(client_ws, codec)
            nursery.start_soon(_pipe_down, upstream, downstream, nursery.cancel_scope)
            await _pipe_up(downstream, upstream)
            nursery.cancel_scope.cancel()
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            await client_ws.aclose()
            await upstream_ws.aclose()

    async with trio.open_nursery() as nursery:
        # trio-websocket's default limit (1 MiB) would close the link on any bigger
        # message: the client's own limit instead, so the proxy passes what it accepts.
        serve = functools.partial(
            trio_websocket.serve_websocket, max_message_size=CLIENT_MAX_MESSAGE_BYTES
        )
        server = await nursery.start(serve, handler, "127.0.0.1", 0, None)
        yield FaultProxy(f"ws://127.0.0.1:{server.port}", controller)
        controller.resume()
        nursery.cancel_scope.cancel()


def _connection_closed() -> type[Exception]:
    import trio_websocket

    return trio_websocket.ConnectionClosed


async def _pipe_up(downstream: WebSocketTransport, upstream: FaultyTransport) -> None:
    try:
        while True:
            data = await downstream.receive_message()
            await upstream.send_message(data if isinstance(data, bytes) else data.encode())
    except TransportClosed:
        pass


async def _pipe_down(
    upstream: FaultyTransport, downstream: WebSocketTransport, scope: trio.CancelScope
) -> None:
    try:
        while True:
            data = await upstream.receive_message()
            await downstream.send_message(data.encode() if isinstance(data, str) else bytes(data))
    except TransportClosed:
        pass
    scope.cancel()
