"""A Trio TCP proxy for loopback benchmarks: a fixed one-way delay, and a cut switch.

Each direction of each connection has a reader that stamps every chunk with
``arrival + delay`` and a writer that forwards chunks in order once their time has come,
so the delay adds latency without limiting throughput and order is preserved per
direction. ``cut()`` closes every live connection on both sides (as a middlebox reset
would); the proxy keeps listening, so a client can reconnect through it.
"""

from __future__ import annotations

import math

import trio


class DelayProxy:
    def __init__(self, upstream_host: str, upstream_port: int, delay: float = 0.0) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.delay = delay
        self.port = 0
        self.connections = 0
        self.cuts = 0
        self._scopes: set[trio.CancelScope] = set()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def run(
        self, *, task_status: trio.TaskStatus[DelayProxy] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self)
        await trio.serve_listeners(self._handle, listeners)

    def cut(self) -> int:
        """Drop every live connection now. Returns how many were dropped."""
        self.cuts += 1
        scopes, self._scopes = self._scopes, set()
        for scope in scopes:
            scope.cancel()
        return len(scopes)

    async def _handle(self, downstream: trio.SocketStream) -> None:
        self.connections += 1
        scope = trio.CancelScope()
        self._scopes.add(scope)
        try:
            with scope:
                try:
                    upstream = await trio.open_tcp_stream(self.upstream_host, self.upstream_port)
                except OSError:
                    return  # upstream down: drop the client, keep serving
                async with upstream, trio.open_nursery() as nursery:
                    nursery.start_soon(self._direction, downstream, upstream, scope)
                    nursery.start_soon(self._direction, upstream, downstream, scope)
        finally:
            self._scopes.discard(scope)
            await trio.aclose_forcefully(downstream)

    async def _direction(
        self, source: trio.SocketStream, sink: trio.SocketStream, scope: trio.CancelScope
    ) -> None:
        """Forward ``source`` to ``sink``; end the whole connection when either side ends."""
        try:
            if self.delay <= 0:
                while data := await source.receive_some(256 * 1024):
                    await sink.send_all(data)
            else:
                await self._delayed(source, sink)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            scope.cancel()

    async def _delayed(self, source: trio.SocketStream, sink: trio.SocketStream) -> None:
        send, receive = trio.open_memory_channel[tuple[float, bytes]](math.inf)

        async def forward() -> None:
            async for due, data in receive:
                await trio.sleep_until(due)
                if not data:
                    return
                await sink.send_all(data)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(forward)
            while True:
                data = await source.receive_some(256 * 1024)
                send.send_nowait((trio.current_time() + self.delay, data))
                if not data:
                    break
