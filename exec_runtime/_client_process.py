"""The client's view of one process: reorder, a bounded consumer queue, lag catch-up.

Two cursors: the reorder buffer's ``last_published_seq`` (what the network delivered
in order) and ``queued_seq`` (what went into the consumer's queue). The reader task
only ever appends to the queue when it has room; otherwise the process is *lagging*,
and the consumer itself catches up with ``process/read`` from ``queued_seq``.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Final

import trio

from ._core.events import Closed, Event, Exited, Failed, Output, SeqEvent
from ._core.recovery import GapLost, events_after
from ._core.reorder import ReorderBuffer, ReorderOverflow
from ._errors import ExecRuntimeError, ProcessFailed, ProtocolError

if TYPE_CHECKING:
    from ._client import ExecClient

QUEUE_MAX_EVENTS: Final = 1024
QUEUE_MAX_BYTES: Final = 4 << 20


class StdinClosedError(ExecRuntimeError):
    """The process's stdin is closed (or was never a pipe)."""


class ProcessStream:
    """Everything the client tracks for one process id."""

    def __init__(self, process_id: str) -> None:
        self.process_id = process_id
        self.reorder = ReorderBuffer()
        self.started = False
        self.exit_event: Exited | None = None
        self.legacy_exit: Exited | None = None
        """A pushed exit without ``sandboxDenied``, held back until a read completes it."""
        self.closed_event: Closed | None = None
        self.failure: Failed | None = None
        # The process finished, but the consumer fell behind what the daemon retains:
        # only the events() stream fails (wait() still has the exit code).
        self.consumer_failure: Failed | None = None
        self.done = trio.Event()  # set on Closed or Failed: the exit code is known or never
        self._queue: deque[Event] = deque()
        self._queue_bytes = 0
        self.queued_seq = 0
        self.unacked_bytes = 0  # arrived since the last process/ack
        self.unacked_events = 0
        self.lagging = False
        self._queue_changed = trio.Event()
        self.consumed = False
        self.consumer_active = False  # an events() iteration is in progress
        self.acked_seq = 0  # the last seq acknowledged to the daemon

    # --- called by the reader task (never blocks) --------------------------------------

    def push_many(self, events: list[SeqEvent]) -> list[SeqEvent]:
        """Insert pushed or recovered events; return what became contiguous.

        Raises ReorderOverflow when too much is pending past a gap.
        """
        if self.failure is not None:
            return []
        try:
            published = self.reorder.push_many(events)
        except ReorderOverflow as exc:
            self._publish(exc.published)
            raise
        self._publish(published)
        return published

    def _publish(self, events: list[SeqEvent]) -> None:
        for event in events:
            if isinstance(event, Exited):
                self.exit_event = event
            elif isinstance(event, Closed):
                self.closed_event = event
            self._enqueue(event)
        if self.closed_event is not None:
            self.done.set()  # the exit code is known; a lagging consumer catches up alone

    def _enqueue(self, event: SeqEvent) -> None:
        if event.seq <= self.queued_seq:
            return
        size = len(event.data) if isinstance(event, Output) else 0
        room = (
            len(self._queue) < QUEUE_MAX_EVENTS and self._queue_bytes + size <= QUEUE_MAX_BYTES
        )
        if self.lagging or event.seq != self.queued_seq + 1 or not room:
            self.lagging = True
        else:
            self._queue.append(event)
            self._queue_bytes += size
            self.queued_seq = event.seq
        self._wake()

    def fail(self, message: str) -> None:
        if self.failure is not None or self.closed_event is not None:
            return
        self.failure = Failed(message)
        self.done.set()
        self._wake()

    def fail_consumer(self, message: str) -> None:
        if self.consumer_failure is None:
            self.consumer_failure = Failed(message)
            self.lagging = False
            self._wake()

    def _wake(self) -> None:
        changed, self._queue_changed = self._queue_changed, trio.Event()
        changed.set()

    @property
    def ackable_seq(self) -> int:
        """What the daemon may forget: all that arrived, except what a consumer that
        fell behind its queue has not taken yet (it reads that back from the daemon,
        so the daemon must hold it, and pauses the process once its window is full)."""
        if self.lagging and self.consumer_active:
            return self.queued_seq
        return self.reorder.last_published_seq

    # --- called by the consumer ----------------------------------------------------

    def accept_caught_up(self, events: list[SeqEvent]) -> None:
        """Queue events a catch-up read rebuilt; leave lag once level with the network."""
        for event in events:
            if isinstance(event, Exited) and self.exit_event is None:
                self.exit_event = event  # rebuilt by the read: later catch-ups need its seq
            if event.seq == self.queued_seq + 1:
                self._queue.append(event)
                self._queue_bytes += len(event.data) if isinstance(event, Output) else 0
                self.queued_seq = event.seq
        if self.queued_seq >= self.reorder.last_published_seq:
            self.lagging = False

    async def next_event(self, catch_up: Callable[[], Awaitable[None]]) -> Event:
        while True:
            if self._queue:
                event = self._queue.popleft()
                if isinstance(event, Output):
                    self._queue_bytes -= len(event.data)
                return event
            if self.failure is not None:
                return self.failure
            if self.consumer_failure is not None:
                return self.consumer_failure
            if self.lagging:
                await catch_up()
                continue
            await self._queue_changed.wait()


