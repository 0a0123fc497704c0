"""Fault injection on the client's side of a message transport.

A :class:`FaultyTransport` wraps any :class:`MessageTransport` (an in-memory pair or a
proxied WebSocket) and, under a seeded :class:`FaultPlan`, drops the connection,
delays, duplicates or reorders notifications, and stalls delivery. It counts frames
per method, so a test can assert e.g. that no ``process/read`` was sent.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

import attrs
import msgspec
import trio

import protocol_schema as wire

from .._client.client import Connector
from .._wire.transport import Frame, MessageTransport, TransportClosed, joined

CLOSE_TIMEOUT = 1.0
"""How long closing the wrapped transport may take after a drop."""


class _Ident(msgspec.Struct, rename="camel"):
    process_id: str | None = None
    seq: int | None = None


@attrs.frozen
class Delivered:
    """One notification as the client received it (after the faults)."""

    method: str
    process_id: str | None
    seq: int | None


@attrs.frozen(kw_only=True)
class FaultPlan:
    """What to break, reproducibly. Print it (``repr``) to replay a failure."""

    seed: int = 0
    drop_after_frames: int | None = None
    """Drop a connection after this many frames (both directions)."""
    drop_at_method: str | None = None
    """Drop a connection when a frame of this method passes (before delivering it)."""
    max_drops: int = 1
    """How many connections the drop rules apply to; later ones run clean."""
    delay: tuple[float, float] = (0.0, 0.0)
    """A uniform random delay before each frame is delivered to the client."""
    duplicate: float = 0.0
    """Probability that a notification is delivered twice."""
    reorder_window: int = 0
    """Hold up to this many notifications and release them in a random order."""
    gather_responses: tuple[str, int] | None = None
    """``(method, n)``: hold the responses to ``method`` until ``n`` are held, then
    deliver them together (a client that waits for one answer before it sends the
    next request never gets one)."""


class FaultController:
    """The test's handle on the current connection: drop it, stall it, read counters."""

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan
        self.counts: Counter[str] = Counter()
        """Frames per method, both directions; responses count as ``response:<method>``."""
        self.connections = 0
        self.drops = 0
        self.refused = 0
        """Connection attempts refused while partitioned."""
        self.current: FaultyTransport | None = None
        self.delivered: list[Delivered] = []
        """Every notification delivered to the client, in delivery order (duplicates too)."""
        self.partitioned = False
        self._resumed = trio.Event()
        self._resumed.set()

    def drop(self) -> None:
        """Cut the current connection now (the client sees a transport loss)."""
        if self.current is not None:
            self.current.drop()

    def partition(self) -> None:
        """Cut the current connection and refuse new ones until :meth:`heal`.

        The daemon sees a detached session for as long as this lasts: processes run on,
        output is only retained (and may be evicted), an exit is only recorded.
        """
        self.partitioned = True
        self.drop()

    def heal(self) -> None:
        self.partitioned = False

    def stall(self) -> None:
        """Stop delivering frames to the client (a stuck reader) until :meth:`resume`."""
        if self._resumed.is_set():
            self._resumed = trio.Event()

    def resume(self) -> None:
        self._resumed.set()

    @property
    def stalled(self) -> bool:
        return not self._resumed.is_set()

    async def wait_resumed(self) -> None:
        await self._resumed.wait()

    @property
    def reads(self) -> int:
        return self.counts["process/read"]


