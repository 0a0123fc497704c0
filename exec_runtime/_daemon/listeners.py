"""Accept only while few enough connections are in their handshake.

A connection is *pending* from its accept until its HTTP request head was read and
checked (TLS included), which an unauthenticated peer controls. Past
``max_pending_connections`` the daemon stops accepting, so further connections wait in
the kernel's listen backlog: a burst of real clients just waits its turn, and a flood
of silent sockets cannot take file descriptors and memory beyond the limit (each holds
its place for at most ``handshake_timeout``).
"""

from __future__ import annotations

import logging
import math

import trio

log = logging.getLogger("exec_runtime.server")

WARNING_INTERVAL = 10.0
"""At most one warning this often about holding back accepts."""


class HandshakeSlots:
    """One place per pending connection, shared by every listener of a daemon."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free = trio.Semaphore(limit)
        self._warned_at = -math.inf

    async def take(self) -> None:
        if self._free.value == 0:
            now = trio.current_time()
            if now - self._warned_at >= WARNING_INTERVAL:
                self._warned_at = now
                log.warning(
                    "%d connections are in their handshake: new ones wait in the listen "
                    "backlog until one finishes (--max-pending-connections)",
                    self.limit,
                )
        await self._free.acquire()

    def give_back(self) -> None:
        self._free.release()


class ThrottledListener(trio.abc.Listener[trio.abc.Stream]):
    """``inner``, but each accept first takes a slot. Whoever handles the accepted
    stream gives it back once the handshake is over (or the stream is done)."""

    def __init__(self, inner: trio.abc.Listener[trio.abc.Stream], slots: HandshakeSlots) -> None:
        self.inner = inner
        self._slots = slots

    async def accept(self) -> trio.abc.Stream:
        await self._slots.take()
        try:
            return await self.inner.accept()
        except BaseException:
            self._slots.give_back()
            raise

    async def aclose(self) -> None:
        await self.inner.aclose()
