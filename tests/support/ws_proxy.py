"""A loopback TCP proxy between a client and the daemon, for connection-loss tests.

It forwards raw bytes (so it carries WebSocket frames without understanding them) and
lets a test break things on purpose::

    proxy = WsProxy(daemon_url)
    url = await nursery.start(proxy.run)          # point the client at ``url``
    await proxy.drop()                            # cut every live connection now
    await proxy.drop(after_bytes=10_000)          # ... after 10 kB more daemon→client bytes
    await proxy.drop(after_next_read=True, direction="up")  # ... once the client's next
                                                           # bytes reached the daemon
    await proxy.drop(hold_upstream=True)          # cut the client side, keep the daemon's open
    proxy.refusing = True                         # accept new connections and close them at once
    await proxy.release_held()                    # close the daemon sides kept by hold_upstream

``connections`` counts forwarded connections, ``refused`` the ones turned away, and
``transcripts[i]`` holds every daemon→client byte of forwarded connection ``i``.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

import trio

Direction = Literal["down", "up"]
_NEXT_READ = -1


class _Pipe:
    def __init__(self, index: int, client: trio.SocketStream, upstream: trio.SocketStream) -> None:
        self.index = index
        self.client = client
        self.upstream = upstream
        self.scope = trio.CancelScope()
        self.finished = trio.Event()
        self.budget: dict[Direction, int | None] = {"down": None, "up": None}
        self.hold_upstream = False

    def cut(self) -> None:
        self.scope.cancel()


class WsProxy:
    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        assert parts.hostname is not None and parts.port is not None, target_url
        self.target_host = parts.hostname
        self.target_port = parts.port
        self.url = ""
        self.connections = 0
        self.refused = 0
        self.refusing = False
        self.transcripts: list[bytearray] = []
        self._pipes: list[_Pipe] = []
        self._held: list[trio.SocketStream] = []
        self._connected = trio.Event()

    @property
    def active(self) -> int:
        """Connections being forwarded right now."""
        return len(self._pipes)

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}"
        try:
            task_status.started(self.url)
            await trio.serve_listeners(self._handle, listeners)
        finally:
            with trio.CancelScope(shield=True):
                await self.release_held()

    async def wait_connections(self, count: int) -> None:
        """Until ``connections`` reaches ``count``."""
        while self.connections < count:
            await self._connected.wait()

    async def drop(
        self,
        *,
        after_bytes: int | None = None,
        after_next_read: bool = False,
        direction: Direction = "down",
        hold_upstream: bool = False,
    ) -> int:
        """Cut every live connection and return when they are gone (how many were cut).

        Cut now, or once ``after_bytes`` more bytes were forwarded ``direction`` (a
        frame may be cut in the middle), or, with ``after_next_read``, right after the
        next read in ``direction`` was forwarded whole.

        With ``hold_upstream`` the daemon's side stays open (not forwarded) until
        :meth:`release_held`, so the daemon still sees its session attached.
        """
        pipes = self.arm_drop(
            after_bytes=after_bytes,
            after_next_read=after_next_read,
            direction=direction,
            hold_upstream=hold_upstream,
        )
        for pipe in pipes:
            await pipe.finished.wait()
        return len(pipes)

    def arm_drop(
        self,
        *,
        after_bytes: int | None = None,
        after_next_read: bool = False,
        direction: Direction = "down",
        hold_upstream: bool = False,
    ) -> list[_Pipe]:
        """:meth:`drop` without waiting: returns at once, the cut happens later."""
        pipes = list(self._pipes)
        for pipe in pipes:
            pipe.hold_upstream = hold_upstream
            if after_next_read:
                pipe.budget[direction] = _NEXT_READ
            elif after_bytes is None:
                pipe.cut()
            else:
                pipe.budget[direction] = after_bytes
        return pipes

    async def release_held(self) -> None:
        held, self._held = self._held, []
        for stream in held:
            await stream.aclose()

    async def _handle(self, client: trio.SocketStream) -> None:
        if self.refusing:
            self.refused += 1
            await client.aclose()
            return
        try:
            upstream = await trio.open_tcp_stream(self.target_host, self.target_port)
        except OSError:
            self.refused += 1
            await client.aclose()
            return
        pipe = _Pipe(self.connections, client, upstream)
        self.transcripts.append(bytearray())
        self.connections += 1
        self._pipes.append(pipe)
        connected, self._connected = self._connected, trio.Event()
        connected.set()
        try:
            with pipe.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, pipe, client, upstream, "up")
                    nursery.start_soon(self._pump, pipe, upstream, client, "down")
        finally:
            self._pipes.remove(pipe)
            with trio.CancelScope(shield=True):
                await client.aclose()
                if pipe.hold_upstream:
                    self._held.append(upstream)
                else:
                    await upstream.aclose()
            pipe.finished.set()

    async def _pump(
        self,
        pipe: _Pipe,
        source: trio.SocketStream,
        sink: trio.SocketStream,
        direction: Direction,
    ) -> None:
        transcript = self.transcripts[pipe.index]
        try:
            while True:
                data = await source.receive_some(65536)
                if not data:
                    break
                budget = pipe.budget[direction]
                if budget == _NEXT_READ:
                    pipe.budget[direction] = 0
                elif budget is not None:
                    data = data[:budget]
                    pipe.budget[direction] = budget - len(data)
                if data:
                    await sink.send_all(data)
                    if direction == "down":
                        transcript += data
                if pipe.budget[direction] == 0:
                    break
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        # Either side ending (or a spent budget) ends the whole connection.
        pipe.cut()