class ProcessHandle:
    """A started process. Iterate :meth:`events` for its output; :meth:`wait` for the code.

    Events come in seq order, each once: ``Output`` …, ``Exited``, more ``Output`` if a
    grandchild held the pipe, then ``Closed``; or a terminal ``Failed``.
    """

    def __init__(self, client: ExecClient, stream: ProcessStream) -> None:
        self._client = client
        self._stream = stream
        self.process_id = stream.process_id

    def __repr__(self) -> str:
        return f"<ProcessHandle {self.process_id!r}>"

    async def events(self) -> AsyncIterator[Event]:
        """Yield every event once, in seq order; ends after ``Closed`` or ``Failed``.

        One consumer per process. If it falls behind the bounded buffer, the client
        fetches what it missed with ``process/read`` (no loss while retained).
        """
        stream = self._stream
        if stream.consumed:
            raise RuntimeError(f"events() of process {self.process_id} is already consumed")
        stream.consumed = True
        stream.consumer_active = True
        try:
            while True:
                event = await stream.next_event(self._catch_up)
                yield event
                if isinstance(event, Closed | Failed):
                    return
        finally:
            stream.consumer_active = False
            if stream.lagging:  # what it held back is nobody's to read now
                self._client._ack_consumed(stream)

    async def _catch_up(self) -> None:
        stream = self._stream
        try:
            result = await self._client._read(self.process_id, stream.queued_seq)
        except ProtocolError as exc:
            # The daemon no longer knows the process (its closed TTL passed, or the
            # session ended): what this consumer missed is gone.
            await self._lost_what_it_missed(exc.message)
            return
        known_exit = stream.exit_event.seq if stream.exit_event is not None else None
        try:
            events = events_after(stream.queued_seq, result, known_exit)
        except GapLost as exc:
            await self._lost_what_it_missed(str(exc))
            return
        stream.accept_caught_up(events)
        self._client._ack_consumed(stream)  # the daemon may be paused, waiting for it

    async def _lost_what_it_missed(self, reason: str) -> None:
        message = f"process {self.process_id}: {reason}"
        if self._stream.closed_event is None:
            await self._client._fail_process(self._stream, message)
        else:
            # Finished (the exit code is known): nothing to terminate, but this
            # consumer cannot get the events it missed.
            self._client._fail_consumer(self._stream, message)

    async def wait(self) -> int:
        """The exit code (128+N for signal N), once the process is closed."""
        await self._stream.done.wait()
        if self._stream.failure is not None:
            raise ProcessFailed(self._stream.failure.message)
        assert self._stream.exit_event is not None
        return self._stream.exit_event.exit_code

    @property
    def returncode(self) -> int | None:
        event = self._stream.exit_event
        return None if event is None else event.exit_code

    async def write(self, data: bytes) -> None:
        await self._write(data, close=False)

    async def close_stdin(self) -> None:
        await self._write(b"", close=True)

    async def _write(self, data: bytes, close: bool) -> None:
        status = await self._client._write(self.process_id, data, uuid.uuid4().hex, close)
        if status == "stdinClosed":
            raise StdinClosedError(f"stdin of process {self.process_id} is closed")
        if status != "accepted":
            raise ExecRuntimeError(f"write to process {self.process_id}: {status}")

    async def signal(self, signal: str) -> None:
        """``interrupt``, ``terminate``, ``kill`` or ``hangup``, sent to the process group."""
        await self._client._signal(self.process_id, signal)

    async def terminate(self) -> bool:
        """SIGKILL the process group. Returns whether it was still running."""
        return await self._client._terminate(self.process_id)

    async def resize(self, rows: int, cols: int) -> None:
        await self._client._resize(self.process_id, rows, cols)


__all__ = ["ProcessHandle", "ProcessStream", "StdinClosedError"]