class FaultyTransport:
    def __init__(
        self, inner: MessageTransport, controller: FaultController, index: int
    ) -> None:
        self.inner = inner
        self.codec = inner.codec
        self._controller = controller
        self._plan = controller.plan
        self._rng = random.Random(f"{self._plan.seed}:{index}")
        self._faulty = controller.drops < self._plan.max_drops
        self._frames = 0
        self._method_of_id: dict[Any, str] = {}
        self._ready: list[bytes | bytearray | str] = []
        self._held: list[bytes | bytearray | str] = []
        self._gathered: list[bytes | bytearray | str] = []
        self._dropped = False
        self._receive_scope: trio.CancelScope | None = None

    def drop(self) -> None:
        """Mark the connection lost and wake the receiving task, which closes it."""
        if not self._dropped:
            self._dropped = True
            self._controller.drops += 1
            if self._receive_scope is not None:
                self._receive_scope.cancel()

    async def _close_inner(self) -> None:
        # Closing our end makes both sides see the loss, like a reset socket. Shielded
        # (it runs while the caller is being cancelled) but bounded: a WebSocket close
        # waits for the peer's close frame, which never comes if the peer's reader
        # task is already gone.
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            scope.shield = True
            try:
                await self.inner.aclose()
            except Exception:
                pass

    def _classify(self, data: bytes | bytearray | str, outgoing: bool) -> tuple[str, bool]:
        """(method name for counting, is-notification)."""
        try:
            message = self.codec.decode_message(data)
        except wire.MalformedMessage:
            return "malformed", False
        if message.method is not None:
            if outgoing and message.id is not msgspec.UNSET:
                self._method_of_id[message.id] = message.method
            return message.method, message.id is msgspec.UNSET
        return "response:" + self._method_of_id.pop(message.id, "?"), False

    def _record_delivery(self, data: bytes | bytearray | str) -> None:
        try:
            message = self.codec.decode_message(data)
        except wire.MalformedMessage:
            return
        if message.method is None or message.id is not msgspec.UNSET:
            return
        try:
            ident = self.codec.decode(message.params, _Ident)
        except Exception:
            ident = _Ident()
        self._controller.delivered.append(Delivered(message.method, ident.process_id, ident.seq))

    def _should_drop(self, method: str) -> bool:
        self._frames += 1
        if not self._faulty or self._dropped:
            return self._dropped
        plan = self._plan
        if plan.drop_after_frames is not None and self._frames > plan.drop_after_frames:
            return True
        return plan.drop_at_method is not None and method in (
            plan.drop_at_method,
            "response:" + plan.drop_at_method,
        )

    async def send_message(self, data: bytes) -> None:
        method, _ = self._classify(data, outgoing=True)
        self._controller.counts[method] += 1
        if self._should_drop(method):
            self.drop()
            await self._close_inner()
            raise TransportClosed("fault: connection dropped")
        await self.inner.send_message(data)

    async def send_messages(self, messages: Sequence[Frame]) -> None:
        for message in messages:
            await self.send_message(joined(message))

    async def receive_message(self) -> bytes | bytearray | str:
        while True:
            if self._dropped:
                await self._close_inner()
                raise TransportClosed("fault: connection dropped")
            with trio.CancelScope() as self._receive_scope:
                await self._controller.wait_resumed()
                if self._ready:
                    data = self._ready.pop(0)
                    low, high = self._plan.delay
                    if high > 0:
                        await trio.sleep(self._rng.uniform(low, high))
                    self._record_delivery(data)
                    return data
                await self._pull()

    async def _pull(self) -> None:
        if self._held:
            # Held notifications must not wait forever for a window to fill.
            with trio.move_on_after(0.005) as scope:
                data = await self.inner.receive_message()
            if scope.cancelled_caught:
                self._release_held()
                return
        else:
            data = await self.inner.receive_message()
        method, is_notification = self._classify(data, outgoing=False)
        self._controller.counts[method] += 1
        if self._should_drop(method):
            self.drop()
            return
        copies = 2 if is_notification and self._rng.random() < self._plan.duplicate else 1
        gather = self._plan.gather_responses
        if gather is not None and method == "response:" + gather[0]:
            self._gathered.append(data)
            if len(self._gathered) >= gather[1]:
                self._ready.extend(self._gathered)
                self._gathered.clear()
            return
        if is_notification and self._plan.reorder_window > 0:
            self._held.extend([data] * copies)
            if len(self._held) >= self._plan.reorder_window:
                self._release_held()
        else:
            self._release_held()
            self._ready.extend([data] * copies)

    def _release_held(self) -> None:
        self._rng.shuffle(self._held)
        self._ready.extend(self._held)
        self._held.clear()

    async def aclose(self) -> None:
        self._dropped = True
        await self.inner.aclose()


class FaultyConnector:
    """Wraps a connector so every connection it opens runs through the fault plan."""

    def __init__(self, inner: Connector, controller: FaultController) -> None:
        self.inner = inner
        self.controller = controller

    async def connect(self, nursery: trio.Nursery) -> MessageTransport:
        if self.controller.partitioned:
            self.controller.refused += 1
            raise TransportClosed("fault: network partitioned")
        transport = FaultyTransport(
            await self.inner.connect(nursery), self.controller, self.controller.connections
        )
        self.controller.connections += 1
        self.controller.current = transport
        return transport
